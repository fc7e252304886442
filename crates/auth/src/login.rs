//! Login, token refresh, logout and brute-force throttling.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use platform::caller::{Caller, RequestMeta, Role, TenantScope};
use platform::events::{record, Actor, Event};
use platform::ids::{new_id, Timestamp};
use platform::password::Verified;
use platform::tenants::TenantStatus;
use platform::ApiError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use axum::http::StatusCode;

use crate::events::{LOGIN_SUCCEEDED, SESSION_REVOKED};
use crate::model::{Email, UserStatus};
use crate::store::{self, Revoke, SessionRow, UserRow};
use crate::Auth;
use platform::password::MAX_PASSWORD_BYTES;

/// `POST /api/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A superadmin's user name or a tenant user's email.
    pub username: String,
    /// The password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// Tenant slug; needed only when the email exists in several tenants.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Who a token belongs to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// User or superadmin id.
    pub id: String,
    /// `superadmin`, `admin` or `user`.
    pub role: Role,
    /// Superadmin user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Tenant user's email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tenant id (tenant users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Tenant slug (tenant users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_slug: Option<String>,
}

/// Answer of login and refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// EdDSA-signed JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque token for `POST /api/auth/refresh`; single use.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Who is logged in.
    pub user: Principal,
}

/// Revokes sessions inside the caller's transaction, recording one `auth.session.revoked`
/// event per session; answers the revoked ids (for [`Auth::forget_sessions`] after commit).
pub(crate) async fn revoke_in(
    tx: &mut AnyConnection,
    which: Revoke<'_>,
    reason: &str,
    actor: &Actor,
    tenant_id: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    let revoked = store::revoke_sessions(tx, which, reason, Timestamp::now()).await?;
    for sid in &revoked {
        record(
            tx,
            &Event::new(
                "auth",
                SESSION_REVOKED,
                tenant_id,
                sid,
                actor,
                json!({ "reason": reason }),
            ),
        )
        .await?;
    }
    Ok(revoked)
}

/// The stored form of a refresh token.
pub(crate) fn hash_refresh(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn new_refresh_token() -> String {
    platform::ids::random_token(32)
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

/// A verified identity about to get a session.
struct Subject {
    principal: Principal,
    /// Display name kept with the session and in the audit trail.
    label: String,
    /// Tenant user whose stored hash should be replaced (parameters changed).
    rehash: Option<(UserRow, String)>,
}

/// Why a login failed, as recorded and audited.
enum Failure {
    Rejected(&'static str, ApiError),
}

impl Auth {
    /// Logs in a superadmin (by user name) or a tenant user (by email).
    pub async fn login(
        &self,
        req: LoginRequest,
        meta: &RequestMeta,
        user_agent: Option<String>,
    ) -> Result<TokenResponse, ApiError> {
        use secrecy::ExposeSecret;
        let username = req.username.trim();
        if username.is_empty() || username.len() > 320 {
            return Err(ApiError::validation(
                "username",
                "must be 1 to 320 characters",
            ));
        }
        if req.password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::validation(
                "password",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let is_admin = !username.contains('@');
        let account_key = if is_admin {
            format!("admin:{}", username.to_lowercase())
        } else {
            format!("user:{}", Email::parse(username)?.as_str())
        };
        if let Err(locked) = self.check_throttle(&account_key, meta.ip.as_deref()).await {
            // Audited, but not counted as an attempt: retries during a lockout must not let
            // an attacker extend the lockout of someone else's account.
            self.record_failure(username, &account_key, "throttled", meta, false)
                .await?;
            return Err(locked);
        }

        let outcome = if is_admin {
            self.authenticate_admin(username, &req.password).await?
        } else {
            self.authenticate_user(username, req.tenant.as_deref(), &req.password)
                .await?
        };
        match outcome {
            Ok(subject) => {
                self.open_session(subject, &account_key, meta, user_agent)
                    .await
            }
            Err(Failure::Rejected(reason, error)) => {
                self.record_failure(username, &account_key, reason, meta, true)
                    .await?;
                Err(error)
            }
        }
    }

    async fn authenticate_admin(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Result<Subject, Failure>, ApiError> {
        Ok(
            match self.0.admins.verify_admin(username, password).await? {
                Some(admin) => Ok(Subject {
                    label: admin.username.clone(),
                    principal: Principal {
                        id: admin.id,
                        role: Role::Superadmin,
                        username: Some(admin.username),
                        email: None,
                        name: None,
                        tenant_id: None,
                        tenant_slug: None,
                    },
                    rehash: None,
                }),
                None => Err(Failure::Rejected("bad_credentials", invalid_credentials())),
            },
        )
    }

    async fn authenticate_user(
        &self,
        email: &str,
        tenant: Option<&str>,
        password: &SecretString,
    ) -> Result<Result<Subject, Failure>, ApiError> {
        let email = Email::parse(email)?;
        let hashing = &self.0.hashing;
        let named = tenant.map(str::trim).filter(|t| !t.is_empty());
        // Bounded so that a pathological address cannot make one request hash many times.
        let candidates =
            store::login_candidates(self.0.db.reader(), email.as_str(), named, 10).await?;
        if candidates.is_empty() {
            hashing
                .verify(password, None)
                .await
                .map_err(|e| ApiError::internal("hashing", e))?;
            // Only the audit tells the two apart; the caller gets the same answer.
            let reason = match named {
                Some(key) if self.tenants().resolve(key).await?.is_none() => "unknown_tenant",
                _ => "unknown_user",
            };
            return Ok(Err(Failure::Rejected(reason, invalid_credentials())));
        }
        let mut matched = Vec::new();
        for (user, tenant) in candidates {
            let verified = hashing
                .verify(password, Some(&user.password_hash))
                .await
                .map_err(|e| ApiError::internal("hashing", e))?;
            if verified.ok() {
                matched.push((user, tenant, verified));
            }
        }
        if matched.len() > 1 {
            return Err(ApiError::conflict(
                "tenant_required",
                "this email belongs to several tenants; name the tenant (slug) in the `tenant` field",
            ));
        }
        let Some((user, tenant, verified)) = matched.pop() else {
            return Ok(Err(Failure::Rejected(
                "bad_credentials",
                invalid_credentials(),
            )));
        };
        if user.status == UserStatus::Disabled {
            return Ok(Err(Failure::Rejected(
                "account_disabled",
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "account_disabled",
                    "this account is disabled",
                ),
            )));
        }
        if tenant.status != TenantStatus::Active {
            return Ok(Err(Failure::Rejected(
                "tenant_suspended",
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "tenant_suspended",
                    "this tenant is suspended",
                ),
            )));
        }
        let rehash = match verified {
            Verified::YesRehashed(hash) => Some((user.clone(), hash)),
            _ => None,
        };
        Ok(Ok(Subject {
            label: user.email.clone(),
            principal: Principal {
                id: user.id.clone(),
                role: user.role.role(),
                username: None,
                email: Some(user.email.clone()),
                name: user.name.clone(),
                tenant_id: Some(tenant.id),
                tenant_slug: Some(tenant.slug),
            },
            rehash,
        }))
    }

    async fn open_session(
        &self,
        subject: Subject,
        account_key: &str,
        meta: &RequestMeta,
        user_agent: Option<String>,
    ) -> Result<TokenResponse, ApiError> {
        let now = Timestamp::now();
        let principal = subject.principal;
        let session = SessionRow {
            id: new_id(),
            tenant_id: principal.tenant_id.clone(),
            subject_id: principal.id.clone(),
            subject_name: subject.label.clone(),
            role: principal.role.as_str().to_string(),
            ip: meta.ip.clone(),
            user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
            created_at: now,
            last_used_at: now,
            expires_at: now.plus_secs(self.0.config.refresh_token_ttl_secs),
            revoked_at: None,
        };
        let refresh_token = new_refresh_token();
        let response = self.token_response(principal, &session.id, refresh_token)?;
        let principal = &response.user;
        let actor = Actor {
            id: Some(principal.id.clone()),
            role: principal.role.as_str().into(),
            name: Some(subject.label.clone()),
            request_id: meta.request_id.clone(),
            ip: meta.ip.clone(),
        };
        let event = Event::new(
            "auth",
            LOGIN_SUCCEEDED,
            principal.tenant_id.as_deref(),
            &principal.id,
            &actor,
            json!({ "session_id": session.id }),
        );
        let mut tx = self.0.db.begin().await?;
        if let Some((user, hash)) = &subject.rehash {
            store::set_password_hash(
                &mut tx,
                &TenantScope::for_system_task(&user.tenant_id),
                &user.id,
                hash,
            )
            .await?;
        }
        store::insert_session(&mut tx, &session, &hash_refresh(&response.refresh_token)).await?;
        store::insert_attempt(
            &mut tx,
            account_key,
            meta.ip.as_deref(),
            principal.tenant_id.as_deref(),
            None,
            now,
        )
        .await?;
        record(&mut tx, &event).await?;
        tx.commit().await?;
        self.0.outbox.notify();
        Ok(response)
    }

    /// Exchanges a refresh token for a new pair; reuse of a rotated token revokes the session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        meta: &RequestMeta,
    ) -> Result<TokenResponse, ApiError> {
        let invalid = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is invalid, used or expired",
            )
        };
        if refresh_token.is_empty() || refresh_token.len() > 128 {
            return Err(invalid());
        }
        let now = Timestamp::now();
        let mut tx = self.0.db.begin().await?;
        let Some((session, first_use)) =
            store::use_refresh(&mut tx, &hash_refresh(refresh_token), now).await?
        else {
            return Err(invalid());
        };
        if !first_use {
            // A rotated token came back: someone holds a copy. End the whole session.
            let actor = Actor {
                id: Some(session.subject_id.clone()),
                role: session.role.clone(),
                name: Some(session.subject_name.clone()),
                request_id: meta.request_id.clone(),
                ip: meta.ip.clone(),
            };
            let revoked = revoke_in(
                &mut tx,
                Revoke::Session(&session.id),
                "refresh_token_reuse",
                &actor,
                session.tenant_id.as_deref(),
            )
            .await?;
            tx.commit().await?;
            self.0.outbox.notify();
            self.forget_sessions(&revoked);
            return Err(invalid());
        }
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(invalid());
        }
        let principal = self
            .current_principal(&session)
            .await?
            .ok_or_else(invalid)?;
        let next = new_refresh_token();
        store::insert_refresh(&mut tx, &session.id, &hash_refresh(&next), now).await?;
        store::touch_session(&mut tx, &session.id, now).await?;
        let response = self.token_response(principal, &session.id, next)?;
        tx.commit().await?;
        Ok(response)
    }

    /// Signs an access token for `principal` in session `sid` and pairs it with the session's
    /// new refresh token.
    fn token_response(
        &self,
        principal: Principal,
        sid: &str,
        refresh_token: String,
    ) -> Result<TokenResponse, ApiError> {
        let ttl = self.0.config.access_token_ttl_secs;
        let (access_token, _) = self
            .0
            .keys
            .signer()?
            .issue(
                &principal.id,
                principal.tenant_id.as_deref(),
                principal.role.as_str(),
                sid,
                ttl,
            )
            .map_err(|e| ApiError::internal("signing a token", e))?;
        Ok(TokenResponse {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: ttl,
            user: principal,
        })
    }

    /// The principal behind a session as it is now, or `None` if it may no longer log in.
    async fn current_principal(&self, session: &SessionRow) -> Result<Option<Principal>, ApiError> {
        let Some(tenant_id) = &session.tenant_id else {
            return Ok(self
                .0
                .admins
                .admin_by_id(&session.subject_id)
                .await?
                .map(|a| Principal {
                    id: a.id,
                    role: Role::Superadmin,
                    username: Some(a.username),
                    email: None,
                    name: None,
                    tenant_id: None,
                    tenant_slug: None,
                }));
        };
        let tenant = self
            .tenants()
            .resolve(tenant_id)
            .await?
            .filter(|t| t.status == TenantStatus::Active);
        let Some(tenant) = tenant else {
            return Ok(None);
        };
        let user = store::get_user(
            self.0.db.reader(),
            &TenantScope::for_system_task(tenant_id),
            &session.subject_id,
        )
        .await?;
        Ok(user
            .filter(|u| u.status == UserStatus::Active)
            .map(|u| Principal {
                id: u.id,
                role: u.role.role(),
                username: None,
                email: Some(u.email),
                name: u.name,
                tenant_id: Some(tenant.id),
                tenant_slug: Some(tenant.slug),
            }))
    }

    /// The caller as a principal (`GET /api/auth/me`).
    pub async fn me(&self, caller: &Caller) -> Result<Principal, ApiError> {
        let session = store::get_session(self.0.db.reader(), caller.session_id())
            .await?
            .ok_or_else(|| ApiError::unauthorized("the session has ended"))?;
        self.current_principal(&session)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the session has ended"))
    }

    /// Revokes sessions in a transaction of its own and announces it.
    pub(crate) async fn revoke(
        &self,
        which: Revoke<'_>,
        reason: &str,
        actor: &Actor,
        tenant_id: Option<&str>,
    ) -> Result<Vec<String>, ApiError> {
        let mut tx = self.0.db.begin().await?;
        let revoked = revoke_in(&mut tx, which, reason, actor, tenant_id).await?;
        tx.commit().await?;
        self.0.outbox.notify();
        self.forget_sessions(&revoked);
        Ok(revoked)
    }

    /// Ends the caller's session; its access token stops working at once.
    pub async fn logout(&self, caller: &Caller) -> Result<(), ApiError> {
        self.revoke(
            Revoke::Session(caller.session_id()),
            "logout",
            &caller.actor(),
            caller.claims.tid.as_deref(),
        )
        .await?;
        Ok(())
    }
}
