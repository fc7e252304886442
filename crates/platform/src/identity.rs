//! Service identity: how one service proves to another that a call comes from the platform.
//!
//! In the distributed topology a few calls cross process boundaries over HTTP (auth asks
//! CDX to check superadmin credentials, services fetch revoked sessions from auth). Such a
//! call carries `x-metatron-service: <service>.<expires>.<signature>`, an HMAC-SHA256 over
//! the calling service's name and an expiry one minute ahead, keyed with the secret every
//! service of the installation shares (`[services] secret`). Outside clients do not have
//! the secret, so they cannot forge one; the gateway also strips the header from every
//! request it forwards. Internal endpoints live under `/internal/...`, which the gateway
//! never routes.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

use crate::error::ApiError;
use crate::ids::Timestamp;

/// The header carrying a service token.
pub const SERVICE_HEADER: &str = "x-metatron-service";
/// How long a service token is valid.
const TOKEN_TTL_SECS: i64 = 60;
/// Shortest accepted shared secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Separates the signed fields; service names never contain it.
const SEPARATOR: char = '.';

/// Signs and checks service tokens for one process (`name`), with the shared secret.
#[derive(Clone)]
pub struct ServiceIdentity(Arc<Inner>);

struct Inner {
    name: String,
    key: hmac::Key,
}

impl std::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServiceIdentity")
            .field("name", &self.0.name)
            .finish_non_exhaustive()
    }
}

impl ServiceIdentity {
    /// The identity of service `name`; the secret must have at least
    /// [`MIN_SECRET_BYTES`] bytes.
    pub fn new(name: &str, secret: &SecretString) -> Result<ServiceIdentity, String> {
        if secret.expose_secret().len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the service secret must have at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        if name.is_empty() || name.contains(SEPARATOR) {
            return Err(format!("`{name}` is not a service name"));
        }
        Ok(ServiceIdentity(Arc::new(Inner {
            name: name.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes()),
        })))
    }

    /// This process's service name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// A fresh token for an outgoing call.
    pub fn token(&self) -> String {
        let signed = format!(
            "{}{SEPARATOR}{}",
            self.0.name,
            Timestamp::now().seconds() + TOKEN_TTL_SECS
        );
        let tag = hmac::sign(&self.0.key, signed.as_bytes());
        format!(
            "{signed}{SEPARATOR}{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The calling service named by a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<String, ApiError> {
        let forged = || ApiError::unauthorized("the service credential is invalid");
        let (signed, tag) = token.rsplit_once(SEPARATOR).ok_or_else(forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| forged())?;
        hmac::verify(&self.0.key, signed.as_bytes(), &tag).map_err(|_| forged())?;
        let (service, expires) = signed.split_once(SEPARATOR).ok_or_else(forged)?;
        let expires: i64 = expires.parse().map_err(|_| forged())?;
        let now = Timestamp::now().seconds();
        // A token valid for longer than any this code issues was not issued by it.
        if expires <= now || expires > now + TOKEN_TTL_SECS + 5 {
            return Err(ApiError::unauthorized("the service credential has expired"));
        }
        Ok(service.to_string())
    }
}

/// The state of a service's internal routes: the service, and the identity that checks
/// its callers.
#[derive(Clone, Debug)]
pub struct Internal<S> {
    /// The service.
    pub service: S,
    /// Checks the callers' service tokens.
    pub identity: ServiceIdentity,
}

impl<S> FromRef<Internal<S>> for ServiceIdentity {
    fn from_ref(state: &Internal<S>) -> Self {
        state.identity.clone()
    }
}

/// What a service holding tenant data offers the other services, under
/// `/internal/<service>`: a tenant's data for CDX's export (`tenants/{id}/export`) and the
/// facts CDX's aggregates are checked against (`facts`), each for callers with a valid
/// service token of `identity`'s secret.
pub fn data_routes(
    service: &str,
    export: Arc<dyn crate::export::TenantExport>,
    facts: Arc<dyn crate::facts::ServiceFacts>,
    identity: ServiceIdentity,
) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            &format!("/internal/{service}/tenants/{{id}}/export"),
            get(export_tenant),
        )
        .route(&format!("/internal/{service}/facts"), get(facts_page))
        .with_state(Internal {
            service: DataSources {
                name: service.to_string(),
                export,
                facts,
            },
            identity,
        })
}

/// What [`data_routes`] answers from.
#[derive(Clone)]
struct DataSources {
    /// The service's name, for logs.
    name: String,
    export: Arc<dyn crate::export::TenantExport>,
    facts: Arc<dyn crate::facts::ServiceFacts>,
}

/// The service's export of tenant `id`, streamed as the service produces it.
async fn export_tenant(
    axum::extract::State(state): axum::extract::State<Internal<DataSources>>,
    _: CallingService,
    crate::http::Path(id): crate::http::Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let export = state.service.export.export_tenant(&id).await?;
    let export = crate::export::logging_failures(export, &state.service.name, &id);
    Ok(crate::export::json_response(export))
}

async fn facts_page(
    axum::extract::State(state): axum::extract::State<Internal<DataSources>>,
    _: CallingService,
    crate::http::Query(query): crate::http::Query<crate::facts::FactsQuery>,
) -> Result<axum::Json<crate::facts::FactsPage>, ApiError> {
    Ok(axum::Json(
        query.answer(state.service.facts.as_ref()).await?,
    ))
}

/// The platform service that made this call (extracted from a valid service token; any
/// other request is refused with 401).
#[derive(Debug, Clone)]
pub struct CallingService(pub String);

impl<S> FromRequestParts<S> for CallingService
where
    S: Send + Sync,
    ServiceIdentity: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let identity = ServiceIdentity::from_ref(state);
        let token = parts
            .headers
            .get(SERVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("this endpoint is for platform services"))?;
        identity.verify(token).map(CallingService)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn tokens_verify_with_the_same_secret_only() {
        let auth = ServiceIdentity::new("auth", &secret(&"s".repeat(32))).expect("identity");
        let cdx = ServiceIdentity::new("cdx", &secret(&"s".repeat(32))).expect("identity");
        let other = ServiceIdentity::new("cdx", &secret(&"t".repeat(32))).expect("identity");
        let token = auth.token();
        assert_eq!(cdx.verify(&token).expect("valid"), "auth");
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn tampered_expired_and_malformed_tokens_are_refused() {
        let id = ServiceIdentity::new("auth", &secret(&"k".repeat(40))).expect("identity");
        let token = id.token();
        let (signed, tag) = token.rsplit_once('.').expect("shape");
        // Renaming the caller breaks the signature.
        let renamed = format!("{}{}.{tag}", "cdx", &signed[4..]);
        assert!(id.verify(&renamed).is_err());
        // A far expiry breaks it too, and would be refused even if signed.
        let (name, _) = signed.split_once('.').expect("shape");
        let far = format!("{name}.{}.{tag}", Timestamp::now().seconds() + 3600);
        assert!(id.verify(&far).is_err());
        for bad in ["", ".", "auth", "auth.1.x", "auth..", "a.b.c.d"] {
            assert!(id.verify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_secrets_and_bad_names_are_refused() {
        assert!(ServiceIdentity::new("auth", &secret("short")).is_err());
        assert!(ServiceIdentity::new("a.b", &secret(&"k".repeat(32))).is_err());
    }
}
