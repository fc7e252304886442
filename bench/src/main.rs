//! `metatron-bench`: the Rust half of the benchmark suite (`bench/run.sh` is the other).
//!
//! - `argon2`: the raw argon2id rate on this machine, the reference for login throughput.
//! - `startup`: time from spawning `metatron serve` to `/ready` = 200 on fresh databases.
//! - `idle-memory`: resident memory of an idle `metatron serve` after start.
//! - `raw-read`, `raw-insert`: the CRM's customer read, list page and create run straight
//!   against its database, the references of the CRM benchmarks.
//! - `csv`: customer files for the CRM import benchmarks.
//! - `static-upstream`: a server answering 1 KiB to everything, the upstream of the
//!   gateway benchmark (`bench/gateway.sh`).
//! - `sync-lag`: time from an event's commit to its effect in CDX's aggregates, all services
//!   in this process, through the in-process bus or NATS JetStream (`bench/sync.sh`).
//! - `tenant-events`: customers and companies for every tenant of a data directory.
//! - `audit-append`, `audit-read`: the audit chain's append rate next to plain inserts, and
//!   the reference of `metatron audit verify`.
//! - `report`: the summary tables, printed and written into BENCHMARKS.md.
//!
//! Every command prints one JSON object on standard output.

mod argon;
mod audit;
mod crm_report;
mod db;
mod gateway_report;
mod report;
mod server;
mod static_upstream;
mod sync;
mod sync_report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Benchmark helper of Metatron (run through `bench/run.sh`).
#[derive(Parser)]
#[command(name = "metatron-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verifies argon2id hashes on N threads for a fixed time; prints hashes/s.
    Argon2(argon::Args),
    /// Starts `metatron serve` on new empty data directories and times each start to `/ready`.
    Startup(server::StartupArgs),
    /// Starts `metatron serve` on a new data directory and reads its idle RSS.
    IdleMemory(server::MemoryArgs),
    /// Runs the CRM's customer read (or list page) against its database in a loop; prints
    /// queries/s.
    RawRead(db::ReadArgs),
    /// Inserts one customer row per transaction into the CRM's database; prints
    /// transactions/s.
    RawInsert(db::InsertArgs),
    /// Writes a CSV of customers with unique emails, for the import benchmarks.
    Csv(db::CsvArgs),
    /// Serves a fixed 1 KiB answer on every path until killed (the gateway benchmark's
    /// upstream).
    StaticUpstream(static_upstream::Args),
    /// Commits events into the CRM's outbox at fixed rates and times each one until CDX's
    /// aggregates show it; all services in this process, the in-process bus or NATS.
    SyncLag(sync::LagArgs),
    /// Gives every tenant of a stopped server's data directory customers and companies
    /// (through events, so CDX's aggregates have them).
    TenantEvents(sync::TenantEventsArgs),
    /// Appends audit entries through CDX's audit consumer, after plain inserts of the same
    /// rows into another database; prints entries/s of both.
    AuditAppend(audit::AppendArgs),
    /// Reads a CDX audit log in chain order with one SHA-256 per row; prints the time.
    AuditRead(audit::ReadArgs),
    /// Reads the results of a run, prints the summary tables and rewrites BENCHMARKS.md.
    Report(report::Args),
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Argon2(args) => print_json(&argon::run(&args)?),
        Command::Startup(args) => print_json(&server::startup(&args)?),
        Command::IdleMemory(args) => print_json(&server::idle_memory(&args)?),
        Command::RawRead(args) => print_json(&db::read(&args)?),
        Command::RawInsert(args) => print_json(&db::insert(&args)?),
        Command::Csv(args) => print_json(&db::csv(&args)?),
        Command::StaticUpstream(args) => static_upstream::run(&args),
        Command::SyncLag(args) => print_json(&sync::lag(&args)?),
        Command::TenantEvents(args) => print_json(&sync::tenant_events(&args)?),
        Command::AuditAppend(args) => print_json(&audit::append(&args)?),
        Command::AuditRead(args) => print_json(&audit::read(&args)?),
        Command::Report(args) => report::run(&args),
    }
}

/// A path as it should appear in messages.
fn shown(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Reads and parses a JSON file of the results directory.
fn read_json(path: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", shown(path)))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", shown(path)))
}
