//! The CRM section of BENCHMARKS.md (issue 3), from the `crm-*.json` results that
//! `bench/run.sh crm` writes.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::read_json;
use crate::report::{field, table, text, Load, Row};

pub(crate) const START: &str = "<!-- bench:crm:start -->";
pub(crate) const END: &str = "<!-- bench:crm:end -->";
/// The run's facts; its presence marks a CRM run.
pub(crate) const RUN_FILE: &str = "crm-run.json";

/// The scale points of the list-latency benchmark: file label and table label.
const SCALES: &[(&str, &str)] = &[("10k", "10k"), ("100k", "100k"), ("1m", "1M")];

/// The goals of issue 3.
const READ_GOAL: f64 = 20_000.0;
const IMPORT_GOAL: f64 = 50_000.0;
const CREATE_GOAL: f64 = 5_000.0;
const FLAT_GOAL: f64 = 2.0;

fn latency(l: &Load) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        l.rate(),
        l.p50_ms,
        l.p99_ms
    )
}

fn raw(v: &Value, rate: &str, unit: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{:.0} {unit} (p50 {:.2} ms, p99 {:.2} ms)",
        field(v, rate)?,
        field(v, "/p50_ms")?,
        field(v, "/p99_ms")?
    ))
}

/// Thousands separated by commas, for counts of rows.
pub(crate) fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The results of one backend's HTTP runs and their raw references.
struct Backend {
    name: &'static str,
    read: Load,
    raw_read: Value,
    list: Load,
    raw_list: Value,
    create: Load,
    raw_insert: Value,
}

impl Backend {
    fn load(dir: &Path, prefix: &str, name: &'static str) -> anyhow::Result<Backend> {
        let load = |file: &str| {
            let file = format!("crm-{prefix}-{file}.json");
            Load::from_oha(&read_json(&dir.join(&file))?).context(file)
        };
        let json = |file: &str| read_json(&dir.join(format!("crm-{prefix}-{file}.json")));
        Ok(Backend {
            name,
            read: load("read")?,
            raw_read: json("raw-read")?,
            list: load("list")?,
            raw_list: json("raw-list")?,
            create: load("create")?,
            raw_insert: json("raw-insert")?,
        })
    }

    /// Rows of the read, list and create benchmarks. `goals`: the SQLite goals apply.
    fn rows(&self, goals: bool, health: Option<&Load>) -> anyhow::Result<Vec<Row>> {
        let raw_read = field(&self.raw_read, "/queries_per_sec")?;
        let raw_list = field(&self.raw_list, "/queries_per_sec")?;
        let raw_insert = field(&self.raw_insert, "/transactions_per_sec")?;
        let mut read_reference = format!(
            "raw `SELECT` of one customer: {}",
            raw(&self.raw_read, "/queries_per_sec", "queries/s")?
        );
        if let Some(h) = health {
            let _ = write!(
                read_reference,
                "; `GET /health` (hello world): {}",
                latency(h)
            );
        }
        let mut read_ratio = format!("{:.2}× raw", self.read.rate() / raw_read);
        if let Some(h) = health {
            let _ = write!(read_ratio, ", {:.2}× /health", self.read.rate() / h.rate());
        }
        Ok(vec![
            Row {
                name: format!("`GET /api/crm/customers/{{id}}`, {}", self.name),
                measured: latency(&self.read),
                reference: read_reference,
                ratio: read_ratio,
                goal: if goals {
                    "≥ 20,000 req/s".into()
                } else {
                    "—".into()
                },
                met: goals.then(|| self.read.rate() >= READ_GOAL),
            },
            Row {
                name: format!("`GET /api/crm/customers?limit=50`, {}", self.name),
                measured: latency(&self.list),
                reference: format!(
                    "raw `SELECT` of the page (51 rows): {}",
                    raw(&self.raw_list, "/queries_per_sec", "queries/s")?
                ),
                ratio: format!("{:.2}× raw", self.list.rate() / raw_list),
                goal: "—".into(),
                met: None,
            },
            Row {
                name: format!("`POST /api/crm/customers`, {}", self.name),
                measured: latency(&self.create),
                reference: format!(
                    "raw `INSERT`, one row per transaction: {}",
                    raw(&self.raw_insert, "/transactions_per_sec", "transactions/s")?
                ),
                ratio: format!("{:.2}× raw", self.create.rate() / raw_insert),
                goal: if goals {
                    "≥ 5,000/s".into()
                } else {
                    "—".into()
                },
                met: goals.then(|| self.create.rate() >= CREATE_GOAL),
            },
        ])
    }
}

/// An import timed by `bench/run.sh`: rows created per second.
fn import_figures(v: &Value) -> anyhow::Result<(f64, f64, f64)> {
    let created = field(v, "/created")?;
    let seconds = field(v, "/seconds")?;
    Ok((created / seconds, created, seconds))
}

/// The scale rows: first and deep page at each size, against the smallest.
/// A load run with the name the notes give it.
type Named = (String, Load);

fn scale_rows(dir: &Path, run: &Value) -> anyhow::Result<(Vec<Row>, Vec<Named>)> {
    let deep_pages = field(run, "/deep_pages")?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (kind, title) in [
        ("first", "List, first page (`limit=50`)".to_string()),
        (
            "deep",
            format!(
                "List, page {:.0} (`limit=50`, its cursor reused)",
                deep_pages + 1.0
            ),
        ),
    ] {
        let mut base: Option<Load> = None;
        let mut base_label = "";
        for (file, label) in SCALES {
            let facts = read_json(&dir.join(format!("crm-scale-{file}.json")))?;
            let name = format!("crm-scale-{file}-{kind}.json");
            let load = Load::from_oha(&read_json(&dir.join(&name))?).context(name)?;
            let customers = field(&facts, "/customers")?;
            let measured = format!(
                "p50 {:.2} ms, p99 {:.2} ms ({:.0} req/s)",
                load.p50_ms,
                load.p99_ms,
                load.rate()
            );
            let mut row_name = format!("{title}, {} customers, SQLite", count(customers));
            if let Some(mib) = facts.get("db_bytes").and_then(Value::as_f64) {
                let _ = write!(row_name, " ({:.0} MiB file)", mib / 1024.0 / 1024.0);
            }
            notes.push((format!("scale {label} {kind}"), load));
            match base {
                None => {
                    rows.push(Row {
                        name: row_name,
                        measured,
                        reference: "—".into(),
                        ratio: "—".into(),
                        goal: "—".into(),
                        met: None,
                    });
                    base = Some(load);
                    base_label = label;
                }
                Some(b) => {
                    let (r50, r99) = (load.p50_ms / b.p50_ms, load.p99_ms / b.p99_ms);
                    rows.push(Row {
                        name: row_name,
                        measured,
                        reference: format!(
                            "p50 {:.2} ms, p99 {:.2} ms at {base_label}",
                            b.p50_ms, b.p99_ms
                        ),
                        ratio: format!("p50 {r50:.2}×, p99 {r99:.2}×"),
                        goal: format!("≤ {FLAT_GOAL:.0}× of {base_label}"),
                        met: Some(r50 <= FLAT_GOAL && r99 <= FLAT_GOAL),
                    });
                }
            }
        }
    }
    Ok((rows, notes))
}

/// Builds the CRM section (markers included) from the results directory.
pub(crate) fn section(dir: &Path) -> anyhow::Result<(String, String)> {
    let run = read_json(&dir.join(RUN_FILE))?;
    let seconds = field(&run, "/seconds")?;
    let connections = text(&run, "/connections");
    let create_connections = match text(&run, "/create_connections").as_str() {
        "" | "?" => connections.clone(),
        n => n.to_string(),
    };
    let health = Load::from_oha(&read_json(&dir.join("crm-sqlite-health.json"))?)
        .context("crm-sqlite-health.json")?;
    let sqlite = Backend::load(dir, "sqlite", "SQLite")?;
    let pg_url = run.get("postgres").and_then(Value::as_str);
    let pg = match pg_url {
        Some(_) => Some(Backend::load(dir, "pg", "PostgreSQL")?),
        None => None,
    };
    let import = read_json(&dir.join("crm-import.json"))?;
    let python = read_json(&dir.join("crm-import-python.json"))?;
    let (import_rate, import_rows, import_secs) = import_figures(&import)?;
    let python_rate = field(&python, "/rows_per_sec")?;

    let mut rows = sqlite.rows(true, Some(&health))?;
    if let Some(pg) = &pg {
        rows.extend(pg.rows(false, None)?);
    }
    rows.push(Row {
        name: format!(
            "CSV import of {} rows (`POST /api/crm/customers/import`), SQLite",
            count(field(&import, "/rows")?)
        ),
        measured: format!(
            "{import_rate:.0} rows/s ({} created in {import_secs:.2} s)",
            count(import_rows)
        ),
        reference: format!(
            "{python_rate:.0} rows/s: Python `sqlite3`, `executemany` in one transaction \
             ({:.2} s)",
            field(&python, "/seconds")?
        ),
        ratio: format!("{:.2}×", import_rate / python_rate),
        goal: "≥ 50,000 rows/s".into(),
        met: Some(import_rate >= IMPORT_GOAL),
    });
    if pg.is_some() {
        let pg_import = read_json(&dir.join("crm-pg-import.json"))?;
        let (rate, created, secs) = import_figures(&pg_import)?;
        rows.push(Row {
            name: format!(
                "CSV import of {} rows, PostgreSQL",
                count(field(&pg_import, "/rows")?)
            ),
            measured: format!(
                "{rate:.0} rows/s ({} created in {secs:.2} s)",
                count(created)
            ),
            reference: format!("{import_rate:.0} rows/s on SQLite"),
            ratio: format!("{:.2}×", rate / import_rate),
            goal: "—".into(),
            met: None,
        });
    }
    let (scale, scale_notes) = scale_rows(dir, &run)?;
    rows.extend(scale);
    let table = table(&rows);

    let mut s = crate::report::open_section(START, "Issue 3 — CRM", "bench/run.sh crm", &run);
    crate::report::build_and_table(
        &mut s,
        &run,
        "-p metatron",
        pg_url.map(|_| text(&run, "/postgres_version")),
        &table,
    );
    let _ = writeln!(
        s,
        "- Server: `metatron serve --demo --bind 127.0.0.1 --port {}` on an empty data dir, \
         `METATRON_LOG=warn`; requests as `john.doe@demo.com` (tenant `demo`, role user) with \
         the bearer token of one login. Load: {connections} connections for {seconds:.0} s \
         per run.",
        text(&run, "/port")
    );
    let _ = writeln!(
        s,
        "- Import: a generated CSV (`first_name,last_name,email,phone,status,tags`, unique \
         emails, tags on 3 rows of 5) sent in one `POST` with `Content-Type: text/csv` to the \
         fresh demo tenant, timed by curl (upload to answer; the answer's `created` count is \
         the figure). Reference: Python {} `sqlite3` (SQLite {}) reading the same file and \
         inserting the same rows (customers with their name and email keys, tag rows) with \
         `executemany` in one transaction into an empty `crm.db` made by `metatron migrate`, \
         WAL and `synchronous = NORMAL` as the server.",
        text(&python, "/python"),
        text(&python, "/sqlite")
    );
    let _ = writeln!(
        s,
        "- Read and list: after that import the tenant has {} customers on SQLite{}. \
         `GET /api/crm/customers/{{id}}` reads one of them again and again; the list is the \
         first page, newest first. Reference: `metatron-bench raw-read`, the same `SELECT` \
         (the server's SQL, company name joined, every column decoded) on the same database \
         through sqlx's `Any` driver, {connections} connections for {seconds:.0} s, while the \
         server idles; and `GET /health`, which touches no database.",
        count(field(&run, "/customers_sqlite")?),
        match pg_url {
            Some(_) => format!(
                " and {} on PostgreSQL",
                count(field(&run, "/customers_pg").unwrap_or(0.0))
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "- Creates: `POST /api/crm/customers` with `{{\"first_name\": \"Bench\"}}` (no email, \
         so every request creates a customer), {create_connections} connections: concurrent \
         creates share a transaction (group commit). Reference: `metatron-bench raw-insert`, \
         one row per `BEGIN; INSERT; COMMIT` into the same table ({create_connections} tasks; \
         on SQLite through one connection, as the server's single writer)."
    );
    match pg_url {
        Some(url) => {
            let _ = writeln!(
                s,
                "- PostgreSQL: the same server with `METATRON_CDX_DATABASE_URL`, \
                 `METATRON_AUTH_DATABASE_URL` and `METATRON_CRM_DATABASE_URL` set to new \
                 databases `{url}/bench_<service>_<pid>` (created and migrated by the server, \
                 dropped at the end), filled with the same import, then `ANALYZE`d."
            );
        }
        None => {
            let _ = writeln!(
                s,
                "- PostgreSQL: not measured (no server answered at `{}`).",
                text(&run, "/postgres_tried")
            );
        }
    }
    let _ = writeln!(
        s,
        "- List latency by size: one more server on a new data dir (SQLite), the demo tenant \
         grown by CSV imports (at most 100,000 rows per request) to each size; the first page \
         and page {:.0} (reached by following `next_cursor` {:.0} times, then that cursor \
         reused), {} for {seconds:.0} s each. Met when p50 and p99 stay within \
         {FLAT_GOAL:.0}× of the smallest size.",
        field(&run, "/deep_pages")? + 1.0,
        field(&run, "/deep_pages")?,
        match text(&run, "/scale_connections").as_str() {
            "1" => "1 connection".to_string(),
            n => format!("{n} connections"),
        }
    );
    let mut loads = vec![
        ("health".to_string(), health),
        ("SQLite read".into(), sqlite.read),
        ("SQLite list".into(), sqlite.list),
        ("SQLite create".into(), sqlite.create),
    ];
    if let Some(pg) = &pg {
        loads.push(("PostgreSQL read".into(), pg.read));
        loads.push(("PostgreSQL list".into(), pg.list));
        loads.push(("PostgreSQL create".into(), pg.create));
    }
    loads.extend(scale_notes);
    crate::report::close_section(&mut s, &loads, &run, END);
    Ok((s, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_support::oha;

    fn raw(key: &str, rate: f64) -> String {
        format!(r#"{{"{key}": {rate}, "p50_ms": 0.1, "p99_ms": 0.5}}"#)
    }

    /// A results directory as `bench/run.sh crm` leaves it (`pg`: with PostgreSQL).
    fn results(pg: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("written");
        };
        let postgres = if pg {
            r#""postgres://p@h:5432""#
        } else {
            "null"
        };
        write(
            RUN_FILE,
            format!(
                r#"{{"command": "bench/run.sh crm", "commit": "abc", "rustc": "rustc 1",
                    "load_generator": "oha 1", "seconds": 10.0, "port": "38080",
                    "connections": "8", "scale_connections": "2", "deep_pages": 150,
                    "customers_sqlite": 100002, "customers_pg": 100002,
                    "postgres": {postgres}, "postgres_tried": "postgres://p@h:5432",
                    "postgres_version": "PostgreSQL 15", "machine_busy_before": "x 1%"}}"#
            ),
        );
        write("crm-sqlite-health.json", oha(30_000.0, 0.2, 0.6));
        let prefixes: &[&str] = if pg { &["sqlite", "pg"] } else { &["sqlite"] };
        for prefix in prefixes {
            write(&format!("crm-{prefix}-read.json"), oha(21_000.0, 0.3, 0.9));
            write(&format!("crm-{prefix}-list.json"), oha(3_000.0, 2.0, 5.0));
            write(&format!("crm-{prefix}-create.json"), oha(4_000.0, 1.5, 6.0));
            write(
                &format!("crm-{prefix}-raw-read.json"),
                raw("queries_per_sec", 60_000.0),
            );
            write(
                &format!("crm-{prefix}-raw-list.json"),
                raw("queries_per_sec", 6_000.0),
            );
            write(
                &format!("crm-{prefix}-raw-insert.json"),
                raw("transactions_per_sec", 9_000.0),
            );
        }
        let import = r#"{"rows": 100000, "created": 100000, "seconds": 1.6}"#;
        write("crm-import.json", import.into());
        if pg {
            write("crm-pg-import.json", import.into());
        }
        write(
            "crm-import-python.json",
            r#"{"rows_per_sec": 120000.0, "seconds": 0.83, "python": "3.11", "sqlite": "3.40"}"#
                .into(),
        );
        for (file, _) in SCALES {
            write(
                &format!("crm-scale-{file}.json"),
                r#"{"customers": 10002, "deep_pages": 150}"#.into(),
            );
            let p99 = if *file == "1m" { 9.0 } else { 4.0 };
            write(
                &format!("crm-scale-{file}-first.json"),
                oha(900.0, 1.0, p99),
            );
            write(&format!("crm-scale-{file}-deep.json"), oha(800.0, 1.1, 4.0));
        }
        dir
    }

    #[test]
    fn renders_the_section_with_postgres() {
        let dir = results(true);
        let (section, table) = section(dir.path()).expect("rendered");
        assert!(section.starts_with(START) && section.ends_with(END));
        assert!(section.contains("## Issue 3 — CRM"));
        assert!(table.contains("| `GET /api/crm/customers/{id}`, SQLite | 21000 req/s"));
        assert!(table.contains("| ≥ 20,000 req/s | yes |"));
        assert!(table.contains("`POST /api/crm/customers`, PostgreSQL"));
        assert!(table.contains("| 62500 rows/s (100,000 created in 1.60 s)"));
        // p99 9 ms at 1M against 4 ms at 10k: more than 2×.
        assert!(table.contains("p50 1.00×, p99 2.25× | ≤ 2× of 10k | **no** |"));
        assert!(table.contains("p50 1.00×, p99 1.00× | ≤ 2× of 10k | yes |"));
        assert_eq!(table.lines().count(), 2 + 6 + 2 + 6);
    }

    #[test]
    fn renders_the_section_without_postgres() {
        let dir = results(false);
        let (section, table) = section(dir.path()).expect("rendered");
        assert!(!table.contains("PostgreSQL"));
        assert!(section.contains("PostgreSQL: not measured"));
        assert_eq!(table.lines().count(), 2 + 3 + 1 + 6);
        assert!(section.contains("Every answer of every load run was 2xx."));
        assert!(table.contains(
            "| List, page 151 (`limit=50`, its cursor reused), 10,002 customers, SQLite |"
        ));
    }

    #[test]
    fn counts_with_separators() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(10_002.0), "10,002");
        assert_eq!(count(1_000_002.0), "1,000,002");
    }
}
