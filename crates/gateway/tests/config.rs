//! `[gateway]` through the platform's configuration layers (file and environment).
// figment::Jail's closures must return figment::Error, which is large by design.
#![allow(clippy::result_large_err)]

use std::path::Path;

use platform::config::{load, Overrides};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Tree {
    gateway: gateway::Config,
}

/// The sections `metatron`'s settings declare for the gateway.
const SECTIONS: &[&str] = &[
    "gateway",
    "gateway.upstreams",
    "gateway.rate_limit_per_ip",
    "gateway.rate_limit_per_tenant",
];

#[test]
fn file_and_environment_configure_the_gateway() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "m.toml",
            "[gateway]\nconnect_timeout_ms = 250\n[gateway.route_timeouts_ms]\n\"/api/crm/customers/import\" = 300000\n",
        )?;
        jail.set_env(
            "METATRON_GATEWAY_UPSTREAMS_CRM",
            r#"["http://10.0.0.5:3004", "http://10.0.0.6:3004"]"#,
        );
        jail.set_env("METATRON_GATEWAY_RATE_LIMIT_PER_IP_BURST", "5");
        jail.set_env("METATRON_GATEWAY_BALANCE", "round_robin");
        let tree: Tree = load(Some(Path::new("m.toml")), SECTIONS, Overrides::new())
            .map_err(figment::Error::from)?;
        let config = tree.gateway;
        assert_eq!(config.connect_timeout_ms, 250);
        assert_eq!(
            config.upstreams["crm"],
            ["http://10.0.0.5:3004", "http://10.0.0.6:3004"]
        );
        assert!(
            !config.upstreams.contains_key("auth"),
            "services not configured come from [services] urls"
        );
        assert_eq!(config.rate_limit_per_ip.burst, 5);
        assert_eq!(config.balance, gateway::Balance::RoundRobin);
        assert_eq!(
            gateway::Config::default().balance,
            gateway::Balance::LeastOutstanding
        );
        assert_eq!(
            config.rate_limit_per_ip.per_second,
            gateway::RateLimit::PER_IP.per_second,
            "defaults stay"
        );
        assert_eq!(
            config
                .request_timeout("/api/crm/customers/import")
                .as_secs(),
            300
        );
        assert!(gateway::Gateway::new(config, "metatron", "metatron").is_ok());
        Ok(())
    });
}

#[test]
fn unknown_settings_and_bad_urls_fail() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("METATRON_GATEWAY_CONECT_TIMEOUT_MS", "5");
        let err = load::<Tree>(None, SECTIONS, Overrides::new()).expect_err("must fail");
        assert!(err.contains("conect_timeout_ms"), "{err}");
        Ok(())
    });
    let mut config = gateway::Config::default();
    config
        .upstreams
        .insert("crm".into(), vec!["https://x:1".into()]);
    let err = gateway::Gateway::new(config, "i", "a").expect_err("https is refused");
    assert!(err.contains("gateway.upstreams.crm"), "{err}");
    let mut config = gateway::Config::default();
    config
        .upstreams
        .insert("crm".into(), vec!["not a url".into()]);
    assert!(gateway::Gateway::new(config, "i", "a").is_err());
}
