//! Resilience at the edge: load beyond capacity is shed with 503, a request
//! that runs too long is cut off with 503, both as problem+json.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{spawn_app_opts, AppOptions};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_capacity_are_shed_with_503() {
    // No projection worker: a read-your-writes read waits (holds its slot).
    let app = Arc::new(
        spawn_app_opts(AppOptions {
            workers: false,
            max_in_flight: Some(1),
            read_wait: Duration::from_millis(1500),
            ..AppOptions::default()
        })
        .await,
    );
    app.place_ok("ulla").await;
    let slow = {
        let app = app.clone();
        tokio::spawn(async move {
            app.request(
                Method::GET,
                "/order-ms/ulla/orders",
                None,
                &[("Prefer", "consistency=strong")],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let shed = app.get("/order-ms").await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once, not queued"
    );
    let problem = shed.problem(503);
    assert_eq!(problem["type"], "/problems/overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    // The slow one finishes on its own terms; then there is room again.
    slow.await.expect("slow request").problem(503);
    assert_eq!(app.get("/order-ms").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_past_the_timeout_is_answered_503() {
    let app = spawn_app_opts(AppOptions {
        workers: false,
        request_timeout: Some(Duration::from_millis(300)),
        read_wait: Duration::from_secs(5),
        ..AppOptions::default()
    })
    .await;
    app.place_ok("vic").await;
    let started = Instant::now();
    let reply = app
        .request(
            Method::GET,
            "/order-ms/vic/orders",
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut off near the timeout"
    );
    let problem = reply.problem(503);
    assert_eq!(problem["type"], "/problems/timeout");
    // Nothing else suffered.
    assert_eq!(app.get("/order-ms").await.status, 200);
}
