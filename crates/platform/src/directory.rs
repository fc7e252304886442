//! The one synchronous question auth asks CDX: "are these superadmin credentials valid?"
//!
//! Superadmins live in the cdx database and tenant users in the auth database; no service
//! reads another's database (rule 1). Auth depends on this trait only. In the all-in-one
//! topology CDX answers it in-process; in the distributed topology an authenticated HTTP
//! client implements it against CDX's internal endpoint.

use async_trait::async_trait;
use secrecy::SecretString;

use crate::error::ApiError;
use crate::events::Actor;

/// A platform administrator as auth needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    /// Admin id (the token subject).
    pub id: String,
    /// Login name.
    pub username: String,
}

/// Verifies superadmin credentials.
#[async_trait]
pub trait AdminDirectory: Send + Sync {
    /// `Some` when `username` names an active superadmin whose password is `password`.
    /// Unknown names cost the same time as wrong passwords.
    async fn verify_admin(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Option<AdminIdentity>, ApiError>;

    /// The active superadmin with this id, if any (for `/me` and token refresh).
    async fn admin_by_id(&self, id: &str) -> Result<Option<AdminIdentity>, ApiError>;

    /// Changes an active superadmin's password after checking the current one; `false` when
    /// the current password is wrong. The new one must meet the password policy (422).
    async fn change_admin_password(
        &self,
        id: &str,
        current: &SecretString,
        new: &SecretString,
        actor: &Actor,
    ) -> Result<bool, ApiError>;
}

/// `POST /internal/cdx/admins/verify`: checks superadmin credentials for auth.
pub const VERIFY_ADMIN_PATH: &str = "/internal/cdx/admins/verify";
/// `GET /internal/cdx/admins/{id}`: an active superadmin, for auth.
pub const ADMIN_PATH: &str = "/internal/cdx/admins";

/// Body of [`VERIFY_ADMIN_PATH`].
#[derive(Debug, serde::Deserialize)]
pub struct VerifyAdmin {
    /// Login name.
    pub username: String,
    /// The password to check.
    pub password: SecretString,
}

/// Body of `POST /internal/cdx/admins/{id}/password`.
#[derive(Debug, serde::Deserialize)]
pub struct ChangeAdminPassword {
    /// The current password.
    pub current: SecretString,
    /// The new password.
    pub new: SecretString,
    /// Who asks, for the audit trail.
    pub actor: Actor,
}

/// Answer of the internal admin endpoints: the admin, or `null` when there is none (or
/// the credentials are wrong).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AdminAnswer {
    /// The admin, if any.
    pub admin: Option<AdminWire>,
}

/// [`AdminIdentity`] on the wire.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AdminWire {
    /// Admin id.
    pub id: String,
    /// Login name.
    pub username: String,
}

impl From<AdminIdentity> for AdminWire {
    fn from(a: AdminIdentity) -> Self {
        AdminWire {
            id: a.id,
            username: a.username,
        }
    }
}

impl From<AdminWire> for AdminIdentity {
    fn from(a: AdminWire) -> Self {
        AdminIdentity {
            id: a.id,
            username: a.username,
        }
    }
}

/// Answer of the password change endpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PasswordChanged {
    /// `false` when the current password was wrong.
    pub changed: bool,
}

/// The superadmin directory of a CDX in another process, asked over HTTP with this
/// process's service token (the distributed topology).
#[derive(Debug, Clone)]
pub struct RemoteAdmins {
    cdx: crate::remote::ServiceClient,
}

impl RemoteAdmins {
    /// The directory behind `cdx`.
    pub fn new(cdx: crate::remote::ServiceClient) -> Self {
        RemoteAdmins { cdx }
    }
}

#[async_trait]
impl AdminDirectory for RemoteAdmins {
    async fn verify_admin(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Option<AdminIdentity>, ApiError> {
        use secrecy::ExposeSecret;
        let body =
            serde_json::json!({ "username": username, "password": password.expose_secret() });
        let answer: AdminAnswer = self.cdx.post(VERIFY_ADMIN_PATH, &body).await?;
        Ok(answer.admin.map(Into::into))
    }

    async fn admin_by_id(&self, id: &str) -> Result<Option<AdminIdentity>, ApiError> {
        if !crate::ids::is_uuid(id) {
            return Ok(None);
        }
        let answer: AdminAnswer = self.cdx.get(&format!("{ADMIN_PATH}/{id}")).await?;
        Ok(answer.admin.map(Into::into))
    }

    async fn change_admin_password(
        &self,
        id: &str,
        current: &SecretString,
        new: &SecretString,
        actor: &Actor,
    ) -> Result<bool, ApiError> {
        use secrecy::ExposeSecret;
        if !crate::ids::is_uuid(id) {
            return Ok(false);
        }
        let body = serde_json::json!({
            "current": current.expose_secret(),
            "new": new.expose_secret(),
            "actor": actor,
        });
        let answer: PasswordChanged = self
            .cdx
            .post(&format!("{ADMIN_PATH}/{id}/password"), &body)
            .await?;
        Ok(answer.changed)
    }
}
