//! Password hashing with argon2id on a fixed pool of hashing threads.
//!
//! Hashing is deliberately expensive (OWASP: m = 19 MiB, t = 2, p = 1), so it runs on a
//! fixed pool of threads sized to the cores: a login storm queues there instead of
//! starving the async workers that serve every other request.

use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

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

/// Shortest password accepted when one is set, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes: the hashing work a request can ask for is bounded.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password given in input field `field` against the policy (422 naming it).
pub fn check_policy(field: &str, password: &SecretString) -> Result<(), crate::ApiError> {
    let text = password.expose_secret();
    if text.chars().count() < MIN_PASSWORD_CHARS {
        return Err(crate::ApiError::validation(
            field,
            format!("must have at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if text.len() > MAX_PASSWORD_BYTES {
        return Err(crate::ApiError::validation(
            field,
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A hashing worker keeps its argon2 memory while work keeps coming, and frees it after
/// this long without work, so an idle server holds none of it.
const IDLE_RELEASE: Duration = Duration::from_millis(500);
/// Stored hashes asking for more memory than this are refused rather than computed.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const SALT_BYTES: usize = 16;
/// Capacity reserved for a worker's argon2 memory, in blocks of 1 KiB: above glibc's
/// largest dynamic mmap threshold (32 MiB), so the buffer is always its own mapping and is
/// returned to the operating system when freed. Smaller freed blocks would raise that
/// threshold and stay resident in per-thread arenas. Only the pages argon2 uses are ever
/// touched, so the unused part of the reservation costs no memory.
const RESERVED_BLOCKS: usize = 33 * 1024;

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes and verifies passwords on a fixed pool of threads, one per allowed concurrent
/// hash. Each worker reuses one argon2 memory buffer: allocating 19 MiB per hash would cost
/// page faults on every login and leave freed blocks in the allocator's per-thread caches.
#[derive(Clone)]
pub struct PasswordHashing {
    params: HashParams,
    argon: Argon2<'static>,
    jobs: Sender<Job>,
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

fn worker(jobs: Receiver<Job>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        match jobs.recv_timeout(IDLE_RELEASE) {
            Ok(job) => job(&mut memory),
            Err(RecvTimeoutError::Timeout) => memory = Vec::new(),
            // Every PasswordHashing handle is gone.
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Computes the argon2 output for `password` and `salt` into a buffer of `out_len` bytes,
/// growing the worker's memory when the parameters need more.
fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out_len: usize,
    memory: &mut Vec<Block>,
) -> Result<Output, HashError> {
    let blocks = params.block_count();
    if memory.capacity() < blocks {
        *memory = Vec::with_capacity(blocks.max(RESERVED_BLOCKS));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    Output::init_with(out_len, |out| {
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| HashError(e.to_string()))
}

fn phc_hash(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut salt);
    let output = compute(
        argon,
        params,
        password,
        &salt,
        Params::DEFAULT_OUTPUT_LEN,
        memory,
    )?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| HashError(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string; `Some(params_current)` when it matches.
fn check(
    stored: &str,
    password: &[u8],
    current: &Params,
    memory: &mut Vec<Block>,
) -> Result<Option<bool>, HashError> {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Ok(None);
    };
    let (Ok(algorithm), Some(expected), Some(salt)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed.hash,
        parsed.salt,
    ) else {
        return Ok(None);
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return Ok(None),
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return Ok(None);
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return Ok(None);
    }
    let Ok(params) = Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(expected.len()),
    ) else {
        return Ok(None);
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return Ok(None);
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let computed = compute(&argon, &params, password, salt, expected.len(), memory)?;
    // `Output`'s equality is constant-time.
    if computed != expected {
        return Ok(None);
    }
    let current = algorithm == Algorithm::Argon2id
        && version == Version::V0x13
        && params.m_cost() == current.m_cost()
        && params.t_cost() == current.t_cost()
        && params.p_cost() == current.p_cost()
        && expected.len() == Params::DEFAULT_OUTPUT_LEN;
    Ok(Some(current))
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
        if params.memory_kib > MAX_MEMORY_KIB {
            return Err(HashError(format!(
                "argon2 memory above {MAX_MEMORY_KIB} KiB"
            )));
        }
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError(format!("invalid argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p.clone());
        let (jobs, queue) = unbounded::<Job>();
        for i in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || worker(queue))
                .map_err(|e| HashError(format!("starting a hashing thread: {e}")))?;
        }
        // The decoy is computed here, once, with a buffer that is freed right after.
        let decoy = phc_hash(&argon, &p, crate::ids::new_id().as_bytes(), &mut Vec::new())?;
        Ok(PasswordHashing {
            params,
            argon,
            jobs,
            decoy: Arc::new(decoy),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let argon = self.argon.clone();
        let job: Job = Box::new(move |memory| {
            let _ = reply.send(work(&argon, memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError("hashing pool stopped".into()))?;
        answer
            .await
            .map_err(|_| HashError("a hashing thread failed".into()))
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = password.clone();
        self.run(move |argon, memory| {
            phc_hash(
                argon,
                argon.params(),
                password.expose_secret().as_bytes(),
                memory,
            )
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
        self.run(move |argon, memory| {
            let secret = password.expose_secret().as_bytes();
            match check(&stored, secret, argon.params(), memory)? {
                None => Ok(Verified::No),
                Some(_) if !known => Ok(Verified::No),
                Some(true) => Ok(Verified::Yes),
                Some(false) => {
                    phc_hash(argon, argon.params(), secret, memory).map(Verified::YesRehashed)
                }
            }
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

    #[test]
    fn password_policy() {
        let check = |p: String| check_policy("password", &SecretString::from(p));
        assert!(check("12345678".into()).is_ok());
        assert!(check("1234567".into()).is_err());
        assert!(check("short".into()).is_err());
        assert!(check("long enough".into()).is_ok());
        assert!(check("x".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(check("x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert_eq!(
            check("1".into())
                .expect_err("short")
                .details
                .expect("details")["field"],
            "password"
        );
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

    #[tokio::test]
    async fn hashes_interoperate_with_the_standard_argon2_api() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let pw = SecretString::from("interop password");
        let ours = cheap(1024);
        let stored = ours.hash(&pw).await.expect("hash");
        let parsed = PasswordHash::new(&stored).expect("PHC string");
        Argon2::default()
            .verify_password(b"interop password", &parsed)
            .expect("standard API verifies ours");

        let params = Params::new(1024, 1, 1, None).expect("params");
        let standard = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"interop password", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert_eq!(
            ours.verify(&pw, Some(&standard)).await.expect("verify"),
            Verified::Yes
        );
        // An argon2i hash still verifies, and is upgraded to argon2id.
        let legacy = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"interop password", &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string();
        assert!(
            matches!(ours.verify(&pw, Some(&legacy)).await.expect("verify"), Verified::YesRehashed(h) if h.starts_with("$argon2id$"))
        );
    }

    #[tokio::test]
    async fn many_hashes_at_once_all_complete() {
        let h = cheap(1024);
        let pw = SecretString::from("parallel");
        let stored = h.hash(&pw).await.expect("hash");
        let checks: Vec<_> = (0..16).map(|_| h.verify(&pw, Some(&stored))).collect();
        for outcome in futures_util::future::join_all(checks).await {
            assert_eq!(outcome.expect("verify"), Verified::Yes);
        }
    }
}
