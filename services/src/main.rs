//! `orders`: parses the configuration, connects, migrates, starts the
//! requested parts and waits for a shutdown signal.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use services::app::{self, App};
use services::config::{Cli, Cmd};
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
        Cmd::Projections(_)
        | Cmd::Migrate
        | Cmd::Verify { .. }
        | Cmd::LogClock(_)
        | Cmd::Menu(_) => telemetry::COMMAND_LOGS,
        _ => telemetry::SERVICE_LOGS,
    });
    let pools = db::Pools::connect(cli.db.url()?, cli.db.budgets())
        .await
        .context("cannot connect to PostgreSQL (is DATABASE_URL right, and is the server up?)")?;
    // Operators' commands and the migrations use the write budget.
    let pool = &pools.writes;
    db::migrate(pool).await.context("cannot apply migrations")?;
    let process = match cli.command.process(&cli.kafka, cli.leadership.ttl())? {
        Some(process) => process,
        None => {
            admin_command(pool, &cli.kafka, cli.command).await?;
            return Ok(());
        }
    };
    let result = run(pools.clone(), process).await;
    pools.close().await;
    result
}

/// The operators' one-shot commands.
async fn admin_command(
    pool: &sqlx::PgPool,
    kafka: &services::config::KafkaArgs,
    command: Cmd,
) -> anyhow::Result<()> {
    match command {
        Cmd::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Cmd::Projections(cmd) => admin::run(pool, kafka, cmd).await,
        Cmd::Verify { names } => admin::verify(pool, &names).await,
        Cmd::LogClock(cmd) => admin::log_clock(pool, cmd).await,
        Cmd::Menu(cmd) => admin::menu(pool, cmd).await,
        // Long-running parts are processes (`Cmd::process`).
        Cmd::Serve(_) | Cmd::Relay | Cmd::Project(_) | Cmd::Work(_) | Cmd::All(_) => Ok(()),
    }
}
/// Builds the process and runs it until SIGINT or SIGTERM.
async fn run(pools: db::Pools, config: app::Config) -> anyhow::Result<()> {
    let app = App::build(pools, config).await?;
    let shutdown = CancellationToken::new();
    shutdown::on_signal(shutdown.clone());
    app.run(shutdown).await
}
