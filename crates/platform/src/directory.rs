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
