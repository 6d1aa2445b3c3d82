//! `just chaos`: steady order traffic and staff moves through the real HTTP
//! API while faults are injected, then the invariants, checked from outside.
//!
//! Every part is real and runs as its own process: a PostgreSQL cluster of
//! the run's own (so it can be crashed), a Tansu broker with SQLite storage
//! (so stopping it loses nothing), two `orders serve` (the APIs, clients
//! spread over both) and two `orders work` (the relay and both projections:
//! one leads each, the other stands by). Every `orders` process is supervised
//! as a service manager would: restarted whenever it exits.
//!
//! Faults: `kill -9` of either `orders work` at random moments (at least
//! `--min-kills`); the current leader of a lease (relay or projection)
//! frozen with SIGSTOP for `--freeze-secs` and woken with SIGCONT
//! (`--freezes` times: a standby must take over, the woken one must step
//! down); bursts of `pg_cancel_backend` on the workers' statements (every
//! `--cancel-every` seconds); a transaction held open for `--long-secs`
//! (`--long-transactions` times) while clients read their own writes; the
//! broker stopped for `--broker-down` seconds and started again; PostgreSQL
//! crashed (immediate stop: no shutdown checkpoint, clients cut off) and
//! started again.
//!
//! The clients behave as good clients of the HTTP contract kept beside the repository (API.md) do: every order request
//! carries an `Idempotency-Key` and is retried with the same key until it gets
//! a definitive answer, so "accepted" is exact even when a 503 or a cut
//! connection hid a commit. A third of the orders are read back at once with
//! `Prefer: consistency=strong`, through either API process.
//!
//! After the traffic, once the system has converged:
//! - every order that got a 201 is in the log (lost = 0), and every order in
//!   the log got a 201 for its request, exactly once (ghost = duplicated = 0);
//! - `orders verify`: both read models equal the fold of the log;
//! - every event is on the topic at least once, first occurrences in version
//!   order per order, all of an order on one partition;
//! - the delivery projection consumed every record exactly once (its offsets
//!   and counts advanced in the same transactions as its rows), so the
//!   redelivered records were absorbed by its version guard, not re-applied;
//! - every strong read showed the order just placed; every frozen leader
//!   was replaced within its freeze; no move or cancel was refused without
//!   an explanation, and no answer was a 5xx other than 503 with
//!   `Retry-After`.
//!
//! Exit status 0 only when every invariant holds.

mod checks;
mod clients;
mod faults;
mod fleet;
mod infra;
mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use checks::converge;
use clients::{client_loop, user_of, Callers, Stats};
use faults::{kill_loop, leadership_faults, Faults, LeadershipFaults, Supervised};
use fleet::{Fleet, Ground};
use infra::sleep_until;

#[derive(Debug, Parser)]
#[command(about = "Fault injection under load, then the invariants (see the module docs)")]
struct Args {
    /// The `orders` binary to run.
    #[arg(long, default_value = "target/release/orders")]
    orders_bin: PathBuf,
    /// Where the run keeps its cluster, broker storage and logs.
    #[arg(long, default_value = ".local/chaos")]
    dir: PathBuf,
    /// Seconds of traffic (longer if the faults need it).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Orders per second, all clients together.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// At least this many `kill -9` of `orders work`.
    #[arg(long, default_value_t = 20)]
    min_kills: u32,
    /// Seconds the broker stays stopped (0: no broker fault).
    #[arg(long, default_value_t = 30)]
    broker_down: u64,
    /// Times the leader of a lease is frozen (SIGSTOP) and woken (SIGCONT).
    #[arg(long, default_value_t = 3)]
    freezes: u32,
    /// Seconds a frozen leader stays stopped (more than the lease's 5 s).
    #[arg(long, default_value_t = 8)]
    freeze_secs: u64,
    /// Seconds between bursts of `pg_cancel_backend` on the workers'
    /// statements (0: none).
    #[arg(long, default_value_t = 10)]
    cancel_every: u64,
    /// Times a transaction holds the log's horizon while clients read.
    #[arg(long, default_value_t = 2)]
    long_transactions: u32,
    /// Seconds each such transaction stays open.
    #[arg(long, default_value_t = 8)]
    long_secs: u64,
    /// Crash and restart PostgreSQL once.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    postgres_restart: bool,
    /// Seconds allowed to converge after the last fault.
    #[arg(long, default_value_t = 120)]
    converge_timeout: u64,
    /// Seed of the random choices (printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chaos: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn say(message: impl AsRef<str>) {
    eprintln!("chaos: {}", message.as_ref());
}

async fn run(args: Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    fastrand::seed(seed);
    let root = std::env::current_dir()?;
    let dir = root.join(&args.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let orders_bin = root.join(&args.orders_bin);
    if !orders_bin.exists() {
        bail!(
            "{} not found: build it first (`just chaos` does)",
            orders_bin.display()
        );
    }
    say(format!(
        "seed {seed}; {} s of traffic, {} clients, {} orders/s; logs in {}",
        args.seconds,
        args.clients,
        args.rate,
        dir.display()
    ));
    let mut ground = Ground::prepare(&dir, &orders_bin).await?;
    let fleet = Fleet::start(&ground, &orders_bin, &dir).await?;
    let (stats, faults, traffic_secs) = traffic_under_faults(&args, &mut ground, &fleet).await?;

    // Converge: outbox drained, both read models at every order's last version.
    let last_fault = faults.last();
    let converged = converge(&ground.pool, Duration::from_secs(args.converge_timeout)).await?;
    let converge_secs = converged
        .saturating_duration_since(last_fault)
        .as_secs_f64();
    fleet.stop.cancel();
    for p in fleet.serves.iter().chain(&fleet.works) {
        p.finished().await;
    }

    // The invariants, then the summary.
    let run = Run {
        seed,
        args: &args,
        pool: &ground.pool,
        orders_bin: &orders_bin,
        env: &ground.env,
        broker: &ground.broker.address(),
        topic: &ground.topic,
        dir: &dir,
        stats: &stats,
        faults: &faults,
        traffic_secs,
        converge_secs,
        restarts: [restarts(&fleet.serves), restarts(&fleet.works)],
    };
    let failures = summary::check_and_print(&run).await?;
    ground.broker.stop().await;
    Ok(failures.is_empty())
}

/// Drives the clients for the run's length while the faults happen; returns
/// what the clients saw, the faults and the seconds the traffic took.
async fn traffic_under_faults(
    args: &Args,
    ground: &mut Ground,
    fleet: &Fleet,
) -> Result<(Arc<Stats>, Arc<Faults>, f64)> {
    let stats = Arc::new(Stats::default());
    let traffic_on = Arc::new(AtomicBool::new(true));
    let mut clients = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(args.clients as f64 / args.rate.max(0.1));
    let staff = ground.provider.token("barista", Some("staff")).await;
    for client in 0..args.clients {
        let customer = ground.provider.token(&user_of(client), None).await;
        clients.spawn(client_loop(
            client,
            Callers::new(&customer, &staff)?,
            fleet.bases.clone(),
            period,
            stats.clone(),
            traffic_on.clone(),
        ));
    }
    let started = Instant::now();
    let traffic = Duration::from_secs(args.seconds);
    let faults = Arc::new(Faults::default());
    let killer = tokio::spawn(kill_loop(
        fleet.works.iter().map(|w| w.kill.clone()).collect(),
        faults.clone(),
        args.min_kills,
        started + traffic,
    ));
    let leadership = tokio::spawn(leadership_faults(
        ground.pool.clone(),
        ground.url.clone(),
        faults.clone(),
        LeadershipFaults {
            freezes: args.freezes,
            freeze: Duration::from_secs(args.freeze_secs),
            cancel_every: Duration::from_secs(args.cancel_every),
            long_transactions: args.long_transactions,
            long: Duration::from_secs(args.long_secs),
            ours: fleet.works.iter().map(|w| w.signals.clone()).collect(),
        },
        started,
        traffic,
    ));
    dependency_faults(args, ground, &faults, started, traffic).await?;
    sleep_until(started + traffic).await;
    killer.await?;
    leadership.await?;
    traffic_on.store(false, Ordering::SeqCst);
    while let Some(done) = clients.join_next().await {
        done?;
    }
    let traffic_secs = started.elapsed().as_secs_f64();
    say(format!(
        "traffic over after {traffic_secs:.0} s; every request has its answer; waiting to converge"
    ));
    Ok((stats, faults, traffic_secs))
}

/// The broker stopped and started, then PostgreSQL crashed and restarted,
/// at their points of the traffic (when the run asks for them).
async fn dependency_faults(
    args: &Args,
    ground: &mut Ground,
    faults: &Faults,
    started: Instant,
    traffic: Duration,
) -> Result<()> {
    if args.broker_down > 0 {
        sleep_until(started + traffic / 5).await;
        say("stopping the broker");
        ground.broker.stop().await;
        faults.mark();
        tokio::time::sleep(Duration::from_secs(args.broker_down)).await;
        ground.broker.start().await?;
        faults.mark();
        say("broker started again");
    }
    if args.postgres_restart {
        sleep_until(started + traffic * 7 / 10).await;
        say("crashing PostgreSQL (immediate stop)");
        ground.postgres.crash().await?;
        faults.mark();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = ground.postgres.start().await?;
        if again != ground.cluster_url {
            bail!(
                "PostgreSQL came back at {again}, not {}: the services cannot follow",
                ground.cluster_url
            );
        }
        faults.mark();
        say("PostgreSQL started again (crash recovery)");
    }
    Ok(())
}

/// The processes' restarts, one count per process.
fn restarts(processes: &[Supervised]) -> String {
    processes
        .iter()
        .map(|p| p.restarts.load(Ordering::Relaxed).to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// What the summary needs of a finished run.
struct Run<'a> {
    seed: u64,
    args: &'a Args,
    pool: &'a sqlx::PgPool,
    orders_bin: &'a Path,
    env: &'a [(String, String)],
    broker: &'a str,
    topic: &'a str,
    dir: &'a Path,
    stats: &'a Stats,
    faults: &'a Faults,
    traffic_secs: f64,
    converge_secs: f64,
    /// Restarts of the API processes, then of the worker processes.
    restarts: [String; 2],
}
