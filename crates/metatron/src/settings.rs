//! The whole configuration tree (`metatron.toml`, `METATRON_*`, flags). See
//! docs/configuration.md for every setting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use platform::config::{self, DatabaseSettings, HttpSettings, Overrides, PoolDefaults};
use platform::events::nats::EventSettings;
use platform::password::HashParams;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Port of the all-in-one listener.
    pub port: u16,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Where SQLite databases live (one file per service).
    pub data_dir: PathBuf,
    /// Log filter, e.g. `info` or `metatron=debug,sqlx=warn`.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// HTTP limits.
    pub http: HttpSettings,
    /// Pool defaults for every service database.
    pub database: PoolDefaults,
    /// Password hashing (argon2id) for superadmins and tenant users.
    pub password: HashParams,
    /// Event transport between services (in-process bus or NATS JetStream).
    pub events: EventSettings,
    /// The CDX master registry.
    pub cdx: cdx::Config,
    /// The auth service.
    pub auth: auth::Config,
    /// The CRM.
    pub crm: crm::Config,
    /// The gateway (`metatron serve --service gateway`).
    pub gateway: gateway::Config,
    /// The distributed topology: where each service listens and the secret they share.
    pub services: ServicesSettings,
}

/// `[services]`: how the processes of the distributed topology find and trust each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesSettings {
    /// Secret shared by every service process (at least 32 bytes), keying the service
    /// tokens of calls between services. Required by `serve --service`; `metatron up`
    /// creates one in the data directory when none is set.
    #[serde(skip_serializing)]
    pub secret: Option<SecretString>,
    /// Base URL of each service as the other services reach it; `serve --service NAME`
    /// listens on the port of its own URL unless `--port` is given.
    pub urls: BTreeMap<String, String>,
    /// How long a call to another service may take.
    pub call_timeout_ms: u64,
}

impl Default for ServicesSettings {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        ServicesSettings {
            secret: None,
            urls: BTreeMap::from([
                ("cdx".to_string(), local(3001)),
                ("auth".to_string(), local(3003)),
                ("crm".to_string(), local(3004)),
            ]),
            call_timeout_ms: 5_000,
        }
    }
}

impl ServicesSettings {
    /// The base URL of `service`.
    pub fn url(&self, service: &str) -> Result<&str, String> {
        self.urls
            .get(service)
            .map(String::as_str)
            .ok_or_else(|| format!("no URL for service `{service}` in [services] urls"))
    }

    /// The timeout of calls between services.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 3000,
            bind: IpAddr::from([0, 0, 0, 0]),
            data_dir: PathBuf::from("./data"),
            log: "info".into(),
            log_format: LogFormat::Text,
            http: HttpSettings::default(),
            database: PoolDefaults::default(),
            password: HashParams::default(),
            events: EventSettings::default(),
            cdx: cdx::Config::default(),
            auth: auth::Config::default(),
            crm: crm::Config::default(),
            gateway: gateway::Config::default(),
            services: ServicesSettings::default(),
        }
    }
}

/// Nested tables of the tree, so that `METATRON_AUTH_DATABASE_URL` finds `[auth.database]`.
const SECTIONS: &[&str] = &[
    "http",
    "http.rate_limit_per_ip",
    "http.rate_limit_per_tenant",
    "database",
    "password",
    "events",
    "cdx",
    "cdx.database",
    "cdx.audit",
    "auth",
    "auth.database",
    "auth.throttle",
    "crm",
    "crm.database",
    "gateway",
    "gateway.upstreams",
    "gateway.rate_limit_per_ip",
    "gateway.rate_limit_per_tenant",
    "services",
    "services.urls",
];

impl Settings {
    /// Loads defaults < `file` (when it exists) < `METATRON_*` < `flags`.
    pub fn load(file: Option<&Path>, flags: Overrides) -> Result<Settings, String> {
        let settings: Settings = config::load(file, SECTIONS, flags)?;
        settings.check_timeouts()?;
        Ok(settings)
    }

    /// Refuses a timeout of 0 ms: it would not switch the limit off but be a limit of 0 ms
    /// (a login answers `request_timeout`, a kept-alive connection closes after each
    /// answer, an HTTP/2 connection is closed as idle before its first request).
    fn check_timeouts(&self) -> Result<(), String> {
        let (http, gateway) = (&self.http, &self.gateway);
        let named = [
            ("http.request_timeout_ms", http.request_timeout_ms),
            (
                "http.client_header_timeout_ms",
                http.client_header_timeout_ms,
            ),
            ("http.client_send_timeout_ms", http.client_send_timeout_ms),
            ("gateway.connect_timeout_ms", gateway.connect_timeout_ms),
            ("gateway.request_timeout_ms", gateway.request_timeout_ms),
            (
                "gateway.health_check_timeout_ms",
                gateway.health_check_timeout_ms,
            ),
            (
                "gateway.client_idle_timeout_ms",
                gateway.client_idle_timeout_ms,
            ),
            (
                "gateway.client_header_timeout_ms",
                gateway.client_header_timeout_ms,
            ),
            (
                "gateway.client_send_timeout_ms",
                gateway.client_send_timeout_ms,
            ),
        ]
        .map(|(name, ms)| (name.to_string(), ms));
        let routes = gateway
            .route_timeouts_ms
            .iter()
            .map(|(route, ms)| (format!("gateway.route_timeouts_ms.\"{route}\""), *ms));
        match named.into_iter().chain(routes).find(|(_, ms)| *ms == 0) {
            Some((name, _)) => Err(format!(
                "{name} must be at least 1 (milliseconds): 0 does not turn the timeout off"
            )),
            None => Ok(()),
        }
    }

    /// The database settings of each service, by name.
    pub fn service_databases(&self) -> [(&'static str, &DatabaseSettings); 3] {
        [
            ("cdx", &self.cdx.database),
            ("auth", &self.auth.database),
            ("crm", &self.crm.database),
        ]
    }
}
