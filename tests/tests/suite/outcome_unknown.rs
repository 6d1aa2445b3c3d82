//! Timeouts tell the truth: a write cut off by the request deadline after
//! its append was sent may have committed, so the answer is 503
//! `/problems/outcome-unknown` ("retry with the same Idempotency-Key"), not a
//! plain timeout that invites a retry without a key and so a second order.

use std::time::{Duration, Instant};

use e2e::{eventually, spawn_app_opts, AppOptions};
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_stalled_past_the_deadline_answers_outcome_unknown_and_a_keyed_retry_settles_it()
{
    let app = spawn_app_opts(AppOptions {
        workers: false,
        request_timeout: Some(Duration::from_millis(400)),
        ..AppOptions::default()
    })
    .await;
    // The database stalls every append: a transaction holds the log locked.
    let mut holder = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    let mut stall = holder.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .expect("lock the log");

    let body = json!({"coffee_name": "flat white", "coffee_price": 5500});
    let key = [("Idempotency-Key", "outcome-unknown-1")];
    let started = Instant::now();
    let reply = app
        .request(Method::POST, "/order-ms/yuna/orders", Some(&body), &key)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off near the deadline"
    );
    let problem = reply.problem(503);
    assert_eq!(problem["type"], "/problems/outcome-unknown", "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("same Idempotency-Key"));
    assert_eq!(reply.header("retry-after"), Some("1"));

    // The stall ends; whatever the first attempt did, the keyed retry
    // settles it: one order, the retry's answer names it.
    stall.commit().await.expect("release the log");
    let retried = eventually(Duration::from_secs(10), "a definitive answer", || async {
        let reply = app
            .request(Method::POST, "/order-ms/yuna/orders", Some(&body), &key)
            .await;
        (reply.status == 201).then_some(reply)
    })
    .await;
    let order = retried.json()["order_id"].as_str().expect("id").to_owned();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT stream_id::text FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_all(&app.db.pool)
            .await
            .expect("placements");
    assert_eq!(stored, [order], "exactly one order for the key");
}
