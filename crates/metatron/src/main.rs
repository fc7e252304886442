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
    if let Command::Serve { port, bind, .. } = &cli.command {
        flags = flags.set("port", *port).set("bind", *bind);
    }
    // A file named on the command line must exist; the default one is optional.
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
        Command::Serve { demo, .. } => metatron::commands::serve(settings, demo).await,
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
    }
}
