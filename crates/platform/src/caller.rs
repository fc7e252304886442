//! The authenticated caller and the tenant scope (rule 4).
//!
//! Handlers declare who may call them by the extractor they take: [`Caller`] (anyone with a
//! valid token), [`Superadmin`], [`TenantMember`] (any role inside a tenant) or
//! [`TenantAdmin`]. The tenant extractors produce a [`TenantScope`], which only this module
//! can construct from a verified caller; store functions take one, so a query cannot be
//! written without the tenant filter. A superadmin names the tenant with `X-Tenant`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::events::Actor;
use crate::ids::Timestamp;
use crate::tenants::{TenantRef, TenantReplica, TenantStatus};
use crate::token::{Claims, Verifier};

/// Role of a caller.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Platform operator.
    Superadmin,
    /// Tenant administrator.
    Admin,
    /// Tenant user.
    User,
}

impl Role {
    /// The text in tokens and databases.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "superadmin" => Some(Role::Superadmin),
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Sessions revoked before their access tokens expire (logout, disabled user, suspended
/// tenant). Checked on every request, so revocation takes effect at once despite the
/// verified-token cache. Entries are kept until the longest-lived token could expire.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    sessions: Arc<RwLock<HashMap<String, i64>>>,
}

impl Revocations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes session `sid`; remembered until `until` (Unix seconds).
    pub fn revoke(&self, sid: &str, until: i64) {
        if let Ok(mut map) = self.sessions.write() {
            let now = Timestamp::now().seconds();
            if map.len() > 10_000 {
                map.retain(|_, exp| *exp > now);
            }
            map.insert(sid.to_string(), until);
        }
    }

    /// Whether `sid` was revoked.
    pub fn is_revoked(&self, sid: &str) -> bool {
        // A poisoned lock fails closed.
        self.sessions
            .read()
            .map(|m| m.contains_key(sid))
            .unwrap_or(true)
    }
}

/// The event auth records for every session it ends.
pub const SESSION_REVOKED: &str = "auth.session.revoked";
/// `GET` on auth: the sessions revoked recently enough for their tokens to be alive.
pub const REVOCATIONS_PATH: &str = "/internal/auth/revocations";

/// One revoked session on the wire ([`REVOCATIONS_PATH`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RevokedSession {
    /// Session id.
    pub sid: String,
    /// Until when (Unix seconds) its access tokens could still be presented.
    pub until: i64,
}

/// Keeps the revocation list of a process other than auth's in step: auth records an
/// `auth.session.revoked` event for each session it ends, and this consumer applies it, so
/// logging out ends the session's access tokens in every service. The list lives in memory
/// only; a restarted process loads the recent revocations from auth first
/// ([`REVOCATIONS_PATH`]).
#[derive(Debug, Clone)]
pub struct RevocationFeed {
    revocations: Revocations,
    token_ttl_secs: i64,
}

impl RevocationFeed {
    /// Feeds `revocations`; tokens live at most `token_ttl_secs`.
    pub fn new(revocations: Revocations, token_ttl_secs: i64) -> Self {
        RevocationFeed {
            revocations,
            token_ttl_secs,
        }
    }
}

#[async_trait::async_trait]
impl crate::events::EventHandler for RevocationFeed {
    fn name(&self) -> &'static str {
        "revocation_feed"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == SESSION_REVOKED
    }

    async fn handle(
        &self,
        event: &crate::events::Event,
    ) -> Result<(), crate::events::HandlerError> {
        // Idempotent: revoking twice changes nothing.
        self.revocations.revoke(
            &event.aggregate_id,
            event.occurred_at.seconds() + self.token_ttl_secs,
        );
        Ok(())
    }
}

/// What the caller extractors need from the application state.
#[derive(Clone, Debug)]
pub struct AuthContext {
    /// Verifies access tokens.
    pub verifier: Verifier,
    /// Revoked sessions.
    pub revocations: Revocations,
    /// Resolves `X-Tenant`.
    pub tenants: TenantReplica,
}

/// Request metadata for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(request_meta(parts))
    }
}

fn request_meta(parts: &Parts) -> RequestMeta {
    RequestMeta {
        request_id: parts
            .headers
            .get(crate::http::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string()),
    }
}

/// A caller with a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Verified claims.
    pub claims: Arc<Claims>,
    /// Role from the token.
    pub role: Role,
    /// Request metadata.
    pub meta: RequestMeta,
}

impl Caller {
    /// The caller's user or admin id.
    pub fn id(&self) -> &str {
        &self.claims.sub
    }

    /// The caller's session id.
    pub fn session_id(&self) -> &str {
        &self.claims.sid
    }

    /// The caller as the actor of an event.
    pub fn actor(&self) -> Actor {
        Actor {
            id: Some(self.claims.sub.clone()),
            role: self.role.as_str().to_string(),
            name: None,
            request_id: self.meta.request_id.clone(),
            ip: self.meta.ip.clone(),
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ctx = AuthContext::from_ref(state);
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::unauthorized("a bearer access token is required"))?;
        let claims = ctx
            .verifier
            .verify_fresh(token.trim())
            .await
            .map_err(|e| match e {
                crate::token::TokenError::Expired => {
                    ApiError::unauthorized("the access token has expired")
                }
                crate::token::TokenError::KeysUnavailable => ApiError::unavailable(
                    "the access token cannot be checked right now; retry shortly",
                ),
                _ => ApiError::unauthorized("the access token is invalid"),
            })?;
        if ctx.revocations.is_revoked(&claims.sid) {
            return Err(ApiError::unauthorized("the session has been revoked"));
        }
        let role = Role::parse(&claims.role)
            .ok_or_else(|| ApiError::unauthorized("the access token is invalid"))?;
        if (role == Role::Superadmin) != claims.tid.is_none() {
            return Err(ApiError::unauthorized("the access token is invalid"));
        }
        Ok(Caller {
            claims,
            role,
            meta: request_meta(parts),
        })
    }
}

/// A superadmin caller.
#[derive(Debug, Clone)]
pub struct Superadmin(pub Caller);

impl<S> FromRequestParts<S> for Superadmin
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Superadmin {
            return Err(ApiError::forbidden("this requires the superadmin role"));
        }
        Ok(Superadmin(caller))
    }
}

/// Proof that data access is limited to one tenant. Only the extractors of this module (for
/// a verified caller) and [`TenantScope::for_system_task`] (for the platform's own jobs,
/// never request data) create one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: String,
}

impl TenantScope {
    /// The tenant every query through this scope is limited to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// A scope for platform-internal work (seeding, event consumers, CLI), never built
    /// from request input.
    pub fn for_system_task(tenant_id: &str) -> Self {
        TenantScope {
            tenant_id: tenant_id.to_string(),
        }
    }
}

/// The `X-Tenant` header with which a superadmin acts inside a tenant.
pub const X_TENANT: &str = "x-tenant";

/// Any caller acting inside one tenant: its own for admins and users, the one named by
/// `X-Tenant` for the superadmin.
#[derive(Debug, Clone)]
pub struct TenantMember {
    /// The caller.
    pub caller: Caller,
    /// The tenant scope.
    pub scope: TenantScope,
}

/// The tenant a request acts in, with the tenant as the replica knows it when it was looked
/// up on the way (a tenant user naming no tenant is not looked up).
async fn tenant_of(
    parts: &Parts,
    caller: &Caller,
    ctx: &AuthContext,
) -> Result<(TenantScope, Option<TenantRef>), ApiError> {
    let named = parts
        .headers
        .get(X_TENANT)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::bad_request("invalid_header", "X-Tenant is not valid text"))
        })
        .transpose()?;
    match (&caller.claims.tid, named) {
        (Some(own), None) => Ok((TenantScope::for_system_task(own), None)),
        (Some(own), Some(named)) => {
            // A tenant user may repeat their own tenant; naming another one is refused.
            match ctx.tenants.resolve(named).await? {
                Some(tenant) if &tenant.id == own => {
                    Ok((TenantScope::for_system_task(own), Some(tenant)))
                }
                _ => Err(ApiError::forbidden("you can act only in your own tenant")),
            }
        }
        (None, Some(named)) => match ctx.tenants.resolve(named).await? {
            Some(tenant) => Ok((TenantScope::for_system_task(&tenant.id), Some(tenant))),
            None => Err(ApiError::not_found("tenant")),
        },
        (None, None) => Err(ApiError::bad_request(
            "tenant_required",
            "name the tenant with the X-Tenant header (slug or id)",
        )),
    }
}

impl<S> FromRequestParts<S> for TenantMember
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let ctx = AuthContext::from_ref(state);
        let (scope, known) = tenant_of(parts, &caller, &ctx).await?;
        // A suspended tenant's data is frozen in every service, whoever asks: its users'
        // sessions are revoked, and writes (by the superadmin, or a token still in flight
        // in another process) are refused until the tenant is resumed.
        if !parts.method.is_safe() {
            let tenant = match known {
                Some(tenant) => Some(tenant),
                None => ctx.tenants.resolve(scope.tenant_id()).await?,
            };
            if let Some(tenant) = tenant {
                if tenant.status == TenantStatus::Suspended {
                    return Err(ApiError::conflict(
                        "tenant_suspended",
                        "the tenant is suspended; its data is read-only until it is resumed",
                    ));
                }
            }
        }
        Ok(TenantMember { caller, scope })
    }
}

/// A tenant admin, or the superadmin acting inside a tenant.
#[derive(Debug, Clone)]
pub struct TenantAdmin {
    /// The caller.
    pub caller: Caller,
    /// The tenant scope.
    pub scope: TenantScope,
}

impl<S> FromRequestParts<S> for TenantAdmin
where
    S: Send + Sync,
    AuthContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let TenantMember { caller, scope } = TenantMember::from_request_parts(parts, state).await?;
        if caller.role == Role::User {
            return Err(ApiError::forbidden("this requires the admin role"));
        }
        Ok(TenantAdmin { caller, scope })
    }
}
