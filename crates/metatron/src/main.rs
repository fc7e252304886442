//! `metatron`: parses the command line and calls into the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use metatron::settings::{LogFormat, Settings};
use platform::config::Overrides;

/// Metatron: a multi-tenant SaaS platform in one binary.
#[derive(Parser)]
#[command(name = "metatron", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file [default: metatron.toml, read when it exists].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory of the SQLite databases (default ./data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process behind one listener (all-in-one topology).
    Serve {
        /// Load the demo data (idempotent) and print the demo logins.
        #[arg(long)]
        demo: bool,
        /// Port to listen on (default 3000).
        #[arg(long)]
        port: Option<u16>,
        /// Address to listen on (default 0.0.0.0).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Run one process of the distributed topology instead of all-in-one: `gateway`,
        /// `cdx`, `auth` or `crm` (each on the port of its `[services]` URL unless
        /// `--port` is given; services exchange events over NATS JetStream).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// Run the distributed topology on this machine: the gateway and one process per
    /// service (with NATS JetStream, started too when none answers and `nats-server` is
    /// installed), logs prefixed by process, crashed processes restarted; Ctrl-C stops all.
    Up {
        /// Load the demo data and print the demo logins.
        #[arg(long)]
        demo: bool,
        /// Port of the gateway (default 3000).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Apply every service's migrations.
    Migrate,
    /// Show each service database: URL, tables, row counts, migration version.
    Inspect {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage superadmins.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Load the demo data (idempotent).
    SeedDemo,
    /// Verify, prune or export CDX's audit trail (opens the existing cdx database; only
    /// `prune` writes).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// CDX's aggregates (opens the existing databases, or asks the services with --remote).
    Cdx {
        #[command(subcommand)]
        command: CdxCommand,
    },
}

#[derive(Subcommand)]
enum CdxCommand {
    /// Recompute every aggregate from the services' own data and report the counters that
    /// drifted; replaces them unless `--check` (which exits non-zero on drift).
    Rebuild {
        /// Only report; change nothing.
        #[arg(long)]
        check: bool,
        /// Ask the services over HTTP at their `[services] urls` (the distributed topology)
        /// instead of reading their databases in this process.
        #[arg(long)]
        remote: bool,
        /// Print the drift as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole audit hash chain, recomputing every hash and checking every signed
    /// checkpoint; exits non-zero naming the first broken entry.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Require every checkpoint to be signed by this Ed25519 public key (base64url as
        /// `audit key` prints it, base64 or hex); repeatable. Default: `[cdx.audit]
        /// pinned_public_keys`. A base64url key may begin with `-`, so the value is taken
        /// as it is.
        #[arg(long = "public-key", value_name = "KEY", allow_hyphen_values = true)]
        public_keys: Vec<String>,
        /// Pin the keys of this file (one per line, e.g. the output of `audit key`);
        /// repeatable.
        #[arg(long = "public-key-file", value_name = "FILE")]
        public_key_files: Vec<PathBuf>,
    },
    /// Print the public keys that sign the audit checkpoints (key id and Ed25519 key,
    /// base64url), to pin them somewhere the cdx database's writers cannot reach.
    Key {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove the entries older than the retention, up to a signed checkpoint that stays as
    /// the chain's anchor (`audit verify` keeps working); the running platform does this
    /// hourly with `[cdx.audit] retention_days`.
    Prune {
        /// Keep this many days (default: `[cdx.audit] retention_days`, which must then be
        /// set).
        #[arg(long)]
        days: Option<u64>,
    },
    /// Write audit entries as JSON lines to standard output, in chain order.
    Export {
        /// Only this tenant's entries (id).
        #[arg(long)]
        tenant: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a superadmin; the password is read from a prompt, or from standard input when
    /// it is not a terminal (never from the command line).
    Create {
        /// Login name (letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        username: String,
    },
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .map_err(|e| anyhow::anyhow!("invalid setting `log`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut flags = Overrides::new().set("data_dir", cli.data_dir.as_ref());
    match &cli.command {
        Command::Serve {
            port,
            bind,
            service,
            ..
        } => {
            // A service's own port comes from its [services] URL (see serve_service).
            if service.as_deref().is_none_or(|s| s == "gateway") {
                flags = flags.set("port", *port);
            }
            flags = flags.set("bind", *bind);
        }
        Command::Up { port, .. } => flags = flags.set("port", *port),
        _ => {}
    }
    // A file named on the command line must exist; the default one is optional.
    let config_given = cli.config.clone();
    let config = match cli.config {
        Some(path) if !path.exists() => {
            anyhow::bail!("configuration file {} not found", path.display())
        }
        Some(path) => path,
        None => PathBuf::from("metatron.toml"),
    };
    let settings = Settings::load(Some(&config), flags).map_err(anyhow::Error::msg)?;
    init_logging(&settings)?;
    match cli.command {
        Command::Serve {
            service: Some(service),
            port,
            demo,
            ..
        } => metatron::commands::serve_service(settings, &service, port, demo).await,
        Command::Serve { demo, .. } => metatron::commands::serve(settings, demo).await,
        Command::Up { demo, .. } => {
            let options = metatron::up::UpOptions {
                demo,
                config: config_given,
            };
            metatron::up::up(settings, options).await
        }
        Command::Migrate => metatron::commands::migrate(settings).await,
        Command::Inspect { json } => {
            let reports = metatron::commands::inspect(&settings).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                metatron::commands::print_inspect(&reports);
            }
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Create { username },
        } => metatron::commands::admin_create(settings, &username).await,
        Command::SeedDemo => metatron::commands::seed(settings).await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    json,
                    public_keys,
                    public_key_files,
                },
        } => {
            let pinned = metatron::commands::pinned_keys(&public_keys, &public_key_files)?;
            let report = metatron::commands::audit_verify(&settings, pinned).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                metatron::commands::print_audit_report(&report);
            }
            metatron::commands::audit_outcome(&report)
        }
        Command::Cdx {
            command:
                CdxCommand::Rebuild {
                    check,
                    remote,
                    json,
                },
        } => {
            let drift = metatron::commands::cdx_rebuild(&settings, !check, remote).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&drift)?);
            } else {
                for d in &drift {
                    println!(
                        "drift: tenant {} {}: kept {}, recomputed {}",
                        d.tenant_id, d.counter, d.kept, d.recomputed
                    );
                }
                println!(
                    "{} counter(s) drifted{}",
                    drift.len(),
                    if check { "" } else { "; aggregates rebuilt" }
                );
            }
            if check && !drift.is_empty() {
                anyhow::bail!("{} aggregate counter(s) drifted", drift.len());
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Key { json },
        } => {
            let keys = metatron::commands::audit_keys(&settings).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                anyhow::bail!(
                    "no checkpoint key yet: CDX creates one when it signs its first checkpoint"
                );
            } else {
                for key in &keys {
                    println!("{} {}", key.id, key.public_key);
                }
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Prune { days },
        } => {
            match metatron::commands::audit_prune(&settings, days).await? {
                Some(pruned) => println!(
                    "pruned {} audit entries; the chain now starts after entry {}",
                    pruned.entries, pruned.through_seq
                ),
                None => println!("nothing to prune: no signed checkpoint is old enough"),
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Export { tenant, from, to },
        } => {
            metatron::commands::audit_export(
                &settings,
                tenant.as_deref(),
                from.as_deref(),
                to.as_deref(),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_beginning_with_a_hyphen_is_a_value_not_a_flag() {
        let cli = Cli::try_parse_from([
            "metatron",
            "audit",
            "verify",
            "--public-key",
            "-Uq3dsNWNmi0LsaYvSq1HGrCPlz1MOZsCTI1WAcU1Cs",
        ])
        .expect("parsed");
        let Command::Audit {
            command: AuditCommand::Verify { public_keys, .. },
        } = cli.command
        else {
            panic!("not `audit verify`");
        };
        assert_eq!(
            public_keys,
            vec!["-Uq3dsNWNmi0LsaYvSq1HGrCPlz1MOZsCTI1WAcU1Cs".to_string()]
        );
    }
}
