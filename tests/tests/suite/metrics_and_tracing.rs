//! `/metrics` after traffic, and a request id followed from the request to
//! the response, the stored event and the Kafka record.

use std::time::Duration;

use e2e::{eventually, read_topic, spawn_app_opts, test_kafka, AppOptions};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_requests_appends_outbox_relay_and_projections() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    let id = app.place_ok("mx").await;
    app.move_to("mx", &id, "preparing", &[]).await.ok(200);
    app.place("mx", json!({"coffee_name": ""}))
        .await
        .problem(422);
    e2e::delivery_caught_up(&app.db, Duration::from_secs(10)).await;
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = reply.text;
    for needle in [
        r#"http_requests_total{method="POST",route="/order-ms/{user_id}/orders",status="201"}"#,
        r#"http_requests_total{method="POST",route="/order-ms/{user_id}/orders",status="422"}"#,
        "http_request_duration_seconds_bucket",
        "event_store_appends_total",
        "outbox_backlog_rows 0",
        "outbox_oldest_age_seconds",
        "relay_published_total",
        r#"projection_position{projection="orders"}"#,
        r#"projection_lag_events{projection="orders"}"#,
        r#"projection_lag_seconds{projection="orders"}"#,
        "projection_log_head",
        r#"projection_batches_total{projection="orders"}"#,
        r#"projection_events_applied_total{projection="delivery"}"#,
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_travels_to_the_response_the_event_and_the_kafka_record() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    let body = json!({"coffee_name": "cortado", "coffee_price": "4000"});
    let reply = app
        .request(
            Method::POST,
            "/order-ms/tia/orders",
            Some(&body),
            &[("X-Request-Id", "req-7f3a-42")],
        )
        .await;
    let order = reply.ok(201);
    assert_eq!(reply.header("x-request-id"), Some("req-7f3a-42"));

    let metadata: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE stream_id = $1::uuid")
            .bind(order["order_id"].as_str().expect("id"))
            .fetch_one(&app.db.pool)
            .await
            .expect("the event");
    assert_eq!(metadata["correlation_id"], "req-7f3a-42");
    assert_eq!(metadata["request_id"], "req-7f3a-42");

    eventually(Duration::from_secs(10), "the relay to publish", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    let records = read_topic(app.kafka.as_ref().expect("kafka")).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].headers.get("correlation_id").map(String::as_str),
        Some("req-7f3a-42")
    );

    // Without one, the server makes one up and returns it.
    let reply = app.get("/order-ms").await;
    assert!(reply
        .header("x-request-id")
        .is_some_and(|id| !id.is_empty()));
}

/// A placement's stages as its `Server-Timing` names them, in order, each
/// with a duration in milliseconds.
fn stages_of(reply: &e2e::Reply) -> Vec<String> {
    let timing = reply
        .header("server-timing")
        .expect("a Server-Timing header");
    timing
        .split(", ")
        .map(|stage| {
            let (name, dur) = stage.split_once(";dur=").expect("name;dur=ms");
            let ms: f64 = dur.parse().expect("milliseconds");
            assert!(ms >= 0.0, "{timing}");
            name.to_owned()
        })
        .collect()
}

/// A placement says where its time went (`Server-Timing`, milliseconds per
/// stage, in order), and `/metrics` keeps every stage's histogram. A first
/// placement with an idempotency key is one round trip: its key goes in
/// with the append, and is read only when a retry finds it taken.
#[tokio::test]
async fn a_placement_says_where_its_time_went() {
    let app = e2e::spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 5000});
    let place = || {
        app.request(
            Method::POST,
            "/order-ms/timed/orders",
            Some(&body),
            &[("Idempotency-Key", "timed-1")],
        )
    };
    let first = place().await;
    assert_eq!(first.status, 201, "{}", first.text);
    // The pickup number is drawn by the append itself, and the key is
    // written by it: neither is a stage of its own.
    assert_eq!(stages_of(&first), ["auth", "menu", "append"]);
    let retry = place().await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(
        retry.json()["order_id"],
        first.json()["order_id"],
        "replayed"
    );
    // The retry's append wrote nothing; the key's record was read to replay.
    assert_eq!(stages_of(&retry), ["auth", "menu", "append", "idempotency"]);
    assert_eq!(app.db.events().await, 1, "one placement written");
    let metrics = app.get("/metrics").await.text;
    for stage in ["auth", "idempotency", "menu", "append"] {
        let bucket = format!(r#"place_order_stage_seconds_count{{stage="{stage}"}}"#);
        assert!(metrics.contains(&bucket), "{bucket} in /metrics");
    }
    // How many placements shared a statement, and how long it took.
    for series in ["batch_size_count", "batch_run_seconds_count"] {
        let series = format!(r#"{series}{{batch="group_commit"}}"#);
        assert!(metrics.contains(&series), "{series} in /metrics");
    }
}
