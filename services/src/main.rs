//! `orders`: parses the configuration, connects, migrates, starts the
//! requested parts and waits for a shutdown signal.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use projections::delivery::KafkaSource;
use projections::runner::WorkerOptions;
use services::config::{Cli, Cmd, ServeArgs, WorkerArgs};
use services::http::{self, AppState};
use services::relay::{self, RelayOptions};
use services::{admin, db, shutdown, telemetry, workers};
use sqlx::PgPool;
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
    let pools = db::Pools::connect(&cli.db)
        .await
        .context("cannot connect to PostgreSQL (is DATABASE_URL right, and is the server up?)")?;
    // Operators' commands and the migrations use the write budget.
    let pool = &pools.writes;
    db::migrate(pool).await.context("cannot apply migrations")?;
    let lease_ttl = cli.leadership.ttl();
    let result = match cli.command {
        Cmd::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Cmd::Projections(cmd) => admin::run(pool, &cli.kafka, cmd).await,
        Cmd::Verify { names } => admin::verify(pool, &names).await,
        Cmd::LogClock(cmd) => admin::log_clock(pool, cmd).await,
        Cmd::Serve(args) => {
            let parts = Parts {
                serve: Some(args),
                kafka_brokers: cli.kafka.brokers(),
                ..Parts::default()
            };
            run(&pools, parts).await
        }
        Cmd::Relay => {
            let parts = Parts {
                relay: Some(relay_options(
                    &cli.kafka.require("orders relay")?,
                    lease_ttl,
                )),
                ..Parts::default()
            };
            run(&pools, parts).await
        }
        Cmd::Project(args) => {
            let names = workers::select(&args.names)?;
            let kafka = if names.contains(&projections::delivery::NAME) {
                Some(cli.kafka.require("the delivery projection")?)
            } else {
                None
            };
            let parts = Parts {
                project: Some((names, args.worker)),
                kafka,
                lease_ttl,
                ..Parts::default()
            };
            run(&pools, parts).await
        }
        Cmd::Work(args) => {
            let kafka = cli.kafka.require("orders work")?;
            let parts = Parts {
                relay: Some(relay_options(&kafka, lease_ttl)),
                project: Some((workers::KNOWN.to_vec(), args)),
                kafka: Some(kafka),
                lease_ttl,
                ..Parts::default()
            };
            run(&pools, parts).await
        }
        Cmd::All(args) => {
            let kafka = cli.kafka.require("orders all")?;
            let parts = Parts {
                serve: Some(args.serve),
                kafka_brokers: Some(kafka.brokers.clone()),
                relay: Some(relay_options(&kafka, lease_ttl)),
                project: Some((workers::KNOWN.to_vec(), args.worker)),
                kafka: Some(kafka),
                lease_ttl,
            };
            run(&pools, parts).await
        }
    };
    pools.close().await;
    result
}

/// The parts one process runs.
#[derive(Default)]
struct Parts {
    serve: Option<ServeArgs>,
    /// Brokers `/readyz` checks.
    kafka_brokers: Option<Vec<String>>,
    relay: Option<RelayOptions>,
    project: Option<(Vec<&'static str>, WorkerArgs)>,
    /// Where the delivery projection reads.
    kafka: Option<KafkaSource>,
    /// How long a leader's lease lives without renewal.
    lease_ttl: Duration,
}

fn relay_options(kafka: &KafkaSource, lease_ttl: Duration) -> RelayOptions {
    RelayOptions {
        brokers: kafka.brokers.clone(),
        topic: kafka.topic.clone(),
        // ~1,000 records per partition and produce: Tansu stalls on
        // batches of about 100 (ADR 0007), and a round's fixed costs spread.
        batch_size: 3000,
        poll_interval: Duration::from_millis(500),
        max_request_bytes: kafka.max_request_bytes,
        settings: kafka.topic_settings(),
        lease_ttl,
    }
}

/// Runs the HTTP server, the relay and/or projection workers until SIGINT or
/// SIGTERM, then stops them all and waits for them.
/// Refuses to start a part that writes or reads the log when new events
/// would sort before stored ones (a database restored into another cluster).
async fn ensure_clock_in_order(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    projections::clock::ensure_in_order(&mut conn).await?;
    Ok(())
}

async fn run(pools: &db::Pools, parts: Parts) -> anyhow::Result<()> {
    ensure_clock_in_order(&pools.writes).await?;
    let token = CancellationToken::new();
    shutdown::on_signal(token.clone());
    let mut workers = match &parts.project {
        Some((names, args)) => {
            let options = WorkerOptions {
                batch_size: args.batch_size,
                lease_ttl: parts.lease_ttl,
                ..WorkerOptions::default()
            };
            tracing::info!(projections = ?names, "starting projection workers");
            workers::spawn(pools, names, &options, parts.kafka.as_ref(), &token)
        }
        None => tokio::task::JoinSet::new(),
    };
    let relay = parts
        .relay
        .map(|options| tokio::spawn(relay::run(pools.workers.clone(), options, token.clone())));
    let serve = parts.serve;
    let server = match serve {
        Some(args) => {
            let listener = tokio::net::TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("cannot listen on {}", args.http_addr))?;
            let mut state = AppState::new(pools, listener.local_addr()?.port());
            state.kafka_brokers = parts.kafka_brokers;
            state.max_in_flight = usize::try_from(args.max_in_flight).unwrap_or(usize::MAX);
            state.request_timeout = Duration::from_secs(args.request_timeout_secs);
            Some(tokio::spawn(http::serve(
                listener,
                state,
                args.api,
                token.clone(),
            )))
        }
        None => None,
    };
    // A worker that ends on its own (a corrupt event it refuses to skip)
    // takes the process down with it, so a supervisor notices and restarts.
    // A worker that ends because a signal asked it to is not a failure: the
    // signal wakes this task and the workers at once, and they may finish
    // first.
    let mut failure = None;
    tokio::select! {
        () = token.cancelled() => {}
        Some(ended) = workers.join_next() => {
            failure = match ended {
                Ok(Ok(())) if token.is_cancelled() => None,
                Ok(Ok(())) => Some(anyhow::anyhow!("a projection worker stopped unexpectedly")),
                Ok(Err(e)) => Some(anyhow::Error::new(e).context("a projection worker failed")),
                Err(e) => Some(anyhow::Error::new(e).context("a projection worker panicked")),
            };
            token.cancel();
        }
    }
    while workers.join_next().await.is_some() {}
    if let Some(relay) = relay {
        relay.await.context("the relay task failed")?;
    }
    if let Some(server) = server {
        server.await.context("the HTTP server task failed")??;
    }
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}
