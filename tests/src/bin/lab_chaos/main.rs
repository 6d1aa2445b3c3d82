//! `just lab chaos`: faults on the lab's hosts, one at a time, under load,
//! each with its own verdict; then the invariants over the whole run.
//!
//! Runs on the lab's `client` host (scripts/lab.sh starts it there, after
//! emptying the service's database and topic). The load is the `just chaos`
//! clients' (they share its source): customers placing orders with an
//! `Idempotency-Key` and retrying with it until the answer is definitive,
//! staff moving the orders on, all through the load balancer at
//! `http://lb/coffee`, signed in at the lab's provider. The faults are the
//! lab script's (`cut`, `mend`, `stop`, …) and signals to a host's processes.
//!
//! For each fault, a probe places an order through the load balancer from
//! the moment the fault is injected, retrying with one key, and measures the
//! seconds until writes are accepted again, until reads answer, and until
//! that order shows on the board. After the last fault, once the system has
//! converged: every acknowledged order is in the log once (lost, ghost,
//! duplicated = 0), `orders verify` holds for both read models, every event
//! reached the topic in order, the delivery model applied each record once,
//! and every 5xx a client saw was a 503 with `Retry-After`.

#[path = "../chaos/checks.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../chaos/clients.rs"]
#[allow(dead_code)]
mod clients;
mod faults;
#[path = "../chaos/infra.rs"]
#[allow(dead_code)]
mod infra;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use clients::{client_loop, until_definitive, user_of, Callers, Stats};
use faults::{Fault, Lab};

#[derive(Debug, Parser)]
#[command(
    about = "Faults on the lab's hosts under load, each with its verdict (see the module docs)"
)]
struct Args {
    /// scripts/lab.sh, which injects and mends the faults.
    #[arg(long)]
    lab_script: PathBuf,
    /// The `orders` binary (for `orders verify`).
    #[arg(long)]
    orders_bin: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Orders per second, all clients together.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Only the faults whose names contain this (all by default).
    #[arg(long)]
    only: Option<String>,
    /// Seconds allowed to converge after the last fault.
    #[arg(long, default_value_t = 180)]
    converge_timeout: u64,
}

pub(crate) const BASE: &str = "http://lb/coffee";
const ISSUER: &str = "https://idp:8443";
const DATABASE: &str = "postgres://orders:lab-orders@lb:5432/orders";
const BROKERS: &str = "kafka1:9092,kafka2:9092";
const TOPIC: &str = "orders-events";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lab chaos: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

pub(crate) fn say(message: impl AsRef<str>) {
    eprintln!("lab chaos: {}", message.as_ref());
}

/// What one fault cost: seconds from its injection until writes were
/// accepted, reads answered, and the probe's order showed on the board.
pub(crate) struct Verdict {
    pub(crate) name: &'static str,
    pub(crate) writes: Option<f64>,
    pub(crate) reads: Option<f64>,
    pub(crate) board: Option<f64>,
}

async fn run(args: Args) -> Result<bool> {
    let lab = Lab::new(args.lab_script.clone());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(DATABASE)
        .await
        .context("connect to the lab's database")?;
    let ca = std::fs::read(lab.dir().join("ca/ca.pem")).context("the lab's CA")?;
    let staff = token(&ca, "barista", Some("staff")).await?;
    let stats = Arc::new(Stats::default());
    let traffic_on = Arc::new(AtomicBool::new(true));
    let bases = Arc::new(vec![BASE.to_owned()]);
    let period = Duration::from_secs_f64(args.clients as f64 / args.rate.max(0.1));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..args.clients {
        let customer = token(&ca, &user_of(client), None).await?;
        clients.spawn(client_loop(
            client,
            Callers::new(&customer, &staff)?,
            bases.clone(),
            period,
            stats.clone(),
            traffic_on.clone(),
        ));
    }
    let probe = Probe {
        callers: Callers::new(&token(&ca, "probe", None).await?, &staff)?,
        stats: stats.clone(),
    };
    say(format!(
        "{} clients, {} orders/s through {BASE}",
        args.clients, args.rate
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut verdicts = Vec::new();
    for fault in Fault::all() {
        if args
            .only
            .as_deref()
            .is_some_and(|only| !fault.name().contains(only))
        {
            continue;
        }
        say(format!("fault: {}", fault.name()));
        // The probe starts once the fault has taken effect.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let measuring = async {
            match rx.await {
                Ok(injected) => probe.measure(injected).await,
                Err(_) => (None, None, None),
            }
        };
        let (measured, done) = tokio::join!(measuring, fault.run(&lab, &pool, tx));
        done.with_context(|| format!("the fault {:?}", fault.name()))?;
        let (writes, reads, board) = measured;
        verdicts.push(Verdict {
            name: fault.name(),
            writes,
            reads,
            board,
        });
        // Recovered: a settled pause before the next one.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let last_fault = Instant::now();
    traffic_on.store(false, Ordering::SeqCst);
    while let Some(done) = clients.join_next().await {
        done?;
    }
    say("traffic over; every request has its answer; waiting to converge");
    let converged = checks::converge(&pool, Duration::from_secs(args.converge_timeout)).await?;
    let converge_secs = converged
        .saturating_duration_since(last_fault)
        .as_secs_f64();
    let failures = verdict_table(&args, &pool, &stats, &verdicts, converge_secs).await?;
    Ok(failures.is_empty())
}

/// Prints the table and the invariants; the failures.
async fn verdict_table(
    args: &Args,
    pool: &sqlx::PgPool,
    stats: &Stats,
    verdicts: &[Verdict],
    converge_secs: f64,
) -> Result<Vec<String>> {
    let secs = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.1}"));
    println!();
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        "fault", "writes s", "reads s", "board s"
    );
    for v in verdicts {
        println!(
            "{:<44} {:>8} {:>8} {:>8}",
            v.name,
            secs(v.writes),
            secs(v.reads),
            secs(v.board)
        );
    }
    let mut failures = Vec::new();
    for v in verdicts {
        if v.writes.is_none() || v.reads.is_none() || v.board.is_none() {
            failures.push(format!("{}: did not recover", v.name));
        }
    }
    let accepted = stats.accepted();
    let orders = checks::orders_check(pool, &accepted).await?;
    println!();
    println!(
        "orders          acknowledged {}   lost {}   ghost {}   duplicated {}   (log holds {})",
        accepted.len(),
        orders.lost,
        orders.ghosts,
        orders.duplicated,
        orders.in_log
    );
    if orders.lost + orders.ghosts + orders.duplicated > 0 {
        failures.push("orders lost, ghost or duplicated".to_owned());
    }
    let topic = checks::topic_check(pool, BROKERS, TOPIC).await?;
    println!(
        "topic           {} records for {} events: {} redelivered, {} missing, {} out of order",
        topic.records, topic.events, topic.redelivered, topic.missing, topic.out_of_order
    );
    failures.extend(topic.failures);
    let delivery = checks::delivery_check(pool, TOPIC, &topic.per_partition).await?;
    println!(
        "delivery model  {} records consumed, each once ({} consumed twice)",
        delivery.consumed, delivery.consumed_twice
    );
    failures.extend(delivery.failures);
    failures.extend(verify(args).await?);
    let bad = stats.server_errors.load(Ordering::Relaxed);
    let unresolved = stats.unresolved.load(Ordering::Relaxed);
    println!(
        "answers         {} retried; 5xx other than 503 with Retry-After: {bad}; never settled: {unresolved}; refused moves: {}",
        stats.retries.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed)
    );
    if bad > 0 {
        failures.push(format!(
            "{bad} answers were 5xx other than 503 with Retry-After"
        ));
    }
    if unresolved > 0 {
        failures.push(format!("{unresolved} requests never settled"));
    }
    println!("converged       {converge_secs:.1} s after the last fault");
    if failures.is_empty() {
        println!("result          every invariant holds");
    } else {
        println!("result          FAILED: {}", failures.join("; "));
    }
    Ok(failures)
}

/// `orders verify` against the lab's database: what it printed, and its
/// failure if it found a difference.
async fn verify(args: &Args) -> Result<Option<String>> {
    let verify = tokio::process::Command::new(&args.orders_bin)
        .arg("verify")
        .env("DATABASE_URL", DATABASE)
        .output()
        .await?;
    let verified = String::from_utf8_lossy(&verify.stdout)
        .trim()
        .replace('\n', "; ");
    println!("orders verify   {verified}");
    Ok((!verify.status.success()).then(|| {
        format!(
            "orders verify: {verified} {}",
            String::from_utf8_lossy(&verify.stderr).trim()
        )
    }))
}

/// An access token from the lab's provider (its development grant), over
/// https under the lab's CA.
async fn token(ca: &[u8], user: &str, role: Option<&str>) -> Result<String> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut form = vec![
        ("grant_type", "urn:orders:params:oauth:grant-type:dev-token"),
        ("username", user),
        ("ttl", "86400"),
    ];
    if let Some(role) = role {
        form.push(("role", role));
    }
    let body: serde_json::Value = http
        .post(format!("{ISSUER}/token"))
        .basic_auth("orders-dev", Some("orders-dev-secret"))
        .form(&form)
        .send()
        .await?
        .json()
        .await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no token from the lab's provider: {body}"))
}

/// The probe of a fault: one order placed from the moment of injection.
struct Probe {
    callers: Callers,
    stats: Arc<Stats>,
}

impl Probe {
    /// Seconds from `injected` until the probe's order was accepted, its
    /// list answered, and it showed on the board (`None`: not within the
    /// probe's patience).
    async fn measure(&self, injected: Instant) -> (Option<f64>, Option<f64>, Option<f64>) {
        let since = |_: ()| Some(injected.elapsed().as_secs_f64());
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"coffee_name": "probe", "coffee_price": "5000", "coffee_qty": "1"});
        let placed = until_definitive(&self.stats, || {
            self.callers
                .customer
                .post(format!("{BASE}/order-ms/probe/orders"))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
        })
        .await;
        let Some(order) = placed.and_then(|answer| {
            answer.body["order_id"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
        }) else {
            return (None, None, None);
        };
        if let Ok(mut accepted) = self.stats.accepted.lock() {
            accepted.insert(key, order);
        }
        let writes = since(());
        let reads = self
            .until(|| async {
                let r = self
                    .callers
                    .customer
                    .get(format!("{BASE}/order-ms/probe/orders?limit=1"))
                    .send()
                    .await;
                r.is_ok_and(|r| r.status().is_success())
            })
            .await
            .and_then(|()| since(()));
        let board = self
            .until(|| async {
                let r = self
                    .callers
                    .staff
                    .get(format!("{BASE}/delivery-ms/probe/{order}"))
                    .send()
                    .await;
                r.is_ok_and(|r| r.status().is_success())
            })
            .await
            .and_then(|()| since(()));
        (writes, reads, board)
    }

    /// Asks until `ok`, every 200 ms, for at most three minutes.
    async fn until<F, Fut>(&self, mut ok: F) -> Option<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let give_up = Instant::now() + Duration::from_secs(180);
        while Instant::now() < give_up {
            if ok().await {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}
