//! The gateway section of BENCHMARKS.md (issue 4), from the `gateway-*.json` results that
//! `bench/run.sh gateway` (bench/gateway.sh) writes: each upstream loaded directly, through
//! Metatron's gateway and through nginx, with the same connections and duration.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::read_json;
use crate::report::{field, text, Load};

pub(crate) const START: &str = "<!-- bench:gateway:begin -->";
pub(crate) const END: &str = "<!-- bench:gateway:end -->";
/// The run's facts; its presence marks a gateway run.
pub(crate) const RUN_FILE: &str = "gateway-run.json";

/// The upstreams: file label and table label.
const UPSTREAMS: &[(&str, &str)] = &[
    (
        "static",
        "static 1 KiB answer (`metatron-bench static-upstream`)",
    ),
    (
        "auth",
        "`GET /api/auth/.well-known/jwks.json` of `metatron serve --demo`",
    ),
];

/// The goals of issue 4: at least nginx's throughput, at most this much added median.
const ADDED_P50_GOAL_MS: f64 = 0.050;

/// One upstream's three runs.
struct Runs {
    direct: Load,
    gateway: Load,
    nginx: Load,
}

impl Runs {
    /// The runs of `upstream` whose files end in `suffix` (`""`: under load, `"-1c"`: one
    /// connection).
    fn load(dir: &Path, upstream: &str, suffix: &str) -> anyhow::Result<Runs> {
        let one = |path: &str| {
            let name = format!("gateway-{upstream}-{path}{suffix}.json");
            Load::from_oha(&read_json(&dir.join(&name))?).context(name)
        };
        Ok(Runs {
            direct: one("direct")?,
            gateway: one("gateway")?,
            nginx: one("nginx")?,
        })
    }
}

fn us(ms: f64) -> String {
    format!("{:.0} µs", ms * 1000.0)
}

fn added(l: &Load, direct: &Load) -> String {
    format!(
        "{} / {}",
        signed_us(l.p50_ms - direct.p50_ms),
        signed_us(l.p99_ms - direct.p99_ms)
    )
}

fn signed_us(ms: f64) -> String {
    format!("{:+.0} µs", ms * 1000.0)
}

fn row(s: &mut String, upstream: &str, path: &str, l: &Load, direct: Option<&Load>) {
    let _ = writeln!(
        s,
        "| {upstream} | {path} | {:.0} | {} | {} | {} | {} |",
        l.rate(),
        us(l.p50_ms),
        us(l.p99_ms),
        direct.map_or("—".to_string(), |d| added(l, d)),
        if l.other + l.errors == 0 {
            "none".to_string()
        } else {
            l.failures()
        }
    );
}

/// Builds the generated section (markers included) and the printed summary.
pub(crate) fn section(dir: &Path) -> anyhow::Result<(String, String)> {
    let run = read_json(&dir.join(RUN_FILE))?;
    let seconds = field(&run, "/seconds")?;
    let connections = text(&run, "/connections");

    let header = "| Upstream | Path | req/s | p50 | p99 | Added p50 / p99 vs direct | Failures |\n\
         |---|---|---|---|---|---|---|\n";
    let mut measured = format!("Under load ({connections} connections):\n\n{header}");
    let mut alone = format!("One connection (one request at a time):\n\n{header}");
    let mut goals = String::from(
        "| Upstream | Gateway ÷ nginx throughput (goal ≥ 1.00) | Met | Added p50, one connection: gateway / nginx (goal ≤ 50 µs) | Met |\n\
         |---|---|---|---|---|\n",
    );
    for (label, name) in UPSTREAMS {
        let loaded = Runs::load(dir, label, "")?;
        let single = Runs::load(dir, label, "-1c")?;
        for (table, runs) in [(&mut measured, &loaded), (&mut alone, &single)] {
            row(table, name, "direct", &runs.direct, None);
            row(
                table,
                "",
                "Metatron gateway",
                &runs.gateway,
                Some(&runs.direct),
            );
            row(table, "", "nginx", &runs.nginx, Some(&runs.direct));
        }
        let ratio = loaded.gateway.rate() / loaded.nginx.rate();
        let added_p50 = single.gateway.p50_ms - single.direct.p50_ms;
        let _ = writeln!(
            goals,
            "| {label} | {ratio:.2}× ({:.0} vs {:.0} req/s) | {} | {} / {} | {} |",
            loaded.gateway.rate(),
            loaded.nginx.rate(),
            yes_no(ratio >= 1.0),
            signed_us(added_p50),
            signed_us(single.nginx.p50_ms - single.direct.p50_ms),
            yes_no(added_p50 <= ADDED_P50_GOAL_MS),
        );
    }
    let table = format!("{measured}\n{alone}\n{goals}");

    let mut s =
        crate::report::open_section(START, "Issue 4 — gateway", "bench/run.sh gateway", &run);
    crate::report::build_and_table(
        &mut s,
        &run,
        "-p metatron -p metatron-bench",
        Some(text(&run, "/nginx_version")),
        &table,
    );
    let _ = writeln!(
        s,
        "- Load: oha, {connections} connections (HTTP/1.1 keep-alive) for {seconds:.0} s per \
         run, every run against 127.0.0.1; the three paths of one upstream are measured one \
         after the other with the same settings. Latency is oha's, end to end. Under load it \
         is mostly waiting for a core, so the latency a proxy adds (the goal's \"added p50\") \
         is taken from a second round of runs with one connection for {:.0} s each: one \
         request at a time, the extra hop's own cost.",
        field(&run, "/latency_seconds")?
    );
    let _ = writeln!(
        s,
        "- Upstreams: `metatron-bench static-upstream` (axum, 1 KiB `text/plain` to every \
         path) and `metatron serve --demo` (all-in-one, `METATRON_LOG=warn`)."
    );
    let _ = writeln!(
        s,
        "- Metatron gateway: `metatron serve --service gateway` (release build, \
         `METATRON_LOG=warn`), upstreams `static` and `auth`, balance `{}`, active health \
         checks every 2 s, **rate limits off** (per-IP and per-tenant: one client address \
         sends all the load, which is what the per-IP limit exists to refuse).",
        text(&run, "/balance")
    );
    let _ = writeln!(
        s,
        "- nginx: the Debian package, `worker_processes auto`, `access_log off`, an upstream \
         block per service with `keepalive 64`, `proxy_http_version 1.1` and \
         `proxy_set_header Connection \"\"` (pooled upstream connections, as the gateway \
         keeps them)."
    );
    let _ = writeln!(
        s,
        "- Everything shares the machine's cores: load generator, proxy and upstream. The \
         figures compare the proxies under the same handicap; they are not what either \
         reaches on dedicated cores. Machine load before each step: {}.",
        text(&run, "/machine_busy_before")
    );
    let _ = write!(s, "{END}");
    Ok((s, table))
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_support::oha;

    #[test]
    fn renders_the_section() {
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write(
            RUN_FILE,
            r#"{"command":"bench/run.sh gateway","commit":"abc","seconds":10,"latency_seconds":5,"connections":"32","balance":"least_outstanding"}"#,
        );
        for upstream in ["static", "auth"] {
            write(
                &format!("gateway-{upstream}-direct.json"),
                &oha(40_000.0, 0.7, 2.0),
            );
            write(
                &format!("gateway-{upstream}-gateway.json"),
                &oha(20_000.0, 1.5, 4.0),
            );
            write(
                &format!("gateway-{upstream}-nginx.json"),
                &oha(18_000.0, 1.6, 5.0),
            );
            write(
                &format!("gateway-{upstream}-direct-1c.json"),
                &oha(9_000.0, 0.100, 0.2),
            );
            write(
                &format!("gateway-{upstream}-gateway-1c.json"),
                &oha(6_000.0, 0.140, 0.3),
            );
            write(
                &format!("gateway-{upstream}-nginx-1c.json"),
                &oha(6_500.0, 0.160, 0.3),
            );
        }
        let (section, table) = section(dir.path()).expect("section");
        assert!(section.starts_with(START) && section.ends_with(END));
        assert!(table.contains("| 20000 | 1500 µs | 4000 µs | +800 µs / +2000 µs | none |"));
        assert!(table.contains("| 6000 | 140 µs | 300 µs | +40 µs / +100 µs | none |"));
        assert!(table
            .contains("| static | 1.11× (20000 vs 18000 req/s) | yes | +40 µs / +60 µs | yes |"));
    }
}
