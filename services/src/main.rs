//! `orders`: parses the configuration, connects, migrates, starts the
//! requested parts and waits for a shutdown signal.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use projections::ProjectionName;
use services::app::{self, App};
use services::config::{Cli, Cmd};
use services::relay::RelayOptions;
use services::{admin, db, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

// mimalloc: a tenth of the service's CPU went to glibc's malloc and free
// (perf, place-order load); mimalloc serves the many small, short-lived
// allocations of request handling from thread-local pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    services::metrics::handle();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orders(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes) for operators; the logs
            // already hold the details.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn orders(cli: Cli) -> anyhow::Result<()> {
    let _logs = telemetry::init(match cli.command {
        Cmd::Projections(_) | Cmd::Migrate | Cmd::Verify { .. } | Cmd::LogClock(_) => {
            telemetry::COMMAND_LOGS
        }
        _ => telemetry::SERVICE_LOGS,
    });
    let pools = db::Pools::connect(cli.db.url()?, cli.db.budgets())
        .await
        .context("cannot connect to PostgreSQL (is DATABASE_URL right, and is the server up?)")?;
    // Operators' commands and the migrations use the write budget.
    let pool = &pools.writes;
    db::migrate(pool).await.context("cannot apply migrations")?;
    let lease_ttl = cli.leadership.ttl();
    let config = match cli.command {
        Cmd::Migrate => {
            println!("migrations applied");
            None
        }
        Cmd::Projections(cmd) => {
            admin::run(pool, &cli.kafka, cmd).await?;
            None
        }
        Cmd::Verify { names } => {
            admin::verify(pool, &names).await?;
            None
        }
        Cmd::LogClock(cmd) => {
            admin::log_clock(pool, cmd).await?;
            None
        }
        Cmd::Serve(args) => Some(app::Config {
            serve: Some(args.config()),
            kafka: cli.kafka.source(),
            ..app::Config::default()
        }),
        Cmd::Relay => Some(app::Config {
            relay: Some(RelayOptions::new(
                &cli.kafka.require("orders relay")?,
                lease_ttl,
            )),
            ..app::Config::default()
        }),
        Cmd::Project(args) => {
            let names = ProjectionName::parse_all(&args.names)?;
            let kafka = if names.contains(&ProjectionName::Delivery) {
                Some(cli.kafka.require("the delivery projection")?)
            } else {
                None
            };
            Some(app::Config {
                projections: names,
                worker: args.worker.options(lease_ttl),
                kafka,
                ..app::Config::default()
            })
        }
        Cmd::Work(args) => {
            let kafka = cli.kafka.require("orders work")?;
            Some(app::Config {
                relay: Some(RelayOptions::new(&kafka, lease_ttl)),
                projections: ProjectionName::ALL.to_vec(),
                worker: args.options(lease_ttl),
                kafka: Some(kafka),
                ..app::Config::default()
            })
        }
        Cmd::All(args) => {
            let kafka = cli.kafka.require("orders all")?;
            Some(app::Config {
                serve: Some(args.serve.config()),
                relay: Some(RelayOptions::new(&kafka, lease_ttl)),
                projections: ProjectionName::ALL.to_vec(),
                worker: args.worker.options(lease_ttl),
                kafka: Some(kafka),
            })
        }
    };
    let result = match config {
        Some(config) => run(pools.clone(), config).await,
        None => Ok(()),
    };
    pools.close().await;
    result
}

/// Builds the process and runs it until SIGINT or SIGTERM.
async fn run(pools: db::Pools, config: app::Config) -> anyhow::Result<()> {
    let app = App::build(pools, config).await?;
    let shutdown = CancellationToken::new();
    shutdown::on_signal(shutdown.clone());
    app.run(shutdown).await
}
