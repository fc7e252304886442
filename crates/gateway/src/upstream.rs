//! Upstreams: their health (active checks and passive ejection), circuit breakers, the
//! choice among the available ones (round-robin or least outstanding requests), and the
//! retry budget.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use serde_json::{json, Value};

use crate::config::Balance;

/// State of one upstream's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Circuit {
    /// Requests flow.
    Closed,
    /// Requests are refused until the instant; then one probe is let through.
    Open(Instant),
    /// One probe request is in flight; its outcome closes or re-opens the circuit.
    HalfOpen,
}

/// One upstream base URL of a service.
#[derive(Debug)]
pub struct Upstream {
    /// The base URL as configured.
    pub url: String,
    /// The same, shared: what the access log names (no copy per request).
    pub(crate) label: Arc<str>,
    authority: Authority,
    /// The `Host` header requests to it carry.
    pub(crate) host: HeaderValue,
    /// Path prefix of the base URL, without a trailing `/`.
    prefix: String,
    /// Result of the last active health check.
    ready: AtomicBool,
    failures: AtomicU32,
    circuit: Mutex<Circuit>,
    /// Whether `circuit` is closed: a copy the checks of every request read without taking
    /// the lock (a lock is a write to memory both cores then pass back and forth). Changed
    /// only with the lock held, by [`Upstream::set_circuit`].
    closed: AtomicBool,
    /// Requests sent and waiting for the upstream's answer (its status and headers; a
    /// streamed body no longer counts): what least-outstanding balancing compares.
    pub in_flight: AtomicUsize,
}

/// Why an upstream was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No upstream is configured.
    NoneConfigured,
    /// Every upstream failed its health check or has an open circuit.
    NoneHealthy,
}

impl Upstream {
    /// Parses a base URL (`http://host:port[/prefix]`).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid upstream URL `{url}`: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream URL `{url}` needs a scheme (http://)"))?;
        if scheme != Scheme::HTTP {
            return Err(format!(
                "upstream URL `{url}`: only http:// upstreams are supported"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream URL `{url}` needs a host"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("upstream URL `{url}`: {e}"))?;
        Ok(Upstream {
            url: url.to_string(),
            label: Arc::from(url),
            authority,
            host,
            prefix: uri.path().trim_end_matches('/').to_string(),
            ready: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            circuit: Mutex::new(Circuit::Closed),
            closed: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Host and port to connect to.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The request target (origin form, as sent on the upstream connection) of
    /// `path_and_query` on this upstream.
    pub fn target(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
    }

    /// The same for a request's parsed `path_and_query`: without a base path it is reused
    /// as it is (shared, not copied).
    pub fn target_for(&self, path_and_query: &PathAndQuery) -> Result<Uri, http::Error> {
        if !self.prefix.is_empty() {
            return self.target(path_and_query.as_str());
        }
        Ok(Uri::from(path_and_query.clone()))
    }

    /// Records an active health check result.
    pub fn set_ready(&self, ready: bool) {
        let was = self.ready.swap(ready, Ordering::Relaxed);
        if was != ready {
            if ready {
                tracing::info!(upstream = %self.url, "upstream is ready again");
            } else {
                tracing::warn!(upstream = %self.url, "upstream failed its health check");
            }
        }
    }

    /// Whether the last health check passed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Takes this upstream for a request when its circuit lets one through; an open
    /// circuit past its cool-down turns half-open and lets exactly this request probe.
    fn try_acquire(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return true;
        }
        let Ok(mut circuit) = self.circuit.lock() else {
            return false;
        };
        match *circuit {
            Circuit::Closed => true,
            Circuit::HalfOpen => false,
            Circuit::Open(until) if Instant::now() >= until => {
                tracing::info!(upstream = %self.url, "circuit half-open: probing");
                self.set_circuit(&mut circuit, Circuit::HalfOpen);
                true
            }
            Circuit::Open(_) => false,
        }
    }

    /// Records a successful exchange: closes the circuit.
    pub fn success(&self) {
        // Written only when it changes: most requests succeed, and a write takes the
        // memory away from the other cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut circuit) = self.circuit.lock() {
            if *circuit != Circuit::Closed {
                tracing::info!(upstream = %self.url, "circuit closed");
                self.set_circuit(&mut circuit, Circuit::Closed);
            }
        }
    }

    /// Moves the circuit (locked as `circuit`) to `to`.
    fn set_circuit(&self, circuit: &mut Circuit, to: Circuit) {
        *circuit = to;
        self.closed.store(to == Circuit::Closed, Ordering::Relaxed);
    }

    /// Records a failure; opens the circuit after `threshold` in a row (at once when the
    /// failed request was the half-open probe).
    pub fn failure(&self, threshold: u32, open_for: Duration) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut circuit) = self.circuit.lock() {
            let open = match *circuit {
                Circuit::HalfOpen => true,
                Circuit::Closed => failures >= threshold.max(1),
                Circuit::Open(_) => false,
            };
            if open {
                tracing::warn!(upstream = %self.url, failures, "circuit open");
                self.set_circuit(&mut circuit, Circuit::Open(Instant::now() + open_for));
            }
        }
    }

    /// Hands back a half-open probe slot that was taken but not used.
    pub fn release_probe(&self) {
        if let Ok(mut circuit) = self.circuit.lock() {
            if *circuit == Circuit::HalfOpen {
                self.set_circuit(&mut circuit, Circuit::Open(Instant::now()));
            }
        }
    }

    /// Whether requests would be let through now (health check passed, circuit not open).
    pub fn available(&self) -> bool {
        self.is_ready()
            && (self.closed.load(Ordering::Relaxed)
                || match self.circuit.lock().map(|c| *c) {
                    Ok(Circuit::Closed) => true,
                    Ok(Circuit::Open(until)) => Instant::now() >= until,
                    _ => false,
                })
    }

    /// The upstream's state for `GET /health`.
    pub fn status(&self) -> Value {
        let circuit = match self.circuit.lock().map(|c| *c) {
            Ok(Circuit::Closed) => "closed",
            Ok(Circuit::Open(_)) => "open",
            Ok(Circuit::HalfOpen) => "half_open",
            Err(_) => "unknown",
        };
        json!({
            "url": self.url,
            "ready": self.is_ready(),
            "circuit": circuit,
            "in_flight": self.in_flight.load(Ordering::Relaxed),
        })
    }
}

/// The upstreams of one service.
#[derive(Debug)]
pub struct Pool {
    /// Service name.
    pub service: String,
    /// Its upstreams.
    pub upstreams: Vec<Arc<Upstream>>,
    balance: Balance,
    next: AtomicUsize,
}

impl Pool {
    /// A pool of `urls` for `service`, choosing among them by `balance`.
    pub fn new(service: &str, urls: &[String], balance: Balance) -> Result<Pool, String> {
        Ok(Pool {
            service: service.to_string(),
            upstreams: urls
                .iter()
                .map(|u| Upstream::parse(u).map(Arc::new))
                .collect::<Result<_, _>>()?,
            balance,
            next: AtomicUsize::new(0),
        })
    }

    /// Picks an upstream among those that are ready and whose circuit lets a request
    /// through, skipping the indexes in `tried`: the next in turn (round-robin), or the one
    /// with the fewest requests in flight, ties broken in turn (least outstanding).
    pub fn pick(&self, tried: &[usize]) -> Result<(usize, &Arc<Upstream>), Unavailable> {
        let n = self.upstreams.len();
        if n == 0 {
            return Err(Unavailable::NoneConfigured);
        }
        // (With one upstream there are no turns to take: no shared counter to write.)
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let in_turn = (0..n)
            .map(|i| (start + i) % n)
            .filter(|index| !tried.contains(index));
        match self.balance {
            Balance::RoundRobin => {
                for index in in_turn {
                    let upstream = &self.upstreams[index];
                    if upstream.is_ready() && upstream.try_acquire() {
                        return Ok((index, upstream));
                    }
                }
            }
            Balance::LeastOutstanding => {
                // Acquiring can change a circuit (open to half-open), so only the winner is
                // acquired; when it refuses (a concurrent request took its probe), the next
                // best is tried. The scan starts at the turn's index and keeps the first
                // minimum, which breaks ties round-robin.
                let mut refused: Vec<usize> = Vec::new();
                loop {
                    let best = in_turn
                        .clone()
                        .filter(|index| !refused.contains(index))
                        .filter(|&index| self.upstreams[index].available())
                        .min_by_key(|&index| {
                            self.upstreams[index].in_flight.load(Ordering::Relaxed)
                        });
                    let Some(index) = best else { break };
                    let upstream = &self.upstreams[index];
                    if upstream.try_acquire() {
                        return Ok((index, upstream));
                    }
                    refused.push(index);
                }
            }
        }
        Err(Unavailable::NoneHealthy)
    }

    /// Whether at least one upstream is available.
    pub fn ready(&self) -> bool {
        self.upstreams.iter().any(|u| u.available())
    }
}

/// A token bucket shared by all requests (the retry budget).
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    /// A full bucket of `rate` tokens refilled at `rate` per second.
    pub fn new(rate: f64) -> Budget {
        Budget {
            rate,
            state: Mutex::new((rate.max(0.0), Instant::now())),
        }
    }

    /// Takes one token when there is one.
    pub fn take(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_half_opens_and_closes() {
        let u = Upstream::parse("http://127.0.0.1:1/base/").expect("url");
        assert_eq!(
            u.target("/api/x?y=1").expect("uri").to_string(),
            "/base/api/x?y=1"
        );
        assert_eq!(u.host, "127.0.0.1:1");
        for _ in 0..3 {
            assert!(u.try_acquire());
            u.failure(3, Duration::from_millis(500));
        }
        assert!(!u.try_acquire(), "open");
        std::thread::sleep(Duration::from_millis(550));
        assert!(u.try_acquire(), "half-open probe");
        assert!(!u.try_acquire(), "only one probe");
        u.failure(3, Duration::from_millis(500));
        assert!(!u.try_acquire(), "re-opened by the failed probe");
        std::thread::sleep(Duration::from_millis(550));
        assert!(u.try_acquire());
        u.success();
        assert!(u.try_acquire() && u.try_acquire(), "closed");
    }

    fn three(balance: Balance) -> Pool {
        Pool::new(
            "x",
            &[
                "http://127.0.0.1:1".into(),
                "http://127.0.0.1:2".into(),
                "http://127.0.0.1:3".into(),
            ],
            balance,
        )
        .expect("pool")
    }

    #[test]
    fn both_balances_skip_tried_and_unready() {
        for balance in [Balance::RoundRobin, Balance::LeastOutstanding] {
            let pool = three(balance);
            pool.upstreams[1].set_ready(false);
            let picks: Vec<usize> = (0..4).map(|_| pool.pick(&[]).expect("pick").0).collect();
            assert!(!picks.contains(&1), "{balance:?} {picks:?}");
            assert!(picks.contains(&0) && picks.contains(&2), "{balance:?}");
            assert_eq!(pool.pick(&[0, 2]).err(), Some(Unavailable::NoneHealthy));
        }
    }

    #[test]
    fn least_outstanding_prefers_the_idle_and_rotates_ties() {
        let pool = three(Balance::LeastOutstanding);
        pool.upstreams[0].in_flight.store(5, Ordering::Relaxed);
        pool.upstreams[2].in_flight.store(1, Ordering::Relaxed);
        assert!((0..6).all(|_| pool.pick(&[]).expect("pick").0 == 1));
        assert_eq!(pool.pick(&[1]).expect("pick").0, 2, "next fewest");
        pool.upstreams[0].in_flight.store(0, Ordering::Relaxed);
        pool.upstreams[2].in_flight.store(0, Ordering::Relaxed);
        let picks: Vec<usize> = (0..3).map(|_| pool.pick(&[]).expect("pick").0).collect();
        assert!(
            picks.contains(&0) && picks.contains(&1) && picks.contains(&2),
            "{picks:?}"
        );
        // An open circuit is skipped however idle the upstream is.
        for _ in 0..5 {
            pool.upstreams[1].failure(5, Duration::from_secs(60));
        }
        assert!((0..4).all(|_| pool.pick(&[]).expect("pick").0 != 1));
    }

    #[test]
    fn budget_refills() {
        let budget = Budget::new(2.0);
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
    }
}
