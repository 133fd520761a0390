//! The `tally` command: serve the API (with the bill run inside), migrate, create tenants, apply
//! catalogs, simulate scenarios, run the bill run once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use tally::{BATCH, Server, open, simulate};
use tally_app::Tally;

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: exact subscription billing")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct Db {
    /// Database URL (`sqlite://tally.db`, `postgres://user@host/db`).
    #[arg(
        long = "database",
        env = "TALLY_DATABASE_URL",
        default_value = "sqlite://tally.db"
    )]
    url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and run the bill run in the background.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        db: Db,
        /// Seconds between bill runs (0 disables the background bill run).
        #[arg(long, default_value_t = 60)]
        bill_run_interval: u64,
    },
    /// Create or upgrade the database schema.
    Migrate {
        #[command(flatten)]
        db: Db,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage a tenant's catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Replay a scenario offline and print every invoice.
    Simulate {
        /// Scenario file (YAML or JSON).
        file: PathBuf,
        /// Print the machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Run every billing step due up to an instant, once.
    BillRun {
        /// Bill up to this instant (RFC 3339; default now).
        #[arg(long)]
        until: Option<Timestamp>,
        /// Seconds a claimed contract stays with this worker (after a crash, others wait this long).
        #[arg(long, default_value_t = tally_app::service::DEFAULT_LEASE_SECONDS)]
        lease_seconds: i64,
        /// Contracts claimed, billed and written per transaction.
        #[arg(long, default_value_t = BATCH)]
        batch_size: u64,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id and API key (shown once).
    Create {
        /// Tenant name.
        #[arg(long)]
        name: String,
        /// A test-mode tenant (with a test clock).
        #[arg(long)]
        test_mode: bool,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Apply a catalog file (YAML or JSON) to a tenant.
    Apply {
        /// The file.
        file: PathBuf,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: Db,
    },
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise; colored only on a terminal, so
/// a log file or a collector gets plain text.
fn init_logs(format: LogFormat, default: &str) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// mimalloc: the bill run and the API allocate many small, short-lived strings (JSON bodies,
/// ids, amounts); with it the bill run's throughput rose ~20% in `benches/bill_run.rs`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A simulation's requests are its report: their log lines would only repeat it.
    let default = match cli.command {
        Command::Simulate { .. } => "warn",
        _ => "info",
    };
    init_logs(cli.log_format, default);
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        Command::Serve {
            listen,
            db,
            bill_run_interval,
        } => {
            let server = Server::build(&listen, &db.url).await?;
            tracing::info!(address = %server.addr()?, database = %db.url, "tally serving");
            server
                .run(Duration::from_secs(bill_run_interval), async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Migrate { db } => {
            open(&db.url).await?;
            println!("migrated {}", db.url);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    test_mode,
                    db,
                },
        } => {
            let tally = Tally::new(open(&db.url).await?);
            let (t, key) = tally.create_tenant(&name, test_mode).await?;
            println!(
                "{}",
                serde_json::json!({ "tenant_id": t.id, "api_key": key })
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Catalog {
            command: CatalogCommand::Apply { file, tenant, db },
        } => {
            let parsed = match simulate::read_catalog(&file) {
                Ok(p) => p,
                Err(simulate::Invalid(msg)) => {
                    eprintln!("error: {msg}");
                    return Ok(std::process::ExitCode::from(2));
                }
            };
            let tally = Tally::new(open(&db.url).await?);
            let t = tally
                .store
                .tenant(&tenant)
                .await?
                .with_context(|| format!("no tenant {tenant}"))?;
            let (_, catalog) = tally.apply_catalog(&t, &parsed).await?;
            println!(
                "applied {}: {} features, {} plans, {} discounts",
                file.display(),
                catalog.features.len(),
                catalog.plans.len(),
                catalog.discounts.len()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Simulate { file, json } => match simulate::run(&file).await {
            Ok(report) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report.json)?);
                } else {
                    print!("{}", simulate::render(&report));
                }
                if report.failures.is_empty() {
                    Ok(std::process::ExitCode::SUCCESS)
                } else {
                    for f in &report.failures {
                        eprintln!("expectation not met: {f}");
                    }
                    Ok(std::process::ExitCode::from(1))
                }
            }
            Err(simulate::Invalid(msg)) => {
                eprintln!("error: {msg}");
                Ok(std::process::ExitCode::from(2))
            }
        },
        Command::Openapi => {
            println!("{}", tally_api::openapi().to_pretty_json()?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::BillRun {
            until,
            lease_seconds,
            batch_size,
            db,
        } => {
            let tally = Tally::new(open(&db.url).await?);
            let until = until.unwrap_or_else(Timestamp::now);
            let n = tally
                .bill_run_leased(until, batch_size.max(1), lease_seconds)
                .await?;
            println!("{}", serde_json::json!({ "until": until, "invoices": n }));
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
