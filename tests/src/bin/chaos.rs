//! `just chaos`: steady order traffic and staff moves through the real HTTP
//! API while faults are injected, then the invariants, checked from outside.
//!
//! Every part is real and runs as its own process: a PostgreSQL cluster of
//! the run's own (so it can be crashed), a Tansu broker with SQLite storage
//! (so stopping it loses nothing), `orders serve` (the APIs) and `orders work`
//! (the relay and both projections). Both `orders` processes are supervised as
//! a service manager would: restarted whenever they exit.
//!
//! Faults: `kill -9` of `orders work` at random moments (at least
//! `--min-kills`); the broker stopped for `--broker-down` seconds and started
//! again; PostgreSQL crashed (immediate stop: no shutdown checkpoint, clients
//! cut off) and started again.
//!
//! The clients behave as good clients of API.md do: every order request
//! carries an `Idempotency-Key` and is retried with the same key until it gets
//! a definitive answer, so "accepted" is exact even when a 503 or a cut
//! connection hid a commit.
//!
//! After the traffic, once the system has converged:
//! - every order that got a 201 is in the log (lost = 0), and every order in
//!   the log got a 201 for its request, exactly once (ghost = duplicated = 0);
//! - `orders verify`: both read models equal the fold of the log;
//! - every event is on the topic at least once, first occurrences in version
//!   order per order, all of an order on one partition;
//! - the delivery projection consumed every record exactly once (its offsets
//!   and counts advanced in the same transactions as its rows), so the
//!   redelivered records were absorbed by its version guard, not re-applied.
//!
//! Exit status 0 only when every invariant holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use e2e::processes::{free_port, terminate, DurableBroker};
use rskafka::client::partition::UnknownTopicHandling;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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

    // The run's own PostgreSQL cluster and database, and its own broker.
    // The repository's scripts start and crash the cluster.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let postgres = Postgres::new(&repo, &dir);
    let cluster_url = postgres.start().await?;
    let url = fresh_database(&cluster_url, "chaos").await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .context("connect to the chaos database")?;
    let mut broker = DurableBroker::new(&dir.join("kafka"), Some(dir.join("broker.log")))?;
    broker.start().await?;
    let topic = format!("chaos-{}", Uuid::now_v7().simple());
    let env = vec![
        ("DATABASE_URL".to_owned(), url.clone()),
        ("KAFKA_BROKERS".to_owned(), broker.address()),
        ("KAFKA_TOPIC".to_owned(), topic.clone()),
        ("KAFKA_PARTITIONS".to_owned(), "3".to_owned()),
    ];

    // Migrate once, before anything races to.
    let migrated = Command::new(&orders_bin)
        .arg("migrate")
        .envs(env.iter().cloned())
        .output()
        .await?;
    if !migrated.status.success() {
        bail!(
            "orders migrate failed: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
    }

    let http_port = free_port()?;
    let stop = CancellationToken::new();
    let serve = Supervised::start(
        "serve",
        &orders_bin,
        vec![
            "serve".into(),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
        ],
        env.clone(),
        dir.join("serve.log"),
        stop.clone(),
    )?;
    let work = Supervised::start(
        "work",
        &orders_bin,
        vec!["work".into()],
        env.clone(),
        dir.join("work.log"),
        stop.clone(),
    )?;
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_ready(&http, &base).await?;

    // Traffic.
    let stats = Arc::new(Stats::default());
    let traffic_on = Arc::new(AtomicBool::new(true));
    let mut clients = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(args.clients as f64 / args.rate.max(0.1));
    for client in 0..args.clients {
        clients.spawn(client_loop(
            client,
            http.clone(),
            base.clone(),
            period,
            stats.clone(),
            traffic_on.clone(),
        ));
    }

    // Faults.
    let started = Instant::now();
    let traffic = Duration::from_secs(args.seconds);
    let faults = Arc::new(Faults::default());
    let killer = tokio::spawn(kill_loop(
        work.kill.clone(),
        faults.clone(),
        args.min_kills,
        started + traffic,
    ));
    if args.broker_down > 0 {
        sleep_until(started + traffic / 5).await;
        say("stopping the broker");
        broker.stop().await;
        faults.mark();
        tokio::time::sleep(Duration::from_secs(args.broker_down)).await;
        broker.start().await?;
        faults.mark();
        say("broker started again");
    }
    if args.postgres_restart {
        sleep_until(started + traffic * 7 / 10).await;
        say("crashing PostgreSQL (immediate stop)");
        postgres.crash().await?;
        faults.mark();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = postgres.start().await?;
        if again != cluster_url {
            bail!("PostgreSQL came back at {again}, not {cluster_url}: the services cannot follow");
        }
        faults.mark();
        say("PostgreSQL started again (crash recovery)");
    }
    sleep_until(started + traffic).await;
    killer.await?;
    traffic_on.store(false, Ordering::SeqCst);
    while let Some(done) = clients.join_next().await {
        done?;
    }
    let traffic_secs = started.elapsed().as_secs_f64();
    say(format!(
        "traffic over after {traffic_secs:.0} s; every request has its answer; waiting to converge"
    ));

    // Converge: outbox drained, both read models at every order's last version.
    let last_fault = faults.last();
    let converged = converge(&pool, Duration::from_secs(args.converge_timeout)).await?;
    let converge_secs = converged
        .saturating_duration_since(last_fault)
        .as_secs_f64();
    stop.cancel();
    serve.finished().await;
    work.finished().await;

    // The invariants.
    let mut failures = Vec::new();
    let accepted = stats.accepted();
    let orders = orders_check(&pool, &accepted).await?;
    if orders.lost > 0 || orders.ghosts > 0 || orders.duplicated > 0 {
        failures.push("orders: lost, ghost or duplicated".to_owned());
    }
    let verify = Command::new(&orders_bin)
        .arg("verify")
        .envs(env.iter().cloned())
        .output()
        .await?;
    let verify_out = String::from_utf8_lossy(&verify.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !verify.status.success() {
        failures.push(format!(
            "orders verify: {verify_out} {}",
            String::from_utf8_lossy(&verify.stderr).trim()
        ));
    }
    let topic_check = topic_check(&pool, &broker.address(), &topic).await?;
    failures.extend(topic_check.failures.iter().cloned());
    let delivery = delivery_check(&pool, &topic, &topic_check.per_partition).await?;
    failures.extend(delivery.failures.iter().cloned());
    if stats.server_errors.load(Ordering::Relaxed) > 0 {
        failures.push("500 answers (a bug, not a fault)".to_owned());
    }
    if stats.unresolved.load(Ordering::Relaxed) > 0 {
        failures.push("requests without a definitive answer".to_owned());
    }
    let rejected = stats.rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        failures.push(format!(
            "{rejected} moves or cancels refused without an explanation"
        ));
    }
    let reached: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM order_view GROUP BY status ORDER BY min(CASE status
             WHEN 'received' THEN 1 WHEN 'preparing' THEN 2 WHEN 'delivering' THEN 3
             WHEN 'delivered' THEN 4 ELSE 5 END)",
    )
    .fetch_all(&pool)
    .await?;

    // The summary.
    let kills = faults.kills.load(Ordering::Relaxed);
    println!();
    println!("chaos summary (seed {seed})");
    println!(
        "  faults injected      {kills} × kill -9 of `orders work`, broker stopped {} s × {}, PostgreSQL crash-restart × {}",
        args.broker_down,
        u8::from(args.broker_down > 0),
        u8::from(args.postgres_restart)
    );
    println!(
        "  traffic              {traffic_secs:.0} s, {} clients; {} orders accepted (201), {} staff moves and cancels accepted",
        args.clients,
        accepted.len(),
        stats.moves.load(Ordering::Relaxed)
    );
    println!(
        "  retried by clients   {} requests (503, timeouts, cut connections; same Idempotency-Key)",
        stats.retries.load(Ordering::Relaxed)
    );
    println!(
        "  orders reached       {}",
        reached
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  unexplained refusals {rejected} (should be 0)");
    println!(
        "  orders               lost {}   ghost {}   duplicated {}   (log holds {})",
        orders.lost, orders.ghosts, orders.duplicated, orders.in_log
    );
    println!(
        "  topic                {} records for {} events: {} redelivered, {} missing, {} out of order",
        topic_check.records,
        topic_check.events,
        topic_check.redelivered,
        topic_check.missing,
        topic_check.out_of_order
    );
    println!(
        "  delivery model       {} records consumed, each once ({} consumed twice); version guard absorbed the redelivered",
        delivery.consumed, delivery.consumed_twice
    );
    println!("  orders verify        {verify_out}");
    println!(
        "  restarts             serve {} (should be 0), work {} (after each kill)",
        serve.restarts.load(Ordering::Relaxed),
        work.restarts.load(Ordering::Relaxed)
    );
    println!("  converged            {converge_secs:.1} s after the last fault");
    if failures.is_empty() {
        println!("  result               every invariant holds");
    } else {
        for f in &failures {
            println!("  FAILED               {f}");
        }
    }
    broker.stop().await;
    Ok(failures.is_empty())
}

// ---------------------------------------------------------------------------
// Clients

#[derive(Default)]
struct Stats {
    /// Idempotency key → the order its 201 named.
    accepted: Mutex<HashMap<String, Uuid>>,
    moves: AtomicU64,
    retries: AtomicU64,
    server_errors: AtomicU64,
    unresolved: AtomicU64,
    /// Moves and cancels refused for no reason the client's own retries
    /// explain (each one is printed).
    rejected: AtomicU64,
}

impl Stats {
    fn accepted(&self) -> HashMap<String, Uuid> {
        self.accepted
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// An order a client is moving through its lifecycle.
struct Active {
    user: String,
    order: Uuid,
    /// Moves done so far (0 = received).
    step: usize,
    cancel: bool,
}

/// The staff moves of an order's lifecycle, in order.
const MOVES: [domain::Status; 3] = [
    domain::Status::Preparing,
    domain::Status::Delivering,
    domain::Status::Delivered,
];

async fn client_loop(
    client: usize,
    http: reqwest::Client,
    base: String,
    period: Duration,
    stats: Arc<Stats>,
    traffic_on: Arc<AtomicBool>,
) {
    let user = format!("chaos-{client:02}");
    let mut active: Vec<Active> = Vec::new();
    let mut next = Instant::now() + period.mul_f64(fastrand::f64());
    while traffic_on.load(Ordering::SeqCst) {
        sleep_until(next).await;
        next += period;
        let key = Uuid::new_v4().to_string();
        let qty = fastrand::u32(1..=5);
        let body = json!({
            "coffee_name": "today's coffee",
            "coffee_price": (fastrand::u32(1..=12) * 500).to_string(),
            "coffee_qty": qty.to_string(),
        });
        let url = format!("{base}/order-ms/{user}/orders");
        let answer = until_definitive(&stats, || {
            http.post(&url)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
        })
        .await;
        if let Some(Answer {
            status: 201 | 200,
            body: json,
            ..
        }) = answer
        {
            if let Some(order) = json
                .get("order_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                if let Ok(mut accepted) = stats.accepted.lock() {
                    accepted.insert(key, order);
                }
                active.push(Active {
                    user: user.clone(),
                    order,
                    step: 0,
                    cancel: fastrand::u8(..10) == 0,
                });
            }
        }
        // Move one of the client's orders on (about as many moves as orders).
        if !active.is_empty() && fastrand::bool() {
            let i = fastrand::usize(..active.len());
            let done = move_on(&http, &base, &stats, &mut active[i]).await;
            if done {
                active.swap_remove(i);
            }
        }
    }
}

/// One step of an order's lifecycle; true when the order needs no more.
async fn move_on(http: &reqwest::Client, base: &str, stats: &Stats, order: &mut Active) -> bool {
    let answer = if order.cancel {
        let url = format!(
            "{base}/order-ms/{}/orders/{}/cancel",
            order.user, order.order
        );
        until_definitive(stats, || http.post(&url).send()).await
    } else {
        let url = format!("{base}/delivery-ms/{}/{}/status", order.user, order.order);
        // The domain's codes and labels, as the original clients send both.
        let to = MOVES[order.step];
        let status = if fastrand::bool() {
            to.code()
        } else {
            to.label()
        };
        until_definitive(stats, || {
            http.post(&url).json(&json!({ "status": status })).send()
        })
        .await
    };
    let target = if order.cancel {
        "cancelled"
    } else {
        MOVES[order.step].code()
    };
    match answer {
        Some(Answer { status: 200, .. }) => {}
        // A retry whose first attempt had committed: the order is already
        // where this client moved it (the lifecycle refuses the same move
        // twice). Nothing else explains a refusal.
        Some(Answer {
            status: 409,
            retried: true,
            ..
        }) if current_status(http, base, order).await.as_deref() == Some(target) => {}
        Some(Answer { status, body, .. }) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            say(format!(
                "unexplained {status} moving order {} to {target}: {body}",
                order.order
            ));
            return true;
        }
        None => return true,
    }
    stats.moves.fetch_add(1, Ordering::Relaxed);
    order.step += 1;
    order.cancel || order.step == MOVES.len()
}

/// The order's status as order-ms reads it from its events.
async fn current_status(http: &reqwest::Client, base: &str, order: &Active) -> Option<String> {
    let url = format!("{base}/order-ms/{}/orders/{}", order.user, order.order);
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    body.get("status")?.as_str().map(str::to_owned)
}

/// A definitive answer, and whether it took more than one attempt (an
/// earlier attempt may have taken effect).
struct Answer {
    status: u16,
    body: Value,
    retried: bool,
}

/// Sends until the answer is definitive (2xx or 4xx), retrying 5xx answers
/// and transport errors with backoff. `None` when it never was (reported).
async fn until_definitive<F, Fut>(stats: &Stats, mut send: F) -> Option<Answer>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(50);
    let mut retried = false;
    loop {
        match send().await {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                return Some(Answer {
                    status,
                    body,
                    retried,
                });
            }
            Ok(response) => {
                if response.status() == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
                    stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    say(format!(
                        "500 answer: {}",
                        response.text().await.unwrap_or_default()
                    ));
                }
            }
            Err(_) => {}
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        retried = true;
        if Instant::now() > give_up {
            stats.unresolved.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("orders serve not ready after 60 s (see serve.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// Faults

#[derive(Default)]
struct Faults {
    kills: AtomicU32,
    last: Mutex<Option<Instant>>,
}

impl Faults {
    /// A fault was injected now.
    fn mark(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }

    fn last(&self) -> Instant {
        self.last
            .lock()
            .ok()
            .and_then(|l| *l)
            .unwrap_or_else(Instant::now)
    }
}

/// `kill -9` of the worker process at random moments until `until`, and on
/// until at least `min` kills.
async fn kill_loop(kill: mpsc::Sender<()>, faults: Arc<Faults>, min: u32, until: Instant) {
    while Instant::now() < until || faults.kills.load(Ordering::Relaxed) < min {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..4000))).await;
        if kill.send(()).await.is_err() {
            return;
        }
        faults.kills.fetch_add(1, Ordering::Relaxed);
        faults.mark();
    }
}

/// A process kept running as a service manager would: restarted when it
/// exits; `kill` sends it SIGKILL (then it is restarted too).
struct Supervised {
    kill: mpsc::Sender<()>,
    restarts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    fn start(
        name: &'static str,
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
        stop: CancellationToken,
    ) -> Result<Supervised> {
        let (kill, mut kills) = mpsc::channel::<()>(1);
        let restarts = Arc::new(AtomicU32::new(0));
        let spawn = {
            let bin = bin.to_owned();
            move || -> Result<Child> {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?;
                Ok(Command::new(&bin)
                    .args(&args)
                    .envs(env.iter().cloned())
                    .env_remove("ORDERS_FAILPOINT")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .kill_on_drop(true)
                    .spawn()?)
            }
        };
        let mut child = spawn()?;
        let counter = restarts.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        terminate(&mut child).await;
                        return;
                    }
                    _ = kills.recv() => {
                        child.start_kill().ok();
                        child.wait().await.ok();
                        // Back after a moment, as a service manager would.
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
                    }
                    status = child.wait() => {
                        say(format!("{name} exited by itself ({status:?}); restarting"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
                match spawn() {
                    Ok(c) => child = c,
                    Err(e) => {
                        say(format!("cannot restart {name}: {e:#}"));
                        return;
                    }
                }
            }
        });
        Ok(Supervised {
            kill,
            restarts,
            task,
        })
    }

    async fn finished(&self) {
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Infrastructure

struct Postgres {
    script: PathBuf,
    base: PathBuf,
}

impl Postgres {
    fn new(root: &Path, dir: &Path) -> Postgres {
        Postgres {
            script: root.join("scripts/postgres.sh"),
            base: dir.join("pg"),
        }
    }

    fn command(&self, arg: Option<&str>) -> Command {
        let mut c = Command::new(&self.script);
        c.args(arg)
            .env("PG_BASE", &self.base)
            .env_remove("DATABASE_URL")
            .stderr(Stdio::inherit());
        c
    }

    /// Starts the cluster (creating it on first use); its URL.
    async fn start(&self) -> Result<String> {
        let out = self.command(None).output().await?;
        if !out.status.success() {
            bail!("scripts/postgres.sh failed");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export DATABASE_URL="))
            .map(|u| u.trim_matches('\'').to_owned())
            .context("scripts/postgres.sh printed no DATABASE_URL")
    }

    async fn crash(&self) -> Result<()> {
        self.command(Some("crash")).status().await?;
        Ok(())
    }
}

/// The cluster is the run's own: it stops with the run, however that ends.
impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .env("PG_BASE", &self.base)
            .env_remove("DATABASE_URL")
            .status();
    }
}

/// Drops and creates `name` on the cluster; the URL of the new database.
async fn fresh_database(cluster_url: &str, name: &str) -> Result<String> {
    let (prefix, _) = cluster_url
        .rsplit_once('/')
        .context("a database URL ends in /<database>")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{prefix}/postgres"))
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(format!("{prefix}/{name}"))
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

// ---------------------------------------------------------------------------
// Convergence and invariants

/// Waits until the outbox is empty and both read models hold every order at
/// its last version; the moment it was so.
async fn converge(pool: &PgPool, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let row = sqlx::query(
            "WITH last AS (SELECT stream_id, max(version) AS version FROM events GROUP BY stream_id)
             SELECT (SELECT count(*) FROM outbox),
                    (SELECT count(*) FROM last l LEFT JOIN order_view o
                        ON o.order_id = l.stream_id AND o.version = l.version
                      WHERE o.order_id IS NULL),
                    (SELECT count(*) FROM last l LEFT JOIN delivery.order_status d
                        ON d.order_id = l.stream_id AND d.version = l.version
                      WHERE d.order_id IS NULL)",
        )
        .fetch_one(pool)
        .await;
        // An error: the database may still be recovering; ask again.
        if let Ok(row) = row {
            let counts: (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if counts == (0, 0, 0) {
                return Ok(Instant::now());
            }
            last = Some(counts);
        }
        if Instant::now() > deadline {
            bail!("did not converge within {timeout:?}: outbox rows, orders behind, deliveries behind = {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct OrdersCheck {
    in_log: usize,
    lost: usize,
    ghosts: usize,
    duplicated: usize,
}

/// Accepted orders against the log: each 201 is in the log, and each order in
/// the log is the one order of a request that got its 201.
async fn orders_check(pool: &PgPool, accepted: &HashMap<String, Uuid>) -> Result<OrdersCheck> {
    let rows = sqlx::query(
        "SELECT e.stream_id, k.key
           FROM events e LEFT JOIN idempotency_keys k ON k.stream_id = e.stream_id
          WHERE e.version = 1",
    )
    .fetch_all(pool)
    .await?;
    let mut in_log = HashSet::new();
    let mut ghosts = 0;
    let mut duplicated = 0;
    for row in &rows {
        let order: Uuid = row.try_get(0)?;
        let key: Option<String> = row.try_get(1)?;
        in_log.insert(order);
        match key.as_deref().and_then(|k| accepted.get(k)) {
            Some(o) if *o == order => {}
            // The request got a 201 for another order: it was placed twice.
            Some(_) => duplicated += 1,
            // Written without a 201 (or without its request's key).
            None => ghosts += 1,
        }
    }
    let lost = accepted.values().filter(|o| !in_log.contains(o)).count();
    Ok(OrdersCheck {
        in_log: in_log.len(),
        lost,
        ghosts,
        duplicated,
    })
}

struct TopicCheck {
    records: usize,
    events: usize,
    redelivered: usize,
    missing: usize,
    out_of_order: usize,
    /// Records per partition.
    per_partition: BTreeMap<i32, i64>,
    failures: Vec<String>,
}

/// Every event of the log on the topic at least once; per order, first
/// occurrences in version order and on one partition.
async fn topic_check(pool: &PgPool, broker: &str, topic: &str) -> Result<TopicCheck> {
    let client = projections::kafka::connect(&[broker.to_owned()], Duration::from_secs(30))
        .await
        .context("connect to the broker")?;
    let partitions = client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == topic)
        .context("the topic exists")?
        .partitions;
    // Per order: (partition, version) of each record, in offset order.
    let mut seen: HashMap<Uuid, Vec<(i32, u64, Uuid)>> = HashMap::new();
    let mut records = 0;
    let mut per_partition = BTreeMap::new();
    for p in partitions {
        let pc = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Retry)
            .await?;
        let mut offset = 0;
        loop {
            let (batch, high_watermark) = pc.fetch_records(offset, 1..4_000_000, 100).await?;
            for r in &batch {
                records += 1;
                let envelope: domain::EventEnvelope =
                    serde_json::from_slice(r.record.value.as_deref().unwrap_or_default())
                        .with_context(|| format!("record {p}/{} is not an envelope", r.offset))?;
                seen.entry(envelope.stream_id.as_uuid()).or_default().push((
                    p,
                    envelope.version,
                    envelope.event_id,
                ));
            }
            match batch.last() {
                Some(last) => offset = last.offset + 1,
                None => break,
            }
            if offset >= high_watermark {
                break;
            }
        }
        per_partition.insert(p, offset);
    }

    let log = sqlx::query("SELECT stream_id, version, event_id FROM events ORDER BY position")
        .fetch_all(pool)
        .await?;
    let mut expected: HashMap<Uuid, Vec<(u64, Uuid)>> = HashMap::new();
    for row in &log {
        let version: i32 = row.try_get(1)?;
        expected
            .entry(row.try_get(0)?)
            .or_default()
            .push((u64::try_from(version)?, row.try_get(2)?));
    }
    let mut missing = 0;
    let mut out_of_order = 0;
    let mut redelivered = 0;
    let mut failures = Vec::new();
    for (order, events) in &expected {
        let on_topic = seen.get(order).map(Vec::as_slice).unwrap_or_default();
        let mut first = Vec::new();
        let mut ids = HashSet::new();
        for (_, version, id) in on_topic {
            if ids.insert(*id) {
                first.push(*version);
            } else {
                redelivered += 1;
            }
        }
        missing += events.iter().filter(|(_, id)| !ids.contains(id)).count();
        out_of_order += first.windows(2).filter(|w| w[0] >= w[1]).count();
        let partitions: HashSet<i32> = on_topic.iter().map(|(p, _, _)| *p).collect();
        if partitions.len() > 1 {
            failures.push(format!(
                "order {order} is on {} partitions",
                partitions.len()
            ));
        }
    }
    let strangers = seen.keys().filter(|o| !expected.contains_key(o)).count();
    if missing > 0 {
        failures.push(format!("{missing} events never reached the topic"));
    }
    if out_of_order > 0 {
        failures.push(format!(
            "{out_of_order} events published out of version order"
        ));
    }
    if strangers > 0 {
        failures.push(format!(
            "{strangers} orders on the topic are not in the log"
        ));
    }
    Ok(TopicCheck {
        records,
        events: log.len(),
        redelivered,
        missing,
        out_of_order,
        per_partition,
        failures,
    })
}

struct DeliveryCheck {
    consumed: i64,
    consumed_twice: i64,
    failures: Vec<String>,
}

/// The delivery projection's offsets: every record consumed, none twice (its
/// count of applied records moves with its offsets, in one transaction).
async fn delivery_check(
    pool: &PgPool,
    topic: &str,
    per_partition: &BTreeMap<i32, i64>,
) -> Result<DeliveryCheck> {
    let mut conn = pool.acquire().await?;
    let generation =
        projections::checkpoint::active_generation(&mut conn, projections::delivery::NAME).await?;
    let rows = sqlx::query(
        "SELECT partition, next_offset, events_applied FROM delivery.offsets
          WHERE generation = $1 AND topic = $2",
    )
    .bind(generation)
    .bind(topic)
    .fetch_all(&mut *conn)
    .await?;
    let mut consumed = 0;
    let mut failures = Vec::new();
    let mut offsets = BTreeMap::new();
    for row in &rows {
        let partition: i32 = row.try_get(0)?;
        offsets.insert(partition, row.try_get::<i64, _>(1)?);
        consumed += row.try_get::<i64, _>(2)?;
    }
    for (partition, end) in per_partition {
        let at = offsets.get(partition).copied().unwrap_or(0);
        if at != *end {
            failures.push(format!(
                "delivery consumed partition {partition} up to {at}, the topic has {end}"
            ));
        }
    }
    let records: i64 = per_partition.values().sum();
    let consumed_twice = (consumed - records).max(0);
    if consumed != records {
        failures.push(format!(
            "delivery counted {consumed} records consumed, the topic has {records}"
        ));
    }
    Ok(DeliveryCheck {
        consumed,
        consumed_twice,
        failures,
    })
}
