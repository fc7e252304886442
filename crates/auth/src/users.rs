//! User management inside a tenant, password changes and the caller's own sessions.

use platform::caller::{Caller, TenantScope};
use platform::events::{record, Actor, Event};
use platform::ids::{is_uuid, new_id, Timestamp};
use platform::ApiError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::events::{PASSWORD_CHANGED, USER_CREATED, USER_DELETED, USER_UPDATED};
use crate::login::revoke_in;
use crate::model::{parse_name, Email, NewPassword, UserRole, UserStatus};
use crate::store::{self, Revoke, SessionRow, UserRow};
use crate::Auth;

/// A validated new user.
#[derive(Debug)]
pub struct NewUser {
    /// Email, unique in the tenant.
    pub email: Email,
    /// Password meeting the policy.
    pub password: NewPassword,
    /// Role.
    pub role: UserRole,
    /// Display name.
    pub name: Option<String>,
}

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// User id.
    pub id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role in the tenant.
    pub role: UserRole,
    /// Whether the user may log in.
    pub status: UserStatus,
    /// Creation time.
    pub created_at: platform::ids::Timestamp,
    /// Last change.
    pub updated_at: platform::ids::Timestamp,
    /// Version for `If-Match`.
    pub version: i64,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        UserView {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email,
            name: u.name,
            role: u.role,
            status: u.status,
            created_at: u.created_at,
            updated_at: u.updated_at,
            version: u.version,
        }
    }
}

/// Changes to a user (`PATCH /api/auth/users/{id}`); absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    /// New display name (empty clears it).
    pub name: Option<String>,
    /// New role.
    pub role: Option<UserRole>,
    /// New status; disabling revokes the user's sessions.
    pub status: Option<UserStatus>,
    /// A new password set by an admin; revokes the user's sessions.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// Expected current version (alternative to `If-Match`).
    pub version: Option<i64>,
}

pub(crate) async fn create(
    auth: &Auth,
    scope: &TenantScope,
    new: NewUser,
    actor: &Actor,
) -> Result<UserView, ApiError> {
    let hash = auth
        .0
        .hashing
        .hash(new.password.secret())
        .await
        .map_err(|e| ApiError::internal("hashing", e))?;
    let user = user_row(scope, &new.email, new.name, new.role, hash);
    let mut tx = auth.0.db.begin().await?;
    insert_created(&mut tx, scope, &user, actor).await?;
    tx.commit().await?;
    auth.announce_now().await;
    Ok(user.into())
}

/// A new active user of the scope's tenant, with its password hash.
pub(crate) fn user_row(
    scope: &TenantScope,
    email: &Email,
    name: Option<String>,
    role: UserRole,
    password_hash: String,
) -> UserRow {
    let now = Timestamp::now();
    UserRow {
        tenant_id: scope.tenant_id().to_string(),
        id: new_id(),
        email: email.as_str().to_string(),
        name,
        password_hash,
        role,
        status: UserStatus::Active,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// Inserts `user` and records `auth.user.created`, in the caller's transaction.
pub(crate) async fn insert_created(
    tx: &mut sqlx::AnyConnection,
    scope: &TenantScope,
    user: &UserRow,
    actor: &Actor,
) -> Result<(), ApiError> {
    store::insert_user(tx, scope, user)
        .await
        .map_err(platform::error::on_unique(
            "email_taken",
            "a user with this email already exists in the tenant",
        ))?;
    let event = Event::new(
        "auth",
        USER_CREATED,
        Some(scope.tenant_id()),
        &user.id,
        actor,
        json!({ "email": user.email, "role": user.role, "status": user.status.as_str() }),
    );
    record(tx, &event).await?;
    Ok(())
}

/// `POST /api/auth/setup-password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupPassword {
    /// The one-time setup token given when the tenant was created.
    pub token: String,
    /// The password to set (the policy applies).
    #[schema(value_type = String)]
    pub password: SecretString,
}

impl Auth {
    /// Creates a user in the scope's tenant (which must be active).
    pub async fn create_user(
        &self,
        scope: &TenantScope,
        new: NewUser,
        actor: &Actor,
    ) -> Result<UserView, ApiError> {
        match self.tenants().resolve(scope.tenant_id()).await? {
            Some(t) if t.status == platform::tenants::TenantStatus::Active => {
                create(self, scope, new, actor).await
            }
            Some(_) => Err(ApiError::conflict(
                "tenant_suspended",
                "the tenant is suspended",
            )),
            None => Err(ApiError::not_found("tenant")),
        }
    }

    /// One user of the scope's tenant.
    pub async fn user(&self, scope: &TenantScope, id: &str) -> Result<UserView, ApiError> {
        if !is_uuid(id) {
            return Err(ApiError::not_found("user"));
        }
        store::get_user(self.0.db.reader(), scope, id)
            .await?
            .map(UserView::from)
            .ok_or_else(|| ApiError::not_found("user"))
    }

    /// A page of the scope's users.
    pub async fn users(
        &self,
        scope: &TenantScope,
        filter: &store::UserFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserView>, ApiError> {
        Ok(
            store::list_users(self.0.db.reader(), scope, filter, after, limit)
                .await?
                .into_iter()
                .map(UserView::from)
                .collect(),
        )
    }

    /// Applies `changes` to a user; `expected` is the version from `If-Match` or the body.
    pub async fn update_user(
        &self,
        scope: &TenantScope,
        id: &str,
        changes: UserChanges,
        expected: Option<i64>,
        caller: &Caller,
    ) -> Result<UserView, ApiError> {
        let current = self.user_row(scope, id).await?;
        if let Some(expected) = expected {
            if expected != current.version {
                return Err(ApiError::stale(current.version));
            }
        }
        let is_self = caller.id() == current.id;
        if is_self
            && (changes.role.is_some_and(|r| r != current.role)
                || changes.status == Some(UserStatus::Disabled))
        {
            return Err(ApiError::conflict(
                "cannot_modify_self",
                "you cannot change your own role or disable yourself",
            ));
        }
        let mut next = current.clone();
        let mut changed = Vec::new();
        if let Some(name) = &changes.name {
            next.name = parse_name(Some(name))?;
            if next.name != current.name {
                changed.push("name");
            }
        }
        if let Some(role) = changes.role.filter(|r| *r != current.role) {
            next.role = role;
            changed.push("role");
        }
        if let Some(status) = changes.status.filter(|s| *s != current.status) {
            next.status = status;
            changed.push("status");
        }
        if let Some(password) = &changes.password {
            let password = NewPassword::parse("password", password)?;
            next.password_hash = self
                .0
                .hashing
                .hash(password.secret())
                .await
                .map_err(|e| ApiError::internal("hashing", e))?;
            changed.push("password");
        }
        if changed.is_empty() {
            return Ok(current.into());
        }
        next.version = current.version + 1;
        next.updated_at = Timestamp::now();
        let actor = caller.actor();
        let mut tx = self.0.db.begin().await?;
        if !store::update_user(&mut tx, scope, &next).await? {
            let version = store::get_user(&mut *tx, scope, id)
                .await?
                .map(|u| u.version)
                .unwrap_or(current.version);
            return Err(ApiError::stale(version));
        }
        record(
            &mut tx,
            &Event::new(
                "auth",
                USER_UPDATED,
                Some(scope.tenant_id()),
                id,
                &actor,
                json!({ "changed": changed, "status": next.status.as_str() }),
            ),
        )
        .await?;
        // A role change, a disabled account or a reset password ends the user's sessions so
        // that no token keeps the old rights.
        let end_sessions = changed
            .iter()
            .any(|c| matches!(*c, "role" | "status" | "password"));
        let revoked = if end_sessions {
            revoke_in(
                &mut tx,
                Revoke::Subject { id, except: None },
                "user_changed",
                &actor,
                Some(scope.tenant_id()),
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.0.outbox.notify();
        self.forget_sessions(&revoked);
        Ok(next.into())
    }

    /// Deletes a user and ends their sessions.
    pub async fn delete_user(
        &self,
        scope: &TenantScope,
        id: &str,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        let user = self.user_row(scope, id).await?;
        if caller.id() == user.id {
            return Err(ApiError::conflict(
                "cannot_modify_self",
                "you cannot delete yourself",
            ));
        }
        let mut tx = self.0.db.begin().await?;
        if !store::delete_user(&mut tx, scope, id).await? {
            return Err(ApiError::not_found("user"));
        }
        let revoked = revoke_in(
            &mut tx,
            Revoke::Subject { id, except: None },
            "user_deleted",
            &caller.actor(),
            Some(scope.tenant_id()),
        )
        .await?;
        record(
            &mut tx,
            &Event::new(
                "auth",
                USER_DELETED,
                Some(scope.tenant_id()),
                id,
                &caller.actor(),
                json!({ "email": user.email, "status": user.status.as_str() }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.announce_now().await;
        self.forget_sessions(&revoked);
        Ok(())
    }

    async fn user_row(&self, scope: &TenantScope, id: &str) -> Result<UserRow, ApiError> {
        if !is_uuid(id) {
            return Err(ApiError::not_found("user"));
        }
        store::get_user(self.0.db.reader(), scope, id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))
    }

    /// Changes the caller's own password; the caller's other sessions are revoked.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<(), ApiError> {
        let wrong = || {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "wrong_password",
                "the current password is wrong",
            )
        };
        let Some(tenant_id) = &caller.claims.tid else {
            // Superadmin credentials live in CDX; it checks and stores them.
            if !self
                .0
                .admins
                .change_admin_password(caller.id(), current, new, &caller.actor())
                .await?
            {
                return Err(wrong());
            }
            let except = Some(caller.session_id());
            self.revoke(
                Revoke::Subject {
                    id: caller.id(),
                    except,
                },
                "password_changed",
                &caller.actor(),
                None,
            )
            .await?;
            return Ok(());
        };
        let scope = TenantScope::for_system_task(tenant_id);
        let user = self.user_row(&scope, caller.id()).await?;
        let verified = self
            .0
            .hashing
            .verify(current, Some(&user.password_hash))
            .await
            .map_err(|e| ApiError::internal("hashing", e))?;
        if !verified.ok() {
            return Err(wrong());
        }
        let new = NewPassword::parse("new_password", new)?;
        let mut next = user.clone();
        next.password_hash = self
            .0
            .hashing
            .hash(new.secret())
            .await
            .map_err(|e| ApiError::internal("hashing", e))?;
        next.version += 1;
        next.updated_at = Timestamp::now();
        let mut tx = self.0.db.begin().await?;
        if !store::update_user(&mut tx, &scope, &next).await? {
            return Err(ApiError::stale(user.version + 1));
        }
        let revoked = revoke_in(
            &mut tx,
            Revoke::Subject {
                id: &user.id,
                except: Some(caller.session_id()),
            },
            "password_changed",
            &caller.actor(),
            Some(tenant_id),
        )
        .await?;
        record(
            &mut tx,
            &Event::new(
                "auth",
                PASSWORD_CHANGED,
                Some(tenant_id),
                &user.id,
                &caller.actor(),
                json!({ "revoked_sessions": revoked.len() }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.announce_now().await;
        self.forget_sessions(&revoked);
        Ok(())
    }

    /// Activates an account provisioned with a setup token (a new tenant's first admin):
    /// sets its password; the token then no longer works.
    pub async fn setup_password(
        &self,
        body: &SetupPassword,
        meta: &platform::caller::RequestMeta,
    ) -> Result<(), ApiError> {
        let invalid = || {
            ApiError::bad_request(
                "invalid_setup_token",
                "the setup token is invalid, used or expired",
            )
        };
        if body.token.is_empty() || body.token.len() > 128 {
            return Err(invalid());
        }
        let token_hash = platform::tenants::setup_token_hash(&body.token);
        let now = Timestamp::now();
        // Checked before hashing, so that guessing tokens costs no hashing.
        if !store::setup_token_usable(self.0.db.reader(), &token_hash, now).await? {
            return Err(invalid());
        }
        let new = NewPassword::parse("password", &body.password)?;
        let hash = self
            .0
            .hashing
            .hash(new.secret())
            .await
            .map_err(|e| ApiError::internal("hashing", e))?;
        let mut tx = self.0.db.begin().await?;
        let Some((tenant_id, user_id)) = store::take_setup_token(&mut tx, &token_hash, now).await?
        else {
            return Err(invalid());
        };
        let scope = TenantScope::for_system_task(&tenant_id);
        store::set_password_hash(&mut tx, &scope, &user_id, &hash).await?;
        let actor = Actor {
            id: Some(user_id.clone()),
            role: UserRole::Admin.role().as_str().to_string(),
            name: None,
            request_id: meta.request_id.clone(),
            ip: meta.ip.clone(),
        };
        record(
            &mut tx,
            &Event::new(
                "auth",
                PASSWORD_CHANGED,
                Some(&tenant_id),
                &user_id,
                &actor,
                json!({ "setup": true }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.0.outbox.notify();
        Ok(())
    }

    /// The caller's active sessions, newest first.
    pub async fn my_sessions(&self, caller: &Caller) -> Result<Vec<SessionRow>, ApiError> {
        Ok(store::active_sessions_of(self.0.db.reader(), caller.id(), Timestamp::now()).await?)
    }

    /// Ends one of the caller's own sessions.
    pub async fn end_my_session(&self, caller: &Caller, sid: &str) -> Result<(), ApiError> {
        let session = store::get_session(self.0.db.reader(), sid).await?;
        match session {
            Some(s) if s.subject_id == caller.id() && s.revoked_at.is_none() => {
                self.revoke(
                    Revoke::Session(sid),
                    "revoked_by_owner",
                    &caller.actor(),
                    caller.claims.tid.as_deref(),
                )
                .await?;
                Ok(())
            }
            _ => Err(ApiError::not_found("session")),
        }
    }

    /// Rotates the signing key (superadmin).
    pub async fn rotate_keys(&self, caller: &Caller) -> Result<String, ApiError> {
        let kid = self.0.keys.rotate(&self.0.db, &self.0.ctx.verifier).await?;
        let mut tx = self.0.db.begin().await?;
        record(
            &mut tx,
            &Event::new(
                "auth",
                crate::events::KEYS_ROTATED,
                None,
                &kid,
                &caller.actor(),
                json!({ "kid": kid }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.0.outbox.notify();
        Ok(kid)
    }

    /// The published key set.
    pub fn jwks(&self) -> crate::keys::Jwks {
        self.0.keys.jwks()
    }
}
