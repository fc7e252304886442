//! Keyed token buckets: the per-IP and per-tenant rate limits of the edge.
//!
//! One implementation for both topologies: the gateway applies them in front of the service
//! processes, and [`crate::http::edge`] in the all-in-one process, with the same defaults
//! and the same 429 answer ([`rate_limited`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// A token bucket: `per_second` requests refill continuously, up to `burst` at once.
/// `per_second = 0` switches the limit off; so does [`RateLimit::default`], which tests
/// and benchmarks use. The production defaults are [`RateLimit::PER_IP`] and
/// [`RateLimit::PER_TENANT`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::OFF
    }
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        per_second: 0.0,
        burst: 0,
    };

    /// Default per client address, in both topologies. Far above what a person or a
    /// well-behaved integration sends (a console page load is a handful of requests), so
    /// only floods meet it; it keeps one address from taking the whole machine.
    pub const PER_IP: RateLimit = RateLimit {
        per_second: 1_000.0,
        burst: 2_000,
    };

    /// Default per tenant (from a verified access token), in both topologies: room for
    /// many busy users of one tenant, while no tenant can starve the others.
    pub const PER_TENANT: RateLimit = RateLimit {
        per_second: 5_000.0,
        burst: 10_000,
    };

    /// Whether the limit applies.
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// Buckets above this many keys are swept of full (idle) ones, so a scan of many addresses
/// cannot grow the map without bound.
const SWEEP_ABOVE: usize = 50_000;

/// One token bucket per key (an IP address, a tenant id).
#[derive(Debug)]
pub struct Limiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq> Limiter<K> {
    /// Buckets of `limit`.
    pub fn new(limit: RateLimit) -> Limiter<K> {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the limit applies (callers skip working out the key when it does not).
    pub fn enabled(&self) -> bool {
        self.limit.enabled()
    }

    /// Takes a token for `key`; `Err(seconds)` says when to retry. The key is copied only
    /// when it has no bucket yet, so the steady state allocates nothing.
    pub fn check<Q>(&self, key: &Q) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.limit.enabled() {
            return Ok(());
        }
        let rate = self.limit.per_second;
        let capacity = f64::from(self.limit.burst.max(1));
        let now = Instant::now();
        // A poisoned lock (a panic while it was held, which the code below cannot do) fails
        // open: the limits protect capacity, they are not an access control.
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => {
                if buckets.len() > SWEEP_ABOVE {
                    buckets.retain(|_, b| {
                        b.tokens + now.duration_since(b.last).as_secs_f64() * rate < capacity
                    });
                }
                buckets.entry(key.to_owned()).or_insert(Bucket {
                    tokens: capacity,
                    last: now,
                })
            }
        };
        let available =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(capacity);
        bucket.last = now;
        if available >= 1.0 {
            bucket.tokens = available - 1.0;
            Ok(())
        } else {
            bucket.tokens = available;
            Err(((1.0 - available) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// What a rate limit counts, for the message of its 429 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Requests from one client address.
    Ip,
    /// Requests on behalf of one tenant.
    Tenant,
}

/// The 429 answer of an exhausted bucket, the same in both topologies:
/// `{"error":{"code":"rate_limited",...}}` with `Retry-After: <seconds>`.
pub fn rate_limited(scope: Scope, retry_after_secs: u64) -> Response {
    let message = match scope {
        Scope::Ip => "too many requests from this address; retry later",
        Scope::Tenant => "too many requests for this tenant; retry later",
    };
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        .with_retry_after(retry_after_secs)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter: Limiter<String> = Limiter::new(RateLimit {
            per_second: 0.5,
            burst: 2,
        });
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert_eq!(limiter.check("a"), Err(2));
        assert!(limiter.check("b").is_ok(), "keys are independent");
        let off: Limiter<String> = Limiter::new(RateLimit::default());
        assert!((0..100).all(|_| off.check("a").is_ok()));
    }

    #[test]
    fn address_keys_and_the_answer() {
        let limiter: Limiter<std::net::IpAddr> = Limiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(limiter.check(&ip).is_ok());
        let secs = limiter.check(&ip).expect_err("limited");
        let response = rate_limited(Scope::Ip, secs);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
