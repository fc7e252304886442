//! Layered configuration: defaults, then `metatron.toml`, then `METATRON_*` environment
//! variables, then command-line flags. Unknown or invalid settings fail at start with a
//! message naming the setting (every settings struct denies unknown fields).
//!
//! Environment variables map onto the file's sections by prefix: `METATRON_PORT` is `port`,
//! `METATRON_AUTH_DATABASE_URL` is `[auth.database] url`, `METATRON_HTTP_BODY_LIMIT_BYTES` is
//! `[http] body_limit_bytes`.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::limit::RateLimit;

/// Loads a settings tree from the layers. `sections` lists the nested tables of the tree
/// (longest first, dotted, e.g. `auth.database`) so environment variables can be mapped onto
/// them; `overrides` are the command-line flags that were given.
pub fn load<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    sections: &[&str],
    overrides: impl Provider,
) -> Result<T, String> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if file.exists() {
            figment = figment.merge(Toml::file(file));
        }
    }
    let mut sections: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
    sections.sort_by_key(|s| std::cmp::Reverse(s.len()));
    figment = figment
        .merge(
            Env::prefixed("METATRON_")
                .map(move |key| env_key_to_path(key.as_str(), &sections).into()),
        )
        .merge(overrides);
    figment.extract::<T>().map_err(describe_error)
}

/// `auth_database_url` with section `auth.database` becomes `auth.database.url`.
fn env_key_to_path(key: &str, sections: &[String]) -> String {
    let key = key.to_ascii_lowercase();
    for section in sections {
        let prefix = format!("{}_", section.replace('.', "_"));
        if let Some(rest) = key.strip_prefix(&prefix) {
            return format!("{section}.{rest}");
        }
    }
    key
}

fn describe_error(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if path.is_empty() {
                format!("invalid setting{source}: {}", e.kind)
            } else {
                format!("invalid setting `{path}`{source}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Command-line flags as a figment layer: only the flags that were given override.
#[derive(Debug, Default)]
pub struct Overrides(Dict);

impl Overrides {
    /// An empty set of overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (dotted path) to `value` when the flag was given.
    pub fn set(mut self, key: &str, value: Option<impl Serialize>) -> Self {
        if let Some(value) = value {
            if let Ok(value) = figment::value::Value::serialize(value) {
                let mut parts = key.rsplit('.');
                let leaf = parts.next().unwrap_or(key);
                let mut entry = Dict::new();
                entry.insert(leaf.to_string(), value);
                let nested = parts.fold(entry, |inner, part| {
                    let mut outer = Dict::new();
                    outer.insert(part.to_string(), inner.into());
                    outer
                });
                merge_dict(&mut self.0, nested);
            }
        }
        self
    }
}

fn merge_dict(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(figment::value::Value::Dict(_, a)), figment::value::Value::Dict(_, b)) => {
                merge_dict(a, b)
            }
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flags")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// Database settings of one service (`[<service>.database]`). `Debug` masks the password.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; default `sqlite://<data_dir>/<service>.db`.
    /// A PostgreSQL URL may carry `?schema=NAME` to keep the service in its own schema.
    pub url: Option<String>,
    /// Pool size; defaults to `[database] max_connections`.
    pub max_connections: Option<u32>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(crate::db::mask_url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Settings shared by every service's pool (`[database]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolDefaults {
    /// Maximum connections per service pool (readers, on SQLite).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    pub acquire_timeout_ms: u64,
    /// SQLite `busy_timeout`: how long a statement waits on a lock held by another process.
    pub sqlite_busy_timeout_ms: u64,
}

impl Default for PoolDefaults {
    fn default() -> Self {
        PoolDefaults {
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
        }
    }
}

/// Limits of the HTTP edge (`[http]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest accepted request body; larger ones answer 413.
    pub body_limit_bytes: usize,
    /// A request still running after this answers 503 `request_timeout`.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Token bucket per client address (the TCP peer): `[http.rate_limit_per_ip]`,
    /// `METATRON_HTTP_RATE_LIMIT_PER_IP_PER_SECOND=0` switches it off. Same default as the
    /// gateway's.
    pub rate_limit_per_ip: RateLimit,
    /// Token bucket per tenant, keyed by the `tid` of a verified access token:
    /// `[http.rate_limit_per_tenant]`. Same default as the gateway's.
    pub rate_limit_per_tenant: RateLimit,
    /// Proxies (addresses or networks, `"10.0.0.7"`, `"10.0.0.0/8"`) whose
    /// `X-Forwarded-For` names the client: a request from one of them counts as coming
    /// from the address it names (audit trail, rate limits). Empty (the default): the TCP
    /// peer is the client.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// How long a client may take to send a request's head, and to start its next request
    /// on a kept-alive connection; then the connection closes.
    pub client_header_timeout_ms: u64,
    /// How long a client may take to accept the next piece of an answer (its receive
    /// window stays full); then the connection closes.
    pub client_send_timeout_ms: u64,
}

/// An address or network whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(ipnet::IpNet);

impl TrustedProxy {
    /// Whether `ip` is this proxy, or in this network.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(TrustedProxy)
            .map_err(|_| format!("`{s}` is neither an IP address nor a network such as 10.0.0.0/8"))
    }
}

impl From<std::net::IpAddr> for TrustedProxy {
    fn from(ip: std::net::IpAddr) -> Self {
        TrustedProxy(ip.into())
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TrustedProxy> for String {
    fn from(proxy: TrustedProxy) -> String {
        proxy.0.to_string()
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            rate_limit_per_ip: RateLimit::PER_IP,
            rate_limit_per_tenant: RateLimit::PER_TENANT,
            trusted_proxies: Vec::new(),
            client_header_timeout_ms: 30_000,
            client_send_timeout_ms: 60_000,
        }
    }
}

impl HttpSettings {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The time limits of a client connection.
    pub fn client_timeouts(&self) -> crate::http::ClientTimeouts {
        crate::http::ClientTimeouts {
            header: Duration::from_millis(self.client_header_timeout_ms),
            send: Duration::from_millis(self.client_send_timeout_ms),
        }
    }

    /// These settings for a service process behind the gateway: without the rate limits,
    /// which the gateway applies. There every peer is a gateway, so a per-IP bucket would
    /// throttle all clients together, and the tenant's requests are counted once already.
    pub fn behind_gateway(&self) -> HttpSettings {
        HttpSettings {
            rate_limit_per_ip: RateLimit::OFF,
            rate_limit_per_tenant: RateLimit::OFF,
            ..self.clone()
        }
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Tree {
        port: u16,
        data_dir: String,
        auth: Auth,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Auth {
        ttl: u32,
        database: DatabaseSettings,
    }

    impl PartialEq for DatabaseSettings {
        fn eq(&self, other: &Self) -> bool {
            self.url == other.url && self.max_connections == other.max_connections
        }
    }

    const SECTIONS: &[&str] = &["auth", "auth.database"];

    #[test]
    fn layers_apply_in_order_flags_env_file_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.toml", "port = 1\ndata_dir = \"file\"\n[auth]\nttl = 5\n")?;
            jail.set_env("METATRON_PORT", "2");
            jail.set_env("METATRON_AUTH_DATABASE_URL", "postgres://x/y");
            let tree: Tree = load(
                Some(Path::new("m.toml")),
                SECTIONS,
                Overrides::new()
                    .set("port", Some(3u16))
                    .set("auth.ttl", None::<u32>),
            )
            .map_err(figment::Error::from)?;
            assert_eq!(tree.port, 3, "flag beats env and file");
            assert_eq!(tree.data_dir, "file", "file beats defaults");
            assert_eq!(tree.auth.ttl, 5, "an absent flag does not override");
            assert_eq!(tree.auth.database.url.as_deref(), Some("postgres://x/y"));
            Ok(())
        });
    }

    #[test]
    fn debug_output_masks_database_passwords() {
        let settings = DatabaseSettings {
            url: Some("postgres://app:s3cret@db/auth".into()),
            max_connections: None,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("app:***@db"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_settings_fail_naming_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("METATRON_PROT", "2");
            let err = load::<Tree>(None, SECTIONS, Overrides::new()).expect_err("must fail");
            assert!(err.contains("prot"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("METATRON_PORT", "many");
            let err = load::<Tree>(None, SECTIONS, Overrides::new()).expect_err("must fail");
            assert!(err.contains("`port`"), "{err}");
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct WithHttp {
        http: HttpSettings,
    }

    #[test]
    fn trusted_proxies_come_from_the_environment_and_bad_ones_are_named() {
        figment::Jail::expect_with(|jail| {
            // As `metatron up` passes them to its services.
            let proxies: Vec<TrustedProxy> = vec![
                "127.0.0.1".parse().map_err(|e: String| e)?,
                "10.0.0.0/8".parse().map_err(|e: String| e)?,
            ];
            let encoded = serde_json::to_string(&proxies).map_err(|e| e.to_string())?;
            jail.set_env("METATRON_HTTP_TRUSTED_PROXIES", &encoded);
            let tree: WithHttp = load(None, &["http"], Overrides::new())?;
            assert_eq!(tree.http.trusted_proxies, proxies);
            jail.set_env("METATRON_HTTP_TRUSTED_PROXIES", r#"["10.0.0.300"]"#);
            let err = load::<WithHttp>(None, &["http"], Overrides::new()).expect_err("must fail");
            assert!(err.contains("10.0.0.300"), "{err}");
            Ok(())
        });
    }
}
