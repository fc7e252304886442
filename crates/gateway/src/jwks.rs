//! Token verification at the edge: the key set is fetched from the auth upstreams
//! (`GET /api/<auth>/.well-known/jwks.json`), cached in a [`Verifier`], and refreshed when a
//! token names an unknown key id — at most once per `jwks_refresh_min_interval_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::token::{Claims, Jwks, TokenError, Verifier};
use platform::ApiError;

use crate::Gateway;

/// The cached key set.
pub(crate) struct Keys {
    verifier: Verifier,
    min_interval: Duration,
    /// When the last refresh ran and whether it succeeded.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

fn rejected(e: &TokenError) -> ApiError {
    ApiError::unauthorized(match e {
        TokenError::Expired => "the access token has expired",
        _ => "the access token is invalid",
    })
}

impl Keys {
    pub(crate) fn new(issuer: &str, audience: &str, min_interval: Duration) -> Keys {
        Keys {
            verifier: Verifier::new(issuer, audience),
            min_interval,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Verifies `token`, refreshing the key set once when its key is unknown.
    pub(crate) async fn verify(&self, gw: &Gateway, token: &str) -> Result<Arc<Claims>, ApiError> {
        match self.verifier.verify(token) {
            Ok(claims) => Ok(claims),
            Err(TokenError::UnknownKey) => {
                // Boxed: the fetch is rare, and inline it would enlarge every proxied
                // request's future (which is moved, byte by byte, several times a request).
                Box::pin(self.refresh(gw)).await?;
                self.verifier.verify(token).map_err(|e| rejected(&e))
            }
            Err(e) => Err(rejected(&e)),
        }
    }

    async fn refresh(&self, gw: &Gateway) -> Result<(), ApiError> {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < self.min_interval {
                // Refreshed moments ago (perhaps by a concurrent request): use that result.
                return if ok { Ok(()) } else { Err(unavailable()) };
            }
        }
        let ok = match self.fetch(gw).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the token keys from auth");
                false
            }
        };
        *last = Some((Instant::now(), ok));
        if ok {
            Ok(())
        } else {
            Err(unavailable())
        }
    }

    async fn fetch(&self, gw: &Gateway) -> Result<(), String> {
        let service = &gw.config().auth_service;
        let pool = gw
            .pools()
            .find(|p| &p.service == service)
            .ok_or_else(|| format!("no upstream is configured for `{service}`"))?;
        let path = format!("/api/{service}/.well-known/jwks.json");
        let mut error = format!("no upstream of `{service}` is ready");
        for upstream in pool.upstreams.iter().filter(|u| u.is_ready()) {
            match gw.get(upstream, &path).await {
                Ok(body) => {
                    let jwks: Jwks = serde_json::from_slice(&body)
                        .map_err(|e| format!("the key set is malformed: {e}"))?;
                    let pairs = jwks.into_pairs();
                    self.verifier
                        .set_keys(pairs.iter().map(|(kid, x)| (kid.as_str(), x.as_str())))?;
                    tracing::info!(keys = pairs.len(), "token keys refreshed");
                    return Ok(());
                }
                Err(e) => error = format!("{}: {e}", upstream.url),
            }
        }
        Err(error)
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "auth_unavailable",
        "the access token cannot be checked right now; retry shortly",
    )
}
