//! Benchmarks of the Kafka path, each printed against a baseline measured in
//! the same run (absolute numbers are noise on a shared 2-core machine):
//!
//! - relay drain: a 100,000-row outbox backlog published by the relay, against
//!   rskafka producing the same records to the same broker directly;
//! - commit → delivery read model latency at a fixed rate of orders, run by
//!   run on fresh processes (10 by default), beside the log-fed order read
//!   model's latency measured in the same runs.
//!
//! Run with `just bench-kafka` (needs DATABASE_URL and KAFKA_BROKERS).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{spawn_app_opts, test_kafka, AppOptions, TestApp};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

mod drain;

use drain::relay_drain;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` builds and runs bench targets too; only
    // `cargo bench` (which passes `--bench`) should spend minutes measuring.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("kafka_path: benchmark skipped (run it with `just bench-kafka`)");
        return;
    }
    // `--latency-only`: only the latency runs (`--latency-runs N`, default 10);
    // `--drain-only`: only the relay's drain.
    if !std::env::args().any(|arg| arg == "--latency-only") {
        let d = relay_drain().await;
        println!("\nrelay drain of {} outbox rows", d.rows);
        println!(
            "  baseline: rskafka produce, same records        {:>10.0} events/s   1.00",
            d.raw
        );
        println!(
            "  orders relay (read, produce, delete)            {:>10.0} events/s   {:.2}",
            d.relay,
            d.relay / d.raw
        );
        println!(
            "  PostgreSQL alone (the relay's reads, deletes)   {:>10.0} events/s   {:.2}",
            d.database_only,
            d.database_only / d.raw
        );
        println!(
            "  target: relay ≥ 0.5 of raw produce: {:.2}, {}; the relay runs at {:.2} of PostgreSQL's part alone",
            d.relay / d.raw,
            if d.relay >= 0.5 * d.raw { "holds" } else { "MISSED" },
            d.relay / d.database_only
        );
    }
    // `--drain-only`: only the drain.
    if std::env::args().any(|arg| arg == "--drain-only") {
        return;
    }
    // Run by run, each on a fresh process's connections: the latency must
    // not depend on which mode a run's sockets happen to settle in.
    let runs: usize = std::env::args()
        .skip_while(|arg| arg != "--latency-runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    println!(
        "\ncommit → read model at {RATE} orders/s for {SECONDS} s, {runs} runs (a fresh `orders all` each)"
    );
    println!(
        "  {:<5} {:>26} {:>26}",
        "run", "baseline: orders (log-fed)", "delivery (via Kafka)"
    );
    println!("  {:<5} {:>26} {:>26}", "", "p50 / p99 ms", "p50 / p99 ms");
    let mut held = 0;
    for run in 1..=runs {
        let (orders, delivery) = delivery_latency().await;
        let (d50, d99) = (ms(delivery.0), ms(delivery.1));
        if d99 <= LATENCY_TARGET_MS {
            held += 1;
        }
        println!(
            "  {run:<5} {:>26} {:>26}",
            format!("{:.1} / {:.1}", ms(orders.0), ms(orders.1)),
            format!("{d50:.1} / {d99:.1}"),
        );
    }
    println!(
        "  target: delivery p99 ≤ {LATENCY_TARGET_MS} ms in every run: {held} of {runs}, {}",
        if held == runs { "holds" } else { "MISSED" }
    );
}

const RATE: u32 = 1000;
const SECONDS: u32 = 5;
const LATENCY_TARGET_MS: f64 = 50.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// When each order was seen, by order id.
type Stamps = Arc<Mutex<HashMap<uuid::Uuid, Instant>>>;

/// One run: (p50, p99) from commit to the order read model (fed from the
/// log, no Kafka: the same-run baseline) and to the delivery read model.
async fn delivery_latency() -> ((Duration, Duration), (Duration, Duration)) {
    let app = Arc::new(
        spawn_app_opts(AppOptions {
            kafka: Some(test_kafka()),
            ..AppOptions::default()
        })
        .await,
    );
    // Warm up: the topic exists and the consumer runs.
    let id = app.place_ok("warmup").await;
    while app.get(&format!("/delivery-ms/warmup/{id}")).await.status != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed: Stamps = Arc::default();
    let in_orders: Stamps = Arc::default();
    let in_delivery: Stamps = Arc::default();
    let stop = CancellationToken::new();
    let pool = &app.db.pool;
    let pollers = [
        poll(pool, "order_view", &committed, in_orders.clone(), &stop),
        poll(
            pool,
            "delivery.order_status",
            &committed,
            in_delivery.clone(),
            &stop,
        ),
    ];
    place_at_rate(&app, &committed).await;
    let total = committed.lock().await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (in_orders.lock().await.len() < total || in_delivery.lock().await.len() < total)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for p in pollers {
        p.await.expect("poller");
    }
    let c = committed.lock().await;
    let result = (
        quantiles(&c, &*in_orders.lock().await),
        quantiles(&c, &*in_delivery.lock().await),
    );
    drop(c);
    // Every request has finished: the app is this function's alone again.
    if let Ok(app) = Arc::try_unwrap(app) {
        app.stop().await;
    }
    result
}

/// A poller that stamps in `seen` when each `committed` order first shows in
/// the read model `table`, until `stop`.
fn poll(
    pool: &sqlx::PgPool,
    table: &'static str,
    committed: &Stamps,
    seen: Stamps,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (pool, committed, stop) = (pool.clone(), committed.clone(), stop.clone());
    tokio::spawn(async move {
        let query = format!("SELECT order_id FROM {table} WHERE order_id = ANY($1)");
        while !stop.is_cancelled() {
            let pending: Vec<uuid::Uuid> = {
                let c = committed.lock().await;
                let s = seen.lock().await;
                c.keys().filter(|k| !s.contains_key(*k)).copied().collect()
            };
            if !pending.is_empty() {
                let found: Vec<uuid::Uuid> = sqlx::query_scalar(&query)
                    .bind(&pending)
                    .fetch_all(&pool)
                    .await
                    .expect("poll");
                let now = Instant::now();
                let mut s = seen.lock().await;
                for f in found {
                    s.entry(f).or_insert(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Places orders at RATE for SECONDS, 50 customers taking turns, stamping in
/// `committed` when each was committed; returns once every one was.
async fn place_at_rate(app: &Arc<TestApp>, committed: &Stamps) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / RATE);
    let mut placing = Vec::new();
    for i in 0..RATE * SECONDS {
        ticker.tick().await;
        let (app, committed) = (app.clone(), committed.clone());
        placing.push(tokio::spawn(async move {
            let id = app.place_ok(&format!("lat{}", i % 50)).await;
            let at = Instant::now();
            committed.lock().await.insert(id.parse().expect("uuid"), at);
        }));
    }
    for p in placing {
        p.await.expect("place");
    }
}

/// (p50, p99) of the latencies from `committed` to `seen`.
fn quantiles(
    committed: &HashMap<uuid::Uuid, Instant>,
    seen: &HashMap<uuid::Uuid, Instant>,
) -> (Duration, Duration) {
    let mut latencies: Vec<Duration> = committed
        .iter()
        .map(|(id, at)| {
            // Never seen within 30 s counts as 30 s: a miss, not a skip.
            seen.get(id).map_or(Duration::from_secs(30), |seen| {
                seen.saturating_duration_since(*at)
            })
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (pick(0.50), pick(0.99))
}
