//! The sync section of BENCHMARKS.md (issue 5), from the `sync-*.json` results that
//! `bench/run.sh sync` (bench/sync.sh) writes: sync lag in-process and through NATS, the
//! CDX overview and tenant list with 10,000 tenants, and the audit chain's append and verify.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::crm_report::count;
use crate::read_json;
use crate::report::{field, table, text, Load, Row};

pub(crate) const START: &str = "<!-- bench:sync:start -->";
pub(crate) const END: &str = "<!-- bench:sync:end -->";
/// The run's facts; its presence marks a sync run.
pub(crate) const RUN_FILE: &str = "sync-run.json";

/// The goals of issue 5, in ms.
const LAG_GOAL_LOCAL_MS: f64 = 50.0;
const LAG_GOAL_NATS_MS: f64 = 200.0;
const TENANTS_GOAL_MS: f64 = 20.0;

/// The tenant-list loads: file label and table label.
const TENANT_LOADS: &[(&str, &str)] = &[
    ("overview", "`GET /api/cdx/overview`"),
    (
        "tenants-id",
        "`GET /api/cdx/tenants?limit=50` (creation order)",
    ),
    (
        "tenants-customers",
        "`GET /api/cdx/tenants?sort=-customers&limit=50`",
    ),
    ("tenants-name", "`GET /api/cdx/tenants?sort=name&limit=50`"),
];

/// The rows of one transport's sync-lag runs.
fn lag_rows(v: &Value, label: &str, goal_ms: f64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let runs = v
        .get("runs")
        .and_then(Value::as_array)
        .context("no runs in the sync-lag results")?;
    let reference = v.get("reference").context("no reference")?;
    for run in runs {
        // NaN (null in the JSON) when no event showed at all.
        let p99 = number(run, "/p99_ms");
        let unseen = field(run, "/unseen")?;
        let kept_up = run.get("kept_up").and_then(Value::as_bool) == Some(true);
        let (reference_text, reference_p99) = match reference.get("p99_ms") {
            Some(_) => (
                format!(
                    "{}: p50 {:.2} ms, p99 {:.2} ms",
                    text(reference, "/what"),
                    field(reference, "/p50_ms")?,
                    field(reference, "/p99_ms")?
                ),
                field(reference, "/p99_ms")?,
            ),
            None => (
                format!(
                    "outbox commit (begin to commit) in this run: p50 {:.2} ms, p99 {:.2} ms",
                    field(run, "/commit_p50_ms")?,
                    field(run, "/commit_p99_ms")?
                ),
                field(run, "/commit_p99_ms")?,
            ),
        };
        let backlog = if unseen > 0.0 {
            format!("; **{} events not shown**", count(unseen))
        } else if kept_up {
            "; kept up".to_string()
        } else {
            format!(
                "; **fell behind** (last event shown {:.0} ms after its commit)",
                field(run, "/drain_ms")?
            )
        };
        rows.push(Row {
            name: format!(
                "Sync lag, {label}, {} events/s",
                count(field(run, "/rate")?)
            ),
            measured: format!(
                "p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms ({} events at {:.0}/s{backlog})",
                number(run, "/p50_ms"),
                number(run, "/max_ms"),
                count(field(run, "/events")?),
                field(run, "/achieved_rate")?,
            ),
            reference: reference_text,
            ratio: format!("{:.0}× p99", p99 / reference_p99),
            goal: format!("p99 < {goal_ms:.0} ms"),
            met: Some(p99 < goal_ms && unseen == 0.0 && kept_up),
        });
    }
    Ok(())
}

/// The number at `pointer`, NaN when it is missing or null.
fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn latency(l: &Load) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        l.rate(),
        l.p50_ms,
        l.p99_ms
    )
}

/// Builds the sync section (markers included) from the results directory.
pub(crate) fn section(dir: &Path) -> anyhow::Result<(String, String)> {
    let load = |name: &str| {
        let file = format!("sync-{name}.json");
        Load::from_oha(&read_json(&dir.join(&file))?).context(file)
    };
    let run = read_json(&dir.join(RUN_FILE))?;
    let local = read_json(&dir.join("sync-lag-local.json"))?;
    let nats = read_json(&dir.join("sync-lag-nats.json"))?;
    let append = read_json(&dir.join("sync-audit-append.json"))?;
    let verify = read_json(&dir.join("sync-audit-verify.json"))?;
    let audit_read = read_json(&dir.join("sync-audit-read.json"))?;
    let health = load("health")?;
    let tenants = field(&run, "/tenants")?;

    let mut rows = Vec::new();
    lag_rows(&local, "in-process bus", LAG_GOAL_LOCAL_MS, &mut rows)?;
    lag_rows(&nats, "via NATS JetStream", LAG_GOAL_NATS_MS, &mut rows)?;

    let deep_label = format!(
        "`GET /api/cdx/tenants?sort=-customers&limit=50`, page {:.0} (keyset cursor)",
        field(&run, "/deep_pages")? + 1.0
    );
    let mut loads = vec![("health".to_string(), health)];
    for (file, label) in TENANT_LOADS
        .iter()
        .map(|(f, l)| (*f, l.to_string()))
        .chain([("tenants-deep", deep_label)])
    {
        let l = load(file)?;
        rows.push(Row {
            name: format!("{label}, {} tenants", count(tenants)),
            measured: latency(&l),
            reference: format!("`GET /health`: {}", latency(&health)),
            ratio: format!("{:.1}× p99", l.p99_ms / health.p99_ms),
            goal: format!("p99 < {TENANTS_GOAL_MS:.0} ms"),
            met: Some(l.p99_ms < TENANTS_GOAL_MS && l.other == 0 && l.errors == 0),
        });
        loads.push((file.to_string(), l));
    }

    let append_rate = field(&append, "/entries_per_sec")?;
    let plain_rate = field(&append, "/reference_entries_per_sec")?;
    let entries = field(&append, "/entries")?;
    rows.push(Row {
        name: format!(
            "Audit append, {} entries through CDX's consumer, audit and aggregates ({} per batch)",
            count(entries),
            count(field(&append, "/batch")?)
        ),
        measured: format!(
            "{append_rate:.0} entries/s ({:.1} s)",
            field(&append, "/seconds")?
        ),
        reference: format!(
            "{plain_rate:.0} rows/s: the same rows as plain multi-row `INSERT`s ({:.1} s)",
            field(&append, "/reference_seconds")?
        ),
        ratio: format!("{:.2}×", append_rate / plain_rate),
        goal: "—".into(),
        met: None,
    });
    let verify_secs = field(&verify, "/seconds")?;
    let read_secs = field(&audit_read, "/seconds")?;
    let valid = verify.get("valid").and_then(Value::as_bool) == Some(true);
    rows.push(Row {
        name: format!(
            "`metatron audit verify`, {} entries",
            count(field(&verify, "/entries")?)
        ),
        measured: format!(
            "{verify_secs:.2} s ({:.0} entries/s{})",
            field(&verify, "/entries")? / verify_secs,
            if valid { ", valid" } else { ", **not valid**" }
        ),
        reference: format!(
            "{read_secs:.2} s: one read in `seq` order with one SHA-256 per row \
             (`metatron-bench audit-read`)"
        ),
        ratio: format!("{:.1}×", verify_secs / read_secs),
        goal: "—".into(),
        met: None,
    });
    let table = table(&rows);

    let seconds = field(&run, "/seconds")?;
    let mut s = crate::report::open_section(
        START,
        "Issue 5 — sync lag, 10,000 tenants, audit chain",
        "bench/run.sh sync",
        &run,
    );
    crate::report::build_and_table(
        &mut s,
        &run,
        "-p metatron -p metatron-bench",
        Some(text(&run, "/nats")),
        &table,
    );
    let _ = writeln!(
        s,
        "- Sync lag: `metatron-bench sync-lag` opens the all-in-one platform (`metatron::App`, \
         every service on its SQLite database in a new data dir, relays and consumers running) \
         in its own process, loads the demo data, and commits `crm.customer.created` events \
         into the CRM's outbox at a fixed rate for {:.0} s per rate (open loop: the events due \
         are committed together, at most 256 per transaction, then the relay is woken, as a CRM \
         write does). The clock of an event starts when its transaction's commit returns and \
         stops at the end of the first read of the demo tenant's `customers` counter in CDX's \
         `tenant_summary` that includes it (reads about every {:.1} ms, so figures are upper \
         bounds by about that much). With NATS the relays publish to, and one durable consumer \
         per stream pulls from, the JetStream server at `{}` under a prefix of the run's own \
         (`bench<pid>`), whose streams are deleted afterwards. \"Kept up\": every event shown, \
         the last one within 1 s of its commit. The in-process reference is the emitter's own \
         commit of the outbox rows; the NATS reference is the round trip of one publish and its \
         ack, one at a time, {:.0} times (the relay keeps up to 64 publishes in flight).",
        field(&local, "/seconds")?,
        poll_interval(&local),
        text(&run, "/nats_url"),
        field(&nats, "/reference/samples")?,
    );
    let _ = writeln!(
        s,
        "- 10,000 tenants: `metatron serve --demo` on a new data dir; {} tenants created \
         through `POST /api/cdx/tenants` as the superadmin (`test`), {} with the demo tenant; \
         then, the server stopped, \
         `metatron-bench tenant-events` gives each tenant customers and companies through one \
         `crm.customers.imported` event each ({} customers in all), delivered to CDX's \
         aggregates. Then `metatron serve` on that data dir, and oha with {} connections for \
         {seconds:.0} s per URL as the superadmin. The deep page is reached by following \
         `next_cursor` {:.0} times, then that cursor is reused. Reference: `GET /health` on \
         the same server, which touches no database.",
        count(field(&run, "/tenants_created")?),
        count(tenants),
        count(field(&run, "/customers")?),
        text(&run, "/connections"),
        field(&run, "/deep_pages")?,
    );
    let _ = writeln!(
        s,
        "- Audit append: `metatron-bench audit-append` hands events (4 types, 20 tenants, 50 \
         users) to CDX's consumer (`Cdx::consumer().handle_batch`, the path of every event: \
         duplicate check, hash chain, multi-row `INSERT`s, a signed checkpoint every 1,000 \
         entries, the aggregates moved, one transaction per batch) on a new data dir; only \
         the appends are \
         timed. Reference: the same number of rows as plain `INSERT`s of 40 rows into \
         `audit_log` of another new CDX database, one transaction per batch, no hashing."
    );
    let _ = writeln!(
        s,
        "- Audit verify: `metatron audit verify --json --data-dir DIR` on that log, wall time \
         of the whole command (start, open, walk, report); {} checkpoints verified. Reference: \
         `metatron-bench audit-read` on the same file.",
        count(field(&verify, "/checkpoints")?)
    );
    crate::report::close_section(&mut s, &loads, &run, END);
    Ok((s, table))
}

/// The mean interval between counter reads over the runs of `v`, in ms.
fn poll_interval(v: &Value) -> f64 {
    let intervals: Vec<f64> = v
        .get("runs")
        .and_then(Value::as_array)
        .map(|runs| {
            runs.iter()
                .filter_map(|r| r.get("poll_interval_ms").and_then(Value::as_f64))
                .collect()
        })
        .unwrap_or_default();
    intervals.iter().sum::<f64>() / intervals.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_support::oha;

    fn lag_run(rate: u32, p99: f64, kept_up: bool) -> String {
        format!(
            r#"{{"rate": {rate}, "events": {}, "achieved_rate": {rate}, "p50_ms": 2.0,
                "p99_ms": {p99}, "max_ms": 90.0, "unseen": 0, "drain_ms": 3.0,
                "kept_up": {kept_up}, "commit_p50_ms": 0.1, "commit_p99_ms": 0.5,
                "poll_interval_ms": 1.1}}"#,
            rate * 5
        )
    }

    /// A results directory as `bench/run.sh sync` leaves it.
    fn results() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("written");
        };
        write(
            RUN_FILE,
            r#"{"command": "bench/run.sh sync", "commit": "abc", "rustc": "rustc 1",
                "load_generator": "oha 1", "nats": "nats 2", "nats_url": "nats://x:4222",
                "seconds": 10.0, "connections": "8", "deep_pages": 100, "tenants": 10001,
                "tenants_created": 10000, "customers": 25000000,
                "machine_busy_before": "x 1%", "date": "2026-01-01 00:00 UTC"}"#
                .into(),
        );
        write(
            "sync-lag-local.json",
            format!(
                r#"{{"seconds": 5.0, "runs": [{}, {}],
                    "reference": {{"what": "the emitter's own outbox commit"}}}}"#,
                lag_run(1000, 8.0, true),
                lag_run(10000, 60.0, true)
            ),
        );
        write(
            "sync-lag-nats.json",
            format!(
                r#"{{"seconds": 5.0, "runs": [{}, {}],
                    "reference": {{"what": "JetStream publish→ack round trip",
                                   "samples": 2000, "p50_ms": 0.1, "p99_ms": 0.4}}}}"#,
                lag_run(1000, 20.0, true),
                lag_run(10000, 150.0, false)
            ),
        );
        write("sync-health.json", oha(40_000.0, 0.2, 0.5));
        for (file, _) in TENANT_LOADS.iter().chain(&[("tenants-deep", "")]) {
            let p99 = if *file == "overview" { 25.0 } else { 4.0 };
            write(&format!("sync-{file}.json"), oha(900.0, 2.0, p99));
        }
        write(
            "sync-audit-append.json",
            r#"{"entries": 1000000, "batch": 256, "seconds": 20.0,
                "entries_per_sec": 50000.0, "reference_seconds": 5.0,
                "reference_entries_per_sec": 200000.0}"#
                .into(),
        );
        write(
            "sync-audit-verify.json",
            r#"{"seconds": 4.0, "entries": 1000000, "checkpoints": 1000, "valid": true}"#.into(),
        );
        write(
            "sync-audit-read.json",
            r#"{"seconds": 2.0, "entries": 1000000}"#.into(),
        );
        dir
    }

    #[test]
    fn renders_the_section() {
        let dir = results();
        let (section, table) = section(dir.path()).expect("rendered");
        assert!(section.starts_with(START) && section.ends_with(END));
        assert!(section.contains("## Issue 5"));
        // One row per transport and rate, five tenant loads, append and verify.
        assert_eq!(table.lines().count(), 2 + 4 + 5 + 2);
        assert!(
            table.contains("| Sync lag, in-process bus, 1,000 events/s | p50 2.0 ms, p99 8.0 ms")
        );
        assert!(table.contains("p99 < 50 ms | yes |"));
        // 60 ms in-process misses the goal; a NATS run that fell behind misses it too.
        assert!(table.contains("p99 60.0 ms") && table.contains("p99 < 50 ms | **no** |"));
        assert!(table.contains("**fell behind**") && table.contains("p99 < 200 ms | **no** |"));
        assert!(table.contains("JetStream publish→ack round trip: p50 0.10 ms, p99 0.40 ms"));
        assert!(table.contains("| `GET /api/cdx/overview`, 10,001 tenants |"));
        assert!(table.contains("page 101 (keyset cursor), 10,001 tenants"));
        assert!(table.contains("p99 < 20 ms | **no** |"));
        assert!(table.contains("| 50000 entries/s (20.0 s) |"));
        assert!(table.contains("| 4.00 s (250000 entries/s, valid) |"));
        assert!(section.contains("10,000 tenants created"));
        assert!(section.contains("Every answer of every load run was 2xx."));
    }
}
