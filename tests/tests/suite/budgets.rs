//! Connection budgets (README, "Configuration"): the API's writes, its
//! reads, the relay and log-fed workers, and the delivery consumer draw from
//! separate pools, so none can take another's connections. Driven against
//! `orders all` as a process: the production assembly, configured by its
//! environment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{eventually, spawn_orders_all, spawn_orders_all_on, TestApp};
use reqwest::Method;

async fn delivery_rows(app: &TestApp) -> i64 {
    app.db
        .count("SELECT count(*) FROM delivery.order_status")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_more_partitions_than_consumer_connections_is_consumed_whole() {
    let (app, _orders) =
        spawn_orders_all(&[("KAFKA_PARTITIONS", "6"), ("DB_CONSUMER_CONNECTIONS", "1")]).await;
    for i in 0..60 {
        app.place_ok(&format!("part{}", i % 7)).await;
    }
    eventually(
        Duration::from_secs(30),
        "every order in the delivery model",
        || async { (delivery_rows(&app).await == 60).then_some(()) },
    )
    .await;
    let partitions: i64 = app
        .db
        .count("SELECT count(DISTINCT partition) FROM delivery.offsets")
        .await;
    assert_eq!(partitions, 6, "every partition was consumed");
}

/// Milliseconds, the 99th percentile.
fn p99(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples
        .get(at.saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

/// For `length`: 100 clients reading their own writes (each read asks for
/// strong consistency; one that times out asks again) and 4 clients placing
/// orders. Returns the placements' latencies (ms) and the reads' answers by
/// status.
async fn under_reads(app: &Arc<TestApp>, length: Duration) -> (Vec<f64>, Vec<u16>) {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..100)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = app
                        .request(
                            Method::GET,
                            "/order-ms/budget-reader/orders",
                            None,
                            &[("Prefer", "consistency=strong")],
                        )
                        .await;
                    answers.push(reply.status.as_u16());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < length {
                    let t = Instant::now();
                    let reply = app
                        .place(
                            &format!("budget-writer{w}"),
                            serde_json::json!({"coffee_name": "latte", "coffee_price": "5000", "coffee_qty": "1"}),
                        )
                        .await;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    reply.ok(201);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in writers {
        latencies.extend(w.await.expect("writer"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for r in readers {
        answers.extend(r.await.expect("reader"));
    }
    (latencies, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_keep_their_latency_while_a_hundred_strong_reads_wait_behind_a_long_transaction() {
    let (app, _orders) =
        spawn_orders_all_on(e2e::TestDb::alone().await, &[("DB_READ_CONNECTIONS", "2")]).await;
    let app = Arc::new(app);
    app.place_ok("budget-reader").await;

    let (calm, calm_reads) = under_reads(&app, Duration::from_secs(5)).await;
    assert!(
        calm_reads.iter().all(|s| *s == 200),
        "without a long transaction every read is answered"
    );

    // A transaction elsewhere holds the horizon for 10 s: no strong read
    // can be answered, a hundred wait (and, after 5 s, answer 503 and ask
    // again), and orders are placed all along.
    let long = e2e::hold_the_horizon(&app.db).await;
    app.place_ok("budget-reader").await;
    let (held, held_reads) = under_reads(&app, Duration::from_secs(10)).await;
    long.rollback().await.expect("end the long transaction");

    assert!(
        held_reads.iter().all(|s| *s == 200 || *s == 503),
        "reads answer or say the model lags: {held_reads:?}"
    );
    assert!(
        held_reads.contains(&503),
        "the long transaction did hold the reads back"
    );
    println!(
        "place order p99: {:.1} ms with no long transaction ({} orders), {:.1} ms while one held the horizon for 10 s under 100 waiting strong reads ({} orders); read budget 2 connections",
        p99(calm.clone()),
        calm.len(),
        p99(held.clone()),
        held.len()
    );
}
