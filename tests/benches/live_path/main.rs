//! Benchmark of the pages' live updates: from a committed change to the
//! event on an open page, with 200 event streams connected, against the
//! same path with one stream of each kind measured in the same run
//! (absolute numbers are noise on a shared 2-core machine).
//!
//! The service is `orders all` as a process, as `just run` deploys it
//! (authentication on, Kafka, the relay and both projections beside the
//! API). Customers place orders at a steady rate and staff move each to
//! preparing shortly after; every customer has `/events/orders` open and
//! the boards have `/events/board` open, each stream on its own connection,
//! read as a browser's `EventSource` reads it. A change's latency runs from
//! the moment its request is sent (so it is an upper bound of "from commit")
//! to the moment its event is read on a stream: for a customer's page through
//! the order read model, for a board through the outbox, Kafka and the
//! delivery read model.
//!
//! Run with `just bench-live` (needs DATABASE_URL and KAFKA_BROKERS, and the
//! release `orders` binary, which the recipe builds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{spawn_orders_all, As, TestApp};
use reqwest::Method;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod measure;
mod streams;

use measure::{Outcome, Seen};
use streams::{read_stream, Arrival, Change, Stream};

/// Orders placed per second, in every phase.
const RATE: u32 = 20;
/// How long after its placement each order is moved to preparing.
const MOVE_AFTER: Duration = Duration::from_millis(300);
/// The target: a change reaches every open page within this.
const TARGET: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Phase {
    customers: usize,
    boards: usize,
    orders: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` builds and runs bench targets too; only
    // `cargo bench` (which passes `--bench`) should spend minutes measuring.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("live_path: benchmark skipped (run it with `just bench-live`)");
        return;
    }
    let (app, child) = spawn_orders_all(&[("RUST_LOG", "warn")]).await;
    let app = Arc::new(app);
    let pid = child.id();
    let idle_rss = pid.and_then(rss_kib);

    // Warm up: topic, consumer, connections, the hub's listener.
    run_phase(
        &app,
        pid,
        "warm",
        Phase {
            customers: 1,
            boards: 1,
            orders: 10,
        },
    )
    .await;
    let baseline = run_phase(
        &app,
        pid,
        "base",
        Phase {
            customers: 1,
            boards: 1,
            orders: 100,
        },
    )
    .await;
    let loaded = run_phase(
        &app,
        pid,
        "load",
        Phase {
            customers: 150,
            boards: 50,
            orders: 300,
        },
    )
    .await;
    report(&baseline, &loaded, idle_rss);
}

/// Prints the baseline and the loaded phase side by side, their ratio, and
/// whether the target holds.
fn report(baseline: &Outcome, loaded: &Outcome, idle_rss: Option<u64>) {
    println!(
        "\ncommit → change on an open page: `orders all` (authentication on, Kafka), \
         {RATE} orders/s, each moved to preparing {} ms after it was placed; \
         from the request sent to the event read on the stream",
        MOVE_AFTER.as_millis()
    );
    println!(
        "  {:<40} {:>20} {:>20} {:>16}",
        "", "customer's page", "each board", "last board"
    );
    println!(
        "  {:<40} {:>9} {:>10} {:>9} {:>10} {:>16}",
        "", "p50 ms", "p99 ms", "p50 ms", "p99 ms", "p99 ms"
    );
    for (name, outcome) in [
        ("baseline: 1 customer + 1 board", baseline),
        ("200 streams: 150 customers + 50 boards", loaded),
    ] {
        println!(
            "  {:<40} {:>9.1} {:>10.1} {:>9.1} {:>10.1} {:>16.1}",
            name,
            ms(outcome.customer.at(0.50)),
            ms(outcome.customer.at(0.99)),
            ms(outcome.board.at(0.50)),
            ms(outcome.board.at(0.99)),
            ms(outcome.last_board.at(0.99)),
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "  {:<40} {:>9} {:>10.2} {:>9} {:>10.2} {:>16.2}",
        "ratio, 200 streams / baseline",
        "",
        ratio(loaded.customer.at(0.99), baseline.customer.at(0.99)),
        "",
        ratio(loaded.board.at(0.99), baseline.board.at(0.99)),
        ratio(loaded.last_board.at(0.99), baseline.last_board.at(0.99)),
    );
    for (name, outcome) in [("baseline", baseline), ("200 streams", loaded)] {
        println!(
            "  {name}: {} of {} events read ({} changes); {} not seen within 10 s",
            outcome.read, outcome.expected, outcome.changes, outcome.missing
        );
    }
    let worst = loaded.customer.at(0.99).max(loaded.last_board.at(0.99));
    println!(
        "  target: p99 ≤ {} ms on every page with 200 streams, none missed: {}",
        TARGET.as_millis(),
        if worst <= TARGET && loaded.missing == 0 {
            "holds"
        } else {
            "MISSED"
        }
    );
    if let (Some(idle), Some(loaded)) = (idle_rss, loaded.rss) {
        println!(
            "  `orders all` resident memory: {} MiB idle, {} MiB with 200 streams open",
            idle / 1024,
            loaded / 1024
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One phase: opens its streams, drives its orders, waits for every stream
/// to read every change (or 10 s), and measures what arrived.
async fn run_phase(app: &Arc<TestApp>, pid: Option<u32>, tag: &str, phase: Phase) -> Outcome {
    let users: Vec<String> = (0..phase.customers)
        .map(|i| format!("{tag}{i:04}"))
        .collect();
    // Tokens first, so no request of the measured ones waits for one.
    let (customer_auth, staff_auth) = authorizations(app, &users).await;
    let mut streams = open_streams(app, &customer_auth, &staff_auth, phase.boards).await;
    let sent = drive_orders(app, &users, phase.orders).await;

    // Wait until every stream read every change it should, or 10 s.
    let per_change = 1 + phase.boards;
    let expected = sent.len() * per_change;
    let mut seen = Seen::new(&sent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut wanted = 0;
    while wanted < expected {
        match tokio::time::timeout_at(deadline, streams.collected.recv()).await {
            Ok(Some(a)) => wanted += seen.keep(a),
            _ => break,
        }
    }
    let rss = pid.and_then(rss_kib);
    streams.stop.cancel();
    for task in streams.tasks {
        let _ = task.await;
    }
    while let Ok(a) = streams.collected.try_recv() {
        seen.keep(a);
    }
    seen.outcome(expected, rss)
}

/// The customers' authorization headers, in the order of `users`, and
/// staff's.
async fn authorizations(app: &TestApp, users: &[String]) -> (Vec<String>, String) {
    let mut customer_auth = Vec::new();
    for user in users {
        customer_auth.push(
            app.authorization(&As::customer(user))
                .await
                .expect("authentication is on"),
        );
    }
    let staff_auth = app
        .authorization(&As::Staff)
        .await
        .expect("authentication is on");
    (customer_auth, staff_auth)
}

/// A phase's open streams: their readers and what they read.
struct OpenStreams {
    /// Ends every reader.
    stop: CancellationToken,
    /// Every order or status event any stream read.
    collected: mpsc::UnboundedReceiver<Arrival>,
    /// The phase's own sender, held open until the phase ends: the wait for
    /// arrivals then runs to its deadline even if every reader has ended.
    _arrivals: mpsc::UnboundedSender<Arrival>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens `/events/orders` for each customer and `/events/board` for each of
/// `boards` boards, each on its own connection as browsers hold them, and
/// returns once every stream says it is ready.
async fn open_streams(
    app: &TestApp,
    customer_auth: &[String],
    staff_auth: &str,
    boards: usize,
) -> OpenStreams {
    let streams_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let stop = CancellationToken::new();
    let (arrivals, collected) = mpsc::unbounded_channel();
    let mut readies = Vec::new();
    let mut tasks = Vec::new();
    let opened = customer_auth
        .iter()
        .enumerate()
        .map(|(i, auth)| (Stream::Customer(i), "/events/orders", auth.clone()))
        .chain((0..boards).map(|i| (Stream::Board(i), "/events/board", staff_auth.to_owned())));
    for (stream, path, auth) in opened {
        let (ready, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        tasks.push(tokio::spawn(read_stream(
            streams_client.clone(),
            format!("{}{path}", app.base),
            auth,
            stream,
            ready,
            arrivals.clone(),
            stop.clone(),
        )));
    }
    for ready in readies {
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("every stream says ready within 30 s")
            .expect("the stream opened");
    }
    OpenStreams {
        stop,
        collected,
        _arrivals: arrivals,
        tasks,
    }
}

/// The load: `orders` placements at RATE, the users taking turns, each moved
/// on to preparing MOVE_AFTER later. Returns when each change was sent.
async fn drive_orders(
    app: &Arc<TestApp>,
    users: &[String],
    orders: usize,
) -> HashMap<Change, Instant> {
    let mut sent: HashMap<Change, Instant> = HashMap::new();
    let (sends, mut sent_rx) = mpsc::unbounded_channel::<(Change, Instant)>();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / RATE);
    let mut drivers = Vec::new();
    for i in 0..orders {
        ticker.tick().await;
        let user = users[i % users.len()].clone();
        let (app, sends) = (app.clone(), sends.clone());
        drivers.push(tokio::spawn(async move {
            let at = Instant::now();
            let placed = app
                .request_as(
                    As::customer(&user),
                    Method::POST,
                    &format!("/order-ms/{user}/orders"),
                    Some(&serde_json::json!({
                        "coffee_name": "latte", "coffee_price": "5000", "coffee_qty": "1",
                        "options": {"temperature": "iced"}
                    })),
                    &[],
                )
                .await
                .ok(201);
            let id: Uuid = placed["order_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("an order id");
            let _ = sends.send(((id, "received".to_owned()), at));
            tokio::time::sleep(MOVE_AFTER).await;
            let at = Instant::now();
            app.move_to(&user, &id.to_string(), "preparing", &[])
                .await
                .ok(200);
            let _ = sends.send(((id, "preparing".to_owned()), at));
        }));
    }
    for driver in drivers {
        driver.await.expect("a driver");
    }
    drop(sends);
    while let Some((change, at)) = sent_rx.recv().await {
        sent.insert(change, at);
    }
    sent
}

/// A process's resident memory, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
