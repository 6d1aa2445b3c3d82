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
        | Cmd::Menu(_)
        | Cmd::Stores(_) => telemetry::COMMAND_LOGS,
        _ => telemetry::SERVICE_LOGS,
    });
    // A service waits for its database; an operator's command fails at once.
    let service = cli
        .command
        .process(&cli.kafka, cli.leadership.ttl())?
        .is_some();
    let shutdown = CancellationToken::new();
    if service {
        shutdown::on_signal(shutdown.clone());
    }
    let patience = service.then(|| std::time::Duration::from_secs(cli.db.db_start_wait_secs));
    let Some(pools) = database(
        cli.db.url()?,
        cli.db.budgets(),
        patience,
        &shutdown,
        service,
    )
    .await?
    else {
        return Ok(());
    };
    // Operators' commands and the migrations use the write budget.
    let pool = &pools.writes;
    let process = match cli.command.process(&cli.kafka, cli.leadership.ttl())? {
        Some(process) => process,
        None => {
            admin_command(pool, &cli.kafka, cli.command).await?;
            return Ok(());
        }
    };
    let result = run(pools.clone(), process, shutdown).await;
    pools.close().await;
    result
}

/// The pools, connected, and the migrations applied. A service (`serve`,
/// `work`, `all`, …) whose database does not answer yet, or cancels its
/// migration (a restart, a failover, an operator's `pg_cancel_backend`),
/// tries again with backoff for up to `patience` (`DB_START_WAIT_SECS`),
/// or until it is told to stop (`None`), rather than exit for a service
/// manager to restart it over and over. An operator's command (no
/// patience), or any other failure (a wrong password, a bad URL), fails at
/// once.
async fn database(
    url: &str,
    budgets: db::Budgets,
    patience: Option<std::time::Duration>,
    stop: &CancellationToken,
    service: bool,
) -> anyhow::Result<Option<db::Pools>> {
    let started = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        let attempt = async {
            let pools = if service {
                db::Pools::connect(url, budgets).await
            } else {
                db::Pools::connect_for_command(url, budgets).await
            };
            let pools = pools.context(
                "cannot connect to PostgreSQL (is DATABASE_URL right, and is the server up?)",
            )?;
            db::migrate(&pools.writes)
                .await
                .context("cannot apply migrations")?;
            anyhow::Ok(pools)
        }
        .await;
        match attempt {
            Ok(pools) => return Ok(Some(pools)),
            Err(e) if patience.is_some_and(|p| started.elapsed() < p) && not_ready(&e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    ?delay,
                    "the database is not ready; trying again"
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a start-up failure is the database not being ready: it could
/// not be reached, or it cancelled the statement.
fn not_ready(error: &anyhow::Error) -> bool {
    let not_ready = |e: &sqlx::Error| {
        infra::pg::is_unavailable(e)
            || matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
    };
    error.chain().any(|cause| {
        cause.downcast_ref::<sqlx::Error>().is_some_and(not_ready)
            || matches!(cause.downcast_ref::<projections::ProjectionError>(),
                Some(projections::ProjectionError::Database(e)) if not_ready(e))
    })
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
        Cmd::Stores(cmd) => admin::stores(pool, cmd).await,
        // Long-running parts are processes (`Cmd::process`).
        Cmd::Serve(_) | Cmd::Relay | Cmd::Project(_) | Cmd::Work(_) | Cmd::All(_) => Ok(()),
    }
}
/// Builds the process and runs it until SIGINT or SIGTERM (`shutdown`).
async fn run(
    pools: db::Pools,
    config: app::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = App::build(pools, config).await?;
    app.run(shutdown).await
}
