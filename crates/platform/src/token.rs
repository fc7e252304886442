//! Access tokens: short-lived JWTs signed with Ed25519 (`alg: EdDSA`), so every service can
//! verify them offline against the published key set.
//!
//! Verification pins the algorithm (a token claiming `none`, `HS256` or anything else is
//! rejected), checks issuer, audience and expiry, and looks the key up by `kid`. A signature
//! check costs tens of microseconds, so verified tokens are cached until they expire; the
//! cache holds claims only, and revocation is checked on every request elsewhere
//! ([`crate::caller::Revocations`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::ids::{new_id, Timestamp};

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Subject: the user's or superadmin's id.
    pub sub: String,
    /// Tenant id; absent for the superadmin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// `superadmin`, `admin` or `user`.
    pub role: String,
    /// Session id; revoking the session revokes the token.
    pub sid: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// Why a token was refused (answered as 401 without further detail to the client).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    /// Malformed, wrong algorithm, bad signature, wrong issuer or audience.
    #[error("invalid token")]
    Invalid,
    /// Signed by a key we do not know.
    #[error("unknown signing key")]
    UnknownKey,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Signed by a key we do not know, and the key set cannot be fetched right now.
    #[error("the token keys are unavailable")]
    KeysUnavailable,
}

/// A freshly generated Ed25519 key pair as it is stored.
#[derive(Clone)]
pub struct GeneratedKey {
    /// Key id published in the JWKS and the token header.
    pub kid: String,
    /// PKCS#8 private key, base64url.
    pub private_pkcs8: String,
    /// Raw public key, base64url (the JWK `x`).
    pub public_x: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("kid", &self.kid)
            .field("private_pkcs8", &"<redacted>")
            .finish()
    }
}

/// Generates a new signing key.
pub fn generate_key() -> Result<GeneratedKey, String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    Ok(GeneratedKey {
        kid: new_id(),
        private_pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
        public_x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    })
}

/// Signs access tokens with the current key.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    key: Arc<EncodingKey>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for a stored key.
    pub fn new(
        kid: &str,
        private_pkcs8: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let der = URL_SAFE_NO_PAD
            .decode(private_pkcs8)
            .map_err(|e| format!("stored signing key is not base64url: {e}"))?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| format!("stored signing key is not an Ed25519 PKCS#8 key: {e}"))?;
        Ok(Signer {
            kid: kid.to_string(),
            key: Arc::new(EncodingKey::from_ed_der(&der)),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    /// The key id this signer stamps into tokens.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Issues a token for `sub` in session `sid`, valid for `ttl_secs`.
    pub fn issue(
        &self,
        sub: &str,
        tid: Option<&str>,
        role: &str,
        sid: &str,
        ttl_secs: i64,
    ) -> Result<(String, Claims), String> {
        let now = Timestamp::now().seconds();
        let claims = Claims {
            sub: sub.to_string(),
            tid: tid.map(str::to_string),
            role: role.to_string(),
            sid: sid.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl_secs,
            jti: new_id(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())?;
        Ok((token, claims))
    }
}

/// Where a verifier in another process than auth gets the published keys: `(kid, x)` pairs.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The current key set.
    async fn fetch(&self) -> Result<Vec<(String, String)>, String>;
}

/// A JSON Web Key Set as auth publishes it (`GET /api/auth/.well-known/jwks.json`).
#[derive(Debug, Deserialize)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct Jwk {
    kid: String,
    x: String,
    #[serde(default)]
    kty: Option<String>,
}

impl Jwks {
    /// The Ed25519 keys of the set as `(kid, x)` pairs.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.keys
            .into_iter()
            .filter(|k| k.kty.as_deref().is_none_or(|t| t == "OKP"))
            .map(|k| (k.kid, k.x))
            .collect()
    }
}

/// Fetches a key set from a [`KeySource`] when a token names an unknown key, at most once
/// per `min_interval` (concurrent requests share one fetch and its outcome).
struct Refresh {
    source: Arc<dyn KeySource>,
    min_interval: Duration,
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// Verifies access tokens against the published keys, with a bounded cache of verified ones.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    validation: Arc<Validation>,
    cache: Arc<quick_cache::sync::Cache<String, Arc<Claims>>>,
    refresh: Arc<OnceLock<Refresh>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// How many verified tokens are remembered.
const CACHE_CAPACITY: usize = 100_000;

impl Verifier {
    /// A verifier for tokens from `issuer` to `audience`, with no keys yet.
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Verifier {
            keys: Arc::new(RwLock::new(HashMap::new())),
            validation: Arc::new(validation),
            cache: Arc::new(quick_cache::sync::Cache::new(CACHE_CAPACITY)),
            refresh: Arc::new(OnceLock::new()),
        }
    }

    /// Makes [`Verifier::verify_fresh`] fetch the key set from `source` when a token names
    /// an unknown key (services that do not hold the keys themselves). Set once.
    pub fn refresh_from(&self, source: Arc<dyn KeySource>, min_interval: Duration) {
        let _ = self.refresh.set(Refresh {
            source,
            min_interval,
            last: tokio::sync::Mutex::new(None),
        });
    }

    /// Fetches the key set now (at start), when a source is set. A failure is not
    /// remembered: the first token that needs the keys tries again.
    pub async fn refresh(&self) -> Result<(), String> {
        let Some(refresh) = self.refresh.get() else {
            return Ok(());
        };
        let mut last = refresh.last.lock().await;
        self.fetch_from(refresh).await?;
        *last = Some((Instant::now(), true));
        Ok(())
    }

    async fn fetch_from(&self, refresh: &Refresh) -> Result<(), String> {
        let pairs = refresh.source.fetch().await?;
        self.set_keys(pairs.iter().map(|(kid, x)| (kid.as_str(), x.as_str())))?;
        tracing::info!(keys = pairs.len(), "token keys refreshed");
        Ok(())
    }

    /// Like [`Verifier::verify`], but a token signed by an unknown key first refreshes the
    /// key set from the source (when one is set) — how a key rotated in auth reaches every
    /// other process.
    pub async fn verify_fresh(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        match self.verify(token) {
            Err(TokenError::UnknownKey) => {}
            other => return other,
        }
        let Some(refresh) = self.refresh.get() else {
            return Err(TokenError::UnknownKey);
        };
        {
            let mut last = refresh.last.lock().await;
            let recent = last.filter(|(at, _)| at.elapsed() < refresh.min_interval);
            let ok = match recent {
                // Refreshed moments ago, perhaps by a concurrent request: use that outcome.
                Some((_, ok)) => ok,
                None => match self.fetch_from(refresh).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch the token keys");
                        false
                    }
                },
            };
            if recent.is_none() {
                *last = Some((Instant::now(), ok));
            }
            if !ok {
                return Err(TokenError::KeysUnavailable);
            }
        }
        self.verify(token)
    }

    /// Replaces the set of accepted public keys (`kid`, base64url `x`).
    pub fn set_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        let mut map = HashMap::new();
        for (kid, x) in keys {
            let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
            map.insert(kid.to_string(), key);
        }
        let mut guard = self
            .keys
            .write()
            .map_err(|_| "key set poisoned".to_string())?;
        *guard = map;
        drop(guard);
        // A key that left the set must not keep its tokens alive through the cache.
        self.cache.clear();
        Ok(())
    }

    /// Verifies a token, answering from the cache when it was verified before.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = Timestamp::now().seconds();
        if let Some(claims) = self.cache.get(token) {
            return if claims.exp > now {
                Ok(claims)
            } else {
                Err(TokenError::Expired)
            };
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let data = {
            let keys = self.keys.read().map_err(|_| TokenError::Invalid)?;
            let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?
        };
        // `exp` is checked above with zero leeway, but a token expiring this very second is
        // not worth caching.
        if data.claims.exp <= now {
            return Err(TokenError::Expired);
        }
        let claims = Arc::new(data.claims);
        self.cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Signer, Verifier, GeneratedKey) {
        let key = generate_key().expect("key");
        let signer = Signer::new(&key.kid, &key.private_pkcs8, "iss", "aud").expect("signer");
        let verifier = Verifier::new("iss", "aud");
        verifier
            .set_keys([(key.kid.as_str(), key.public_x.as_str())])
            .expect("keys");
        (signer, verifier, key)
    }

    #[test]
    fn round_trip_and_cache() {
        let (signer, verifier, _) = pair();
        let (token, claims) = signer
            .issue("u1", Some("t1"), "user", "s1", 60)
            .expect("issue");
        assert_eq!(*verifier.verify(&token).expect("valid"), claims);
        assert_eq!(*verifier.verify(&token).expect("cached"), claims);
    }

    #[test]
    fn rejects_expired_tampered_foreign_and_unsigned_tokens() {
        let (signer, verifier, _) = pair();
        let (expired, _) = signer
            .issue("u1", None, "superadmin", "s1", -5)
            .expect("issue");
        assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));

        let (token, _) = signer
            .issue("u1", Some("t1"), "user", "s1", 60)
            .expect("issue");
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64"))
                .expect("utf8")
                .replace("\"user\"", "\"admin\""),
        );
        parts[1] = forged;
        assert_eq!(verifier.verify(&parts.join(".")), Err(TokenError::Invalid));

        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!(
            "{none_header}.{}.",
            token.split('.').nth(1).expect("payload")
        );
        assert_eq!(verifier.verify(&unsigned), Err(TokenError::Invalid));

        let (other_signer, _, _) = pair();
        let (foreign, _) = other_signer
            .issue("u1", None, "superadmin", "s1", 60)
            .expect("issue");
        assert_eq!(verifier.verify(&foreign), Err(TokenError::UnknownKey));

        let wrong_aud =
            Signer::new(signer.kid(), &pair().2.private_pkcs8, "iss", "elsewhere").expect("signer");
        let (t, _) = wrong_aud
            .issue("u1", None, "superadmin", "s1", 60)
            .expect("issue");
        assert!(verifier.verify(&t).is_err());
    }
}
