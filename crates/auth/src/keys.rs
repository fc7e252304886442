//! Signing keys: created on first start, persisted in the auth database, rotated on demand.
//! The newest key signs; retired keys stay in the JWKS (and in the verifier) until every
//! token they signed has expired.

use std::sync::RwLock;

use platform::ids::Timestamp;
use platform::token::{generate_key, Signer, Verifier};
use platform::ApiError;
use serde::Serialize;

use crate::store::{self, KeyRow};

/// One public key in JWK form.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: &'static str,
    /// Curve: `Ed25519`.
    pub crv: &'static str,
    /// Algorithm: `EdDSA`.
    pub alg: &'static str,
    /// Use: `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// Key id.
    pub kid: String,
    /// Public key, base64url.
    pub x: String,
}

/// The key set published at `/api/auth/.well-known/jwks.json`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwks {
    /// Keys that may have signed a live token.
    pub keys: Vec<Jwk>,
}

/// The current signer and the published keys.
pub struct KeyRing {
    signer: RwLock<Signer>,
    published: RwLock<Jwks>,
    issuer: String,
    audience: String,
    access_ttl_secs: i64,
}

impl KeyRing {
    /// Loads the stored keys (creating the first one), and installs the live public keys
    /// into `verifier`.
    pub async fn load(
        db: &platform::db::Db,
        verifier: &Verifier,
        issuer: &str,
        audience: &str,
        access_ttl_secs: i64,
    ) -> Result<KeyRing, ApiError> {
        let mut keys = store::keys(db.reader()).await?;
        if keys.iter().all(|k| k.retired_at.is_some()) {
            let key = new_key_row()?;
            let mut tx = db.begin().await?;
            store::rotate_in(&mut tx, &key).await?;
            tx.commit().await?;
            keys = store::keys(db.reader()).await?;
        }
        let signer = signer_for(&keys, issuer, audience)?;
        let ring = KeyRing {
            signer: RwLock::new(signer),
            published: RwLock::new(Jwks { keys: Vec::new() }),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            access_ttl_secs,
        };
        ring.publish(&keys, verifier)?;
        Ok(ring)
    }

    /// Makes a new key the signer and keeps the previous ones published until their tokens
    /// expire.
    pub async fn rotate(
        &self,
        db: &platform::db::Db,
        verifier: &Verifier,
    ) -> Result<String, ApiError> {
        let key = new_key_row()?;
        let mut tx = db.begin().await?;
        store::rotate_in(&mut tx, &key).await?;
        tx.commit().await?;
        let keys = store::keys(db.reader()).await?;
        let signer = signer_for(&keys, &self.issuer, &self.audience)?;
        if let Ok(mut s) = self.signer.write() {
            *s = signer;
        }
        self.publish(&keys, verifier)?;
        Ok(key.kid)
    }

    fn publish(&self, keys: &[KeyRow], verifier: &Verifier) -> Result<(), ApiError> {
        let horizon = Timestamp::now().plus_secs(-self.access_ttl_secs - 60);
        let live: Vec<&KeyRow> = keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r > horizon))
            .collect();
        verifier
            .set_keys(live.iter().map(|k| (k.kid.as_str(), k.public_x.as_str())))
            .map_err(|e| ApiError::internal("installing verification keys", e))?;
        let jwks = Jwks {
            keys: live
                .iter()
                .map(|k| Jwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    alg: "EdDSA",
                    use_: "sig",
                    kid: k.kid.clone(),
                    x: k.public_x.clone(),
                })
                .collect(),
        };
        if let Ok(mut p) = self.published.write() {
            *p = jwks;
        }
        Ok(())
    }

    /// The signer of new tokens.
    pub fn signer(&self) -> Result<Signer, ApiError> {
        self.signer
            .read()
            .map(|s| s.clone())
            .map_err(|_| ApiError::internal("key ring", "signer lock poisoned"))
    }

    /// The published key set.
    pub fn jwks(&self) -> Jwks {
        self.published
            .read()
            .map(|p| p.clone())
            .unwrap_or(Jwks { keys: Vec::new() })
    }
}

fn new_key_row() -> Result<KeyRow, ApiError> {
    let key = generate_key().map_err(|e| ApiError::internal("generating a signing key", e))?;
    Ok(KeyRow {
        kid: key.kid,
        private_pkcs8: key.private_pkcs8,
        public_x: key.public_x,
        created_at: Timestamp::now(),
        retired_at: None,
    })
}

fn signer_for(keys: &[KeyRow], issuer: &str, audience: &str) -> Result<Signer, ApiError> {
    let current = keys
        .iter()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(|| ApiError::internal("key ring", "no active signing key"))?;
    Signer::new(&current.kid, &current.private_pkcs8, issuer, audience)
        .map_err(|e| ApiError::internal("loading the signing key", e))
}
