//! The whole configuration tree (`metatron.toml`, `METATRON_*`, flags). See
//! docs/configuration.md for every setting.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use platform::config::{self, DatabaseSettings, HttpSettings, Overrides, PoolDefaults};
use platform::events::nats::EventSettings;
use platform::password::HashParams;
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
        }
    }
}

/// Nested tables of the tree, so that `METATRON_AUTH_DATABASE_URL` finds `[auth.database]`.
const SECTIONS: &[&str] = &[
    "http",
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
];

impl Settings {
    /// Loads defaults < `file` (when it exists) < `METATRON_*` < `flags`.
    pub fn load(file: Option<&Path>, flags: Overrides) -> Result<Settings, String> {
        config::load(file, SECTIONS, flags)
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
