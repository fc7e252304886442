//! The gateway section of BENCHMARKS.md (issue 4), from the `gateway-*.json` results that
//! `bench/run.sh gateway` (bench/gateway.sh) writes: each upstream loaded directly, through
//! Metatron's gateway, and through nginx both as a bare pass-through and doing the gateway's
//! header work, with the same connections and duration.

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

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The two nginx configurations the gateway is compared with: file label and table label.
const REFERENCES: [(&str, &str); 2] = [
    ("nginx", "nginx"),
    ("nginx-headers", "nginx with the gateway's headers"),
];

/// One upstream's loads, one per round, per path.
struct Paths {
    direct: Vec<Load>,
    gateway: Vec<Load>,
    /// Per [`REFERENCES`].
    nginx: [Vec<Load>; 2],
}

impl Paths {
    /// The rounds of `upstream` whose files end in `suffix` (`""`: under load, `"-1c"`: one
    /// connection).
    fn load(dir: &Path, upstream: &str, suffix: &str, rounds: usize) -> anyhow::Result<Paths> {
        let one = |via: &str| -> anyhow::Result<Vec<Load>> {
            (1..=rounds)
                .map(|round| {
                    let name = format!("gateway-{upstream}-{via}{suffix}-r{round}.json");
                    Load::from_oha(&read_json(&dir.join(&name))?).context(name)
                })
                .collect()
        };
        Ok(Paths {
            direct: one("direct")?,
            gateway: one("gateway")?,
            nginx: [one(REFERENCES[0].0)?, one(REFERENCES[1].0)?],
        })
    }
}

/// The medians of a path's rounds: req/s, p50 and p99 (ms), and the failures of all.
struct Medians {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: String,
}

impl Medians {
    fn of(loads: &[Load]) -> Medians {
        let failed: Vec<String> = loads
            .iter()
            .filter(|l| l.other + l.errors > 0)
            .map(Load::failures)
            .collect();
        Medians {
            rate: median(loads.iter().map(Load::rate).collect()),
            p50_ms: median(loads.iter().map(|l| l.p50_ms).collect()),
            p99_ms: median(loads.iter().map(|l| l.p99_ms).collect()),
            failures: if failed.is_empty() {
                "none".to_string()
            } else {
                failed.join("; ")
            },
        }
    }
}

fn us(ms: f64) -> String {
    format!("{:.0} µs", ms * 1000.0)
}

fn signed_us(ms: f64) -> String {
    format!("{:+.0} µs", ms * 1000.0)
}

fn row(s: &mut String, upstream: &str, path: &str, m: &Medians, direct: Option<&Medians>) {
    let added = direct.map_or("—".to_string(), |d| {
        format!(
            "{} / {}",
            signed_us(m.p50_ms - d.p50_ms),
            signed_us(m.p99_ms - d.p99_ms)
        )
    });
    let _ = writeln!(
        s,
        "| {upstream} | {path} | {:.0} | {} | {} | {added} | {} |",
        m.rate,
        us(m.p50_ms),
        us(m.p99_ms),
        m.failures
    );
}

/// Per round, `f(gateway, reference, direct)` (the reference: `nginx`, one of them); the
/// median and the range.
fn per_round(p: &Paths, nginx: &[Load], f: impl Fn(&Load, &Load, &Load) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = (0..p.direct.len())
        .map(|i| f(&p.gateway[i], &nginx[i], &p.direct[i]))
        .collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}

/// The share of CPU time the hypervisor took during the loads: "none" or "min–max %".
fn steal_range(dir: &Path, rounds: usize) -> anyhow::Result<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.starts_with("gateway-") && name.ends_with(".steal.json") {
            all.push(field(&read_json(&dir.join(&name))?, "/steal_pct")?);
        }
    }
    anyhow::ensure!(all.len() >= rounds, "steal figures are missing");
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(if max < 0.5 {
        "none".to_string()
    } else {
        format!("{min:.0}–{max:.0} %")
    })
}

/// User-space instructions per request of `via` (`gateway` or a [`REFERENCES`] label).
fn instructions(dir: &Path, via: &str) -> anyhow::Result<f64> {
    let v = read_json(&dir.join(format!("gateway-instructions-{via}.json")))?;
    Ok(field(&v, "/instructions")? / field(&v, "/requests")?)
}

/// Builds the generated section (markers included) and the printed summary.
pub(crate) fn section(dir: &Path) -> anyhow::Result<(String, String)> {
    let run = read_json(&dir.join(RUN_FILE))?;
    let seconds = field(&run, "/seconds")?;
    let rounds = field(&run, "/rounds")? as usize;
    let connections = text(&run, "/connections");

    let header = "| Upstream | Path | req/s | p50 | p99 | Added p50 / p99 vs direct | Failures |\n\
         |---|---|---|---|---|---|---|\n";
    let mut measured =
        format!("Under load ({connections} connections), medians of {rounds} rounds:\n\n{header}");
    let mut alone =
        format!("One connection (one request at a time), medians of {rounds} rounds:\n\n{header}");
    let mut goals = String::from(
        "| Upstream | Compared with | Gateway ÷ it, throughput: median of the rounds' ratios (goal ≥ 1.00) | Met | Added p50, one connection: gateway / it (goal ≤ 50 µs) | Met |\n\
         |---|---|---|---|---|---|\n",
    );
    for (label, name) in UPSTREAMS {
        let loaded = Paths::load(dir, label, "", rounds)?;
        let single = Paths::load(dir, label, "-1c", rounds)?;
        for (table, runs) in [(&mut measured, &loaded), (&mut alone, &single)] {
            let direct = Medians::of(&runs.direct);
            row(table, name, "direct", &direct, None);
            row(
                table,
                "",
                "Metatron gateway",
                &Medians::of(&runs.gateway),
                Some(&direct),
            );
            for ((_, path), nginx) in REFERENCES.iter().zip(&runs.nginx) {
                row(table, "", path, &Medians::of(nginx), Some(&direct));
            }
        }
        for ((_, reference), (loaded_nginx, single_nginx)) in REFERENCES
            .iter()
            .zip(loaded.nginx.iter().zip(&single.nginx))
        {
            let (ratio, low, high) =
                per_round(&loaded, loaded_nginx, |g, n, _| g.rate() / n.rate());
            let (added, ..) = per_round(&single, single_nginx, |g, _, d| g.p50_ms - d.p50_ms);
            let (nginx_added, ..) = per_round(&single, single_nginx, |_, n, d| n.p50_ms - d.p50_ms);
            let _ = writeln!(
                goals,
                "| {label} | {reference} | {ratio:.2}× (rounds: {low:.2}–{high:.2}×) | {} | {} / {} | {} |",
                yes_no(ratio >= 1.0),
                signed_us(added),
                signed_us(nginx_added),
                yes_no(added <= ADDED_P50_GOAL_MS),
            );
        }
    }
    let gateway = instructions(dir, "gateway")?;
    let mut work = String::from(
        "| Work per proxied request (static upstream, one connection) | Metatron gateway | Compared with | It | Gateway ÷ it |\n\
         |---|---|---|---|---|\n",
    );
    for (via, reference) in REFERENCES {
        let nginx = instructions(dir, via)?;
        let _ = writeln!(
            work,
            "| User-space instructions (callgrind) | {gateway:.0} | {reference} | {nginx:.0} | {:.2}× |",
            gateway / nginx
        );
    }
    let table = format!("{measured}\n{alone}\n{goals}\n{work}");

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
         run, every run against 127.0.0.1. The four paths of both upstreams are loaded in \
         turn (direct first; the three proxies in rotating order from round to round, so \
         that none always runs on the warmer or the cooler machine), and the whole \
         sequence is repeated {rounds} times: on this shared virtual \
         machine the cores' speed drifts by tens of percent within a minute (the hypervisor \
         took {} of the CPU time during the runs), so each figure is the median of its \
         rounds, and the proxies are compared by the median of their ratio within each \
         round. Latency is oha's, end to end. Under load it is mostly waiting for a core, so \
         the latency a proxy adds (the goal's \"added p50\") is taken from runs with one \
         connection for {:.0} s each: one request at a time, the extra hop's own cost.",
        steal_range(dir, rounds)?,
        field(&run, "/latency_seconds")?
    );
    let _ = writeln!(
        s,
        "- Work per request: each proxy in front of the static upstream under valgrind's \
         callgrind ({}), counting from after a warm-up of 300 requests over {} requests on \
         one connection (oha `-n`); the total of user-space instructions divided by the \
         requests. It does not depend on the machine's speed or load; kernel work (system \
         calls, the TCP stack) is not in it.",
        text(&run, "/valgrind_version"),
        text(&run, "/counted")
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
        "- nginx: the Debian package, `worker_processes auto` (1 and no master process under \
         callgrind), `access_log off`, an upstream block per service with `keepalive 64`, \
         `proxy_http_version 1.1` and `proxy_set_header Connection \"\"` (pooled upstream \
         connections, as the gateway keeps them). \"nginx\" passes requests through as they \
         are; \"nginx with the gateway's headers\" also does what the gateway does to every \
         request: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and \
         `X-Request-Id` to the upstream, the request id in the answer (`proxy_set_header`, \
         `add_header`). The gateway's work includes those headers (the issue asks for them), \
         so the second is the like-for-like reference and the first the stricter one."
    );
    let _ = writeln!(
        s,
        "- Everything shares the machine's cores: load generator, proxy and upstream. The \
         figures compare the proxies under the same handicap; they are not what either \
         reaches on dedicated cores. Machine load before each round: {}.",
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
    fn renders_the_section_from_the_medians_of_the_rounds() {
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write(
            RUN_FILE,
            r#"{"command":"bench/run.sh gateway","commit":"abc","rounds":3,"seconds":4,"latency_seconds":3,"connections":"32","balance":"least_outstanding","counted":"3000","valgrind_version":"valgrind-3.19.0"}"#,
        );
        for upstream in ["static", "auth"] {
            for round in 1..=3 {
                // Round 2 runs on a slower machine: the ratio within it still holds.
                let speed = if round == 2 { 0.5 } else { 1.0 };
                let loads = [
                    ("direct", 40_000.0, 0.7, 2.0, 9_000.0, 0.100, 0.2),
                    ("gateway", 20_000.0, 1.5, 4.0, 6_000.0, 0.140, 0.3),
                    ("nginx", 18_000.0, 1.6, 5.0, 6_500.0, 0.160, 0.3),
                    ("nginx-headers", 16_000.0, 1.7, 5.0, 6_200.0, 0.170, 0.3),
                ];
                for (via, rate, p50, p99, rate_1c, p50_1c, p99_1c) in loads {
                    let base = format!("gateway-{upstream}-{via}");
                    write(
                        &format!("{base}-r{round}.json"),
                        &oha(rate * speed, p50, p99),
                    );
                    write(
                        &format!("{base}-1c-r{round}.json"),
                        &oha(rate_1c, p50_1c, p99_1c),
                    );
                    write(
                        &format!("{base}-r{round}.steal.json"),
                        r#"{"steal_pct": 7}"#,
                    );
                }
            }
        }
        write(
            "gateway-instructions-gateway.json",
            r#"{"requests": 3000, "instructions": 90000000}"#,
        );
        write(
            "gateway-instructions-nginx.json",
            r#"{"requests": 3000, "instructions": 54000000}"#,
        );
        write(
            "gateway-instructions-nginx-headers.json",
            r#"{"requests": 3000, "instructions": 75000000}"#,
        );
        let (section, table) = section(dir.path()).expect("section");
        assert!(section.starts_with(START) && section.ends_with(END));
        assert!(section.contains("took 7–7 % of the CPU time"), "{section}");
        assert!(table.contains("| 20000 | 1500 µs | 4000 µs | +800 µs / +2000 µs | none |"));
        assert!(table.contains("| 6000 | 140 µs | 300 µs | +40 µs / +100 µs | none |"));
        assert!(
            table.contains(
                "| static | nginx | 1.11× (rounds: 1.11–1.11×) | yes | +40 µs / +60 µs | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| static | nginx with the gateway's headers | 1.25× (rounds: 1.25–1.25×) | yes | +40 µs / +70 µs | yes |"
            ),
            "{table}"
        );
        assert!(table.contains("| 16000 | 1700 µs | 5000 µs | +1000 µs / +3000 µs | none |"));
        assert!(table
            .contains("| User-space instructions (callgrind) | 30000 | nginx | 18000 | 1.67× |"));
        assert!(table.contains(
            "| User-space instructions (callgrind) | 30000 | nginx with the gateway's headers | 25000 | 1.20× |"
        ));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
