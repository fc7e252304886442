//! The reference for login throughput: how many argon2id verifications per second this
//! machine does with the login's parameters, on every core, with nothing else in the way.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::json;

/// `metatron-bench argon2`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Threads hashing at once (0 = one per core, as the server's hashing pool).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// How long to hash, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Memory cost in KiB (the server's default, OWASP: 19456).
    #[arg(long, default_value_t = 19456)]
    pub memory_kib: u32,
    /// Iterations (OWASP: 2).
    #[arg(long, default_value_t = 2)]
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    #[arg(long, default_value_t = 1)]
    pub parallelism: u32,
}

const PASSWORD: &[u8] = b"demo123";

/// Runs the benchmark and returns its figures.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let params = Params::new(args.memory_kib, args.iterations, args.parallelism, None)
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    // A login verifies the password against the stored PHC string; verifying costs one
    // hash with the parameters written in that string, so the reference does the same.
    let salt =
        SaltString::encode_b64(b"metatron-bench-salt").map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let stored = argon
        .hash_password(PASSWORD, &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string();

    let duration = Duration::from_secs_f64(args.seconds);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let stored = stored.clone();
            std::thread::spawn(move || -> Result<(u64, Instant), String> {
                let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
                let verifier = Argon2::default();
                barrier.wait();
                let deadline = Instant::now() + duration;
                let mut done = 0u64;
                let mut last = Instant::now();
                while last < deadline {
                    verifier
                        .verify_password(PASSWORD, &parsed)
                        .map_err(|e| format!("verification failed: {e}"))?;
                    done += 1;
                    last = Instant::now();
                }
                Ok((done, last))
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut hashes = 0u64;
    let mut finished = started;
    for worker in workers {
        let (done, last) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?
            .map_err(anyhow::Error::msg)?;
        hashes += done;
        finished = finished.max(last);
    }
    let elapsed = finished.duration_since(started).as_secs_f64();
    Ok(json!({
        "benchmark": "argon2id-verify",
        "threads": threads,
        "memory_kib": args.memory_kib,
        "iterations": args.iterations,
        "parallelism": args.parallelism,
        "hashes": hashes,
        "seconds": elapsed,
        "hashes_per_sec": hashes as f64 / elapsed,
        "ms_per_hash_per_thread": elapsed * 1000.0 * threads as f64 / hashes.max(1) as f64,
    }))
}
