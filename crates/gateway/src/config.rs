//! `[gateway]` settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use platform::limit::RateLimit;

/// How a request picks one of its service's healthy upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The next one in turn.
    RoundRobin,
    /// The one with the fewest requests waiting for its answer, ties in turn. The default:
    /// with equal upstreams it spreads like round-robin, and a slow or overloaded one gets
    /// fewer requests instead of its share of them.
    #[default]
    LeastOutstanding,
}

/// Settings of the gateway (`[gateway]` in `metatron.toml`, `METATRON_GATEWAY_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Upstreams per service: `/api/<service>/...` goes to one of `upstreams.<service>`
    /// (base URLs such as `http://127.0.0.1:3003`). `metatron serve --service gateway` adds
    /// the `[services] urls` entry of every service not listed; an empty list is not routed.
    pub upstreams: BTreeMap<String, Vec<String>>,
    /// How long connecting to an upstream may take; a refusing or unreachable upstream
    /// answers 503 within it.
    pub connect_timeout_ms: u64,
    /// How long an upstream may take to answer with its headers; then 504.
    pub request_timeout_ms: u64,
    /// Per-route request timeouts: path prefix → milliseconds (longest prefix wins).
    pub route_timeouts_ms: BTreeMap<String, u64>,
    /// Largest request body; larger ones answer 413.
    pub max_body_bytes: u64,
    /// Per-route body limits: path prefix → bytes (longest prefix wins).
    pub route_max_body_bytes: BTreeMap<String, u64>,
    /// How a request picks among the service's healthy upstreams.
    pub balance: Balance,
    /// Token bucket per client IP address.
    pub rate_limit_per_ip: RateLimit,
    /// Token bucket per tenant (from the verified access token).
    pub rate_limit_per_tenant: RateLimit,
    /// Origins allowed by CORS (`*` for any); empty disables CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Interval of the active health checks (`GET /ready` on each upstream); 0 turns
    /// them off (failures are then noticed by the circuit breakers alone).
    pub health_check_interval_ms: u64,
    /// Consecutive failures (connect errors, timeouts, 502/503/504) that open an
    /// upstream's circuit breaker.
    pub circuit_failure_threshold: u32,
    /// How long an open circuit stays open before one probe request is let through.
    pub circuit_open_ms: u64,
    /// Most retries of one idempotent request after a connect failure (each on another
    /// upstream).
    pub max_retries: u32,
    /// Retries allowed per second across all requests (token bucket, burst of the same
    /// size), so retries cannot multiply load during an outage.
    pub retry_budget_per_second: f64,
    /// The service whose upstreams publish the token keys
    /// (`GET /api/<auth_service>/.well-known/jwks.json`).
    pub auth_service: String,
    /// Least time between two key-set refreshes triggered by an unknown key id.
    pub jwks_refresh_min_interval_ms: u64,
    /// How long `GET /health` waits for one upstream's `/ready`.
    pub health_check_timeout_ms: u64,
    /// Threads serving connections, each with its own event loop and upstream connection
    /// pool; 0: one per CPU core.
    pub workers: usize,
    /// How long a kept-alive client connection may wait for its next request; then the
    /// gateway closes it.
    pub client_idle_timeout_ms: u64,
    /// How long a client may take to send a request's head, from its first byte; then 408
    /// and the connection closes.
    pub client_header_timeout_ms: u64,
    /// How long a client may take to accept the next piece of an answer (a slow reader
    /// holds an upstream connection too); then the connection closes.
    pub client_send_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Filled by the binary from `[services] urls` for every service not listed here.
            upstreams: BTreeMap::new(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 30_000,
            route_timeouts_ms: BTreeMap::new(),
            max_body_bytes: 1024 * 1024,
            route_max_body_bytes: BTreeMap::from([(
                "/api/crm/customers/import".to_string(),
                256 * 1024 * 1024,
            )]),
            balance: Balance::default(),
            // The all-in-one edge (`[http]`) has the same defaults: one behaviour in both
            // topologies.
            rate_limit_per_ip: RateLimit::PER_IP,
            rate_limit_per_tenant: RateLimit::PER_TENANT,
            cors_allowed_origins: Vec::new(),
            health_check_interval_ms: 2_000,
            circuit_failure_threshold: 5,
            circuit_open_ms: 5_000,
            max_retries: 2,
            retry_budget_per_second: 20.0,
            auth_service: "auth".to_string(),
            jwks_refresh_min_interval_ms: 5_000,
            health_check_timeout_ms: 1_000,
            workers: 0,
            client_idle_timeout_ms: 75_000,
            client_header_timeout_ms: 30_000,
            client_send_timeout_ms: 60_000,
        }
    }
}

/// Longest-prefix lookup in a per-route map.
fn by_route(map: &BTreeMap<String, u64>, path: &str) -> Option<u64> {
    map.iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, v)| *v)
}

impl Config {
    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The request timeout of `path`.
    pub fn request_timeout(&self, path: &str) -> Duration {
        Duration::from_millis(
            by_route(&self.route_timeouts_ms, path).unwrap_or(self.request_timeout_ms),
        )
    }

    /// How long a kept-alive client connection may wait for its next request.
    pub fn client_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.client_idle_timeout_ms)
    }

    /// How long a client may take to send a request's head.
    pub fn client_header_timeout(&self) -> Duration {
        Duration::from_millis(self.client_header_timeout_ms)
    }

    /// How long a client may take to accept the next piece of an answer.
    pub fn client_send_timeout(&self) -> Duration {
        Duration::from_millis(self.client_send_timeout_ms)
    }

    /// Threads serving connections: `workers`, or one per CPU core.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The body limit of `path`.
    pub fn max_body(&self, path: &str) -> u64 {
        by_route(&self.route_max_body_bytes, path).unwrap_or(self.max_body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut config = Config::default();
        config.route_timeouts_ms.insert("/api/crm".into(), 5);
        config.route_timeouts_ms.insert("/api/crm/deals".into(), 7);
        assert_eq!(config.request_timeout("/api/crm/deals/1").as_millis(), 7);
        assert_eq!(config.request_timeout("/api/crm/x").as_millis(), 5);
        assert_eq!(config.request_timeout("/api/auth").as_millis(), 30_000);
        assert_eq!(config.max_body("/api/crm/customers/import"), 256 << 20);
        assert_eq!(config.max_body("/api/crm/customers"), 1 << 20);
    }
}
