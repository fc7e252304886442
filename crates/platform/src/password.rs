//! Password hashing with argon2id on a bounded blocking pool.
//!
//! Hashing is deliberately expensive (OWASP: m = 19 MiB, t = 2, p = 1), so it runs on
//! tokio's blocking threads behind a semaphore sized to the cores: a login storm queues
//! there instead of starving the async workers that serve every other request.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// argon2id cost parameters and the size of the hashing pool (`[password]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashParams {
    /// Hashes computed at once; 0 means one per CPU core.
    pub concurrency: usize,
    /// Memory in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Iterations (OWASP: 2).
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            concurrency: 0,
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// A hashing failure (bad parameters, or the pool went away).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password (or no such account).
    No,
    /// Right password, hash parameters current.
    Yes,
    /// Right password, and here is a new hash with the current parameters to store.
    YesRehashed(String),
}

impl Verified {
    /// Whether the password matched.
    pub fn ok(&self) -> bool {
        !matches!(self, Verified::No)
    }
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHashing {
    params: HashParams,
    argon: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does not exist so
    /// that unknown users cost the same time as known ones.
    decoy: Arc<String>,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing")
            .field("params", &self.params)
            .finish()
    }
}

impl PasswordHashing {
    /// A hasher with `params`, running at most `params.concurrency` hashes at once.
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let concurrency = match params.concurrency {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError(format!("invalid argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let salt = SaltString::generate(&mut OsRng);
        let decoy = argon
            .hash_password(crate::ids::new_id().as_bytes(), &salt)
            .map_err(|e| HashError(e.to_string()))?
            .to_string();
        Ok(PasswordHashing {
            params,
            argon: Arc::new(argon),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            decoy: Arc::new(decoy),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError("hashing pool closed".into()))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || work(&argon))
            .await
            .map_err(|e| HashError(e.to_string()))
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = password.clone();
        self.blocking(move |argon| {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await?
    }

    /// Verifies `password` against `stored` (or against the decoy when `stored` is `None`,
    /// which always answers [`Verified::No`] after the same work). A match whose hash has
    /// other parameters than the current ones comes back re-hashed.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let known = stored.is_some();
        let stored = stored
            .map(str::to_string)
            .unwrap_or_else(|| self.decoy.to_string());
        let password = password.clone();
        let current = self.params;
        self.blocking(move |argon| {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Ok(Verified::No);
            };
            if argon
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_err()
                || !known
            {
                return Ok(Verified::No);
            }
            let same = Params::try_from(&parsed)
                .map(|p| {
                    p.m_cost() == current.memory_kib
                        && p.t_cost() == current.iterations
                        && p.p_cost() == current.parallelism
                })
                .unwrap_or(false)
                && parsed.algorithm == argon2::ARGON2ID_IDENT;
            if same {
                return Ok(Verified::Yes);
            }
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| Verified::YesRehashed(h.to_string()))
                .map_err(|e| HashError(e.to_string()))
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(memory_kib: u32) -> PasswordHashing {
        PasswordHashing::new(HashParams {
            concurrency: 2,
            memory_kib,
            iterations: 1,
            parallelism: 1,
        })
        .expect("hasher")
    }

    #[tokio::test]
    async fn verifies_and_rehashes_when_parameters_change() {
        let pw = SecretString::from("correct horse");
        let old = cheap(1024);
        let stored = old.hash(&pw).await.expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert_eq!(
            old.verify(&pw, Some(&stored)).await.expect("verify"),
            Verified::Yes
        );
        assert_eq!(
            old.verify(&SecretString::from("wrong"), Some(&stored))
                .await
                .expect("verify"),
            Verified::No
        );
        let new = cheap(2048);
        match new.verify(&pw, Some(&stored)).await.expect("verify") {
            Verified::YesRehashed(h) => {
                assert!(h.contains("m=2048"), "{h}");
                assert_eq!(
                    new.verify(&pw, Some(&h)).await.expect("verify"),
                    Verified::Yes
                );
            }
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_accounts_never_verify() {
        let h = cheap(1024);
        assert_eq!(
            h.verify(&SecretString::from("x"), None)
                .await
                .expect("verify"),
            Verified::No
        );
        assert_eq!(
            h.verify(&SecretString::from("x"), Some("garbage"))
                .await
                .expect("verify"),
            Verified::No
        );
    }
}
