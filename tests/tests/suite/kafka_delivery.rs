//! The whole path with a real Kafka-protocol broker: an order placed at
//! order-ms is stored, relayed to the topic, and shows up in delivery-ms's own
//! store. Each test has its own database and its own topic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::{eventually, read_topic, spawn_app_opts, test_kafka, AppOptions, TestApp};
use infra::kafka::partition_for;
use serde_json::Value;

async fn app_with_kafka() -> TestApp {
    spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await
}

/// The order ids listed by `GET /delivery-ms/{status}`.
async fn in_status(app: &TestApp, status: &str) -> Vec<String> {
    let body = app.get(&format!("/delivery-ms/{status}")).await.ok(200);
    body.as_array()
        .expect("an array")
        .iter()
        .map(|o| o["order_id"].as_str().expect("order_id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_reaches_the_delivery_view_within_two_seconds() {
    let app = app_with_kafka().await;
    let placed_at = Instant::now();
    let id = app.place_ok("USER0001").await;
    eventually(
        Duration::from_secs(2),
        "the order in /delivery-ms/received",
        || async {
            in_status(&app, "received")
                .await
                .contains(&id)
                .then_some(())
        },
    )
    .await;
    eprintln!("placed → delivery view in {:?}", placed_at.elapsed());

    // By Korean label, percent-encoded, with a trailing slash too.
    assert!(in_status(&app, "%EC%A0%91%EC%88%98%EC%99%84%EB%A3%8C/")
        .await
        .contains(&id));

    let detail = app
        .get(&format!("/delivery-ms/USER0001/{id}"))
        .await
        .ok(200);
    assert_eq!(detail["status"], "received");
    assert_eq!(detail["status_label"], "접수완료");
    assert_eq!(detail["coffee_name"], "americano");
    assert_eq!(detail["coffee_qty"], 2);
    assert_eq!(detail["user_id"], "USER0001");

    // Every staff move is reflected.
    for (status, label) in [
        ("preparing", "제작중"),
        ("delivering", "배송중"),
        ("delivered", "배송완료"),
    ] {
        app.move_to("USER0001", &id, label, &[]).await.ok(200);
        eventually(Duration::from_secs(5), status, || async {
            let d = app.get(&format!("/delivery-ms/USER0001/{id}")).await.json();
            (d["status"] == status).then_some(())
        })
        .await;
        assert!(in_status(&app, status).await.contains(&id));
    }
    assert!(!in_status(&app, "received").await.contains(&id));
    let cancelled = app.place_ok("USER0001").await;
    app.cancel("USER0001", &cancelled, &[]).await.ok(200);
    eventually(Duration::from_secs(5), "the cancellation", || async {
        in_status(&app, "취소")
            .await
            .contains(&cancelled)
            .then_some(())
    })
    .await;

    // Readiness covers the broker (an operator reads why).
    let ready = app
        .request_as(
            e2e::As::Operator,
            reqwest::Method::GET,
            "/readyz",
            None,
            &[],
        )
        .await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert!(ready.text.contains("kafka ok"), "{}", ready.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_orders_events_are_on_one_partition_in_version_order() {
    let app = app_with_kafka().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let id = app.place_ok(&format!("user{}", i % 4)).await;
        ids.push((format!("user{}", i % 4), id));
    }
    for (i, (user, id)) in ids.iter().enumerate() {
        app.move_to(user, id, "preparing", &[]).await.ok(200);
        if i % 2 == 0 {
            app.move_to(user, id, "delivering", &[]).await.ok(200);
        } else {
            app.cancel(user, id, &[]).await.ok(200);
        }
    }
    let events = app.db.events().await;
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    let kafka = app.kafka.clone().expect("kafka");
    let records = read_topic(&kafka).await;
    assert_eq!(
        records.len() as i64,
        events,
        "every event on the topic once"
    );
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &records {
        assert_eq!(r.key, r.envelope.stream_id.to_string(), "keyed by order id");
        assert_eq!(
            r.partition,
            partition_for(r.key.as_bytes(), 3),
            "Kafka's partitioner"
        );
        assert_eq!(
            r.headers.get("event_type").map(String::as_str),
            Some(r.envelope.event.event_type())
        );
        assert_eq!(
            r.headers.get("event_id"),
            Some(&r.envelope.event_id.to_string())
        );
        assert!(
            r.headers.contains_key("correlation_id"),
            "the request id travels along"
        );
        versions
            .entry(r.key.clone())
            .or_default()
            .push(r.envelope.version);
    }
    for (order, v) in versions {
        let expected: Vec<u64> = (1..=v.len() as u64).collect();
        assert_eq!(
            v, expected,
            "order {order}: versions ascending on its partition"
        );
    }
}

#[tokio::test]
async fn delivery_reads_refuse_bad_input() {
    let app = app_with_kafka().await;
    let reply = app.get("/delivery-ms/shipped").await;
    let problem = reply.problem(400);
    let valid: Vec<&str> = problem["valid_statuses"]
        .as_array()
        .expect("valid statuses listed")
        .iter()
        .map(|s| s["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        valid,
        [
            "received",
            "preparing",
            "delivering",
            "delivered",
            "cancelled"
        ]
    );
    let id = app.place_ok("mia").await;
    eventually(
        Duration::from_secs(5),
        "the order on the delivery side",
        || async { (app.get(&format!("/delivery-ms/mia/{id}")).await.status == 200).then_some(()) },
    )
    .await;
    // Another user's order is 404, exactly as a missing one.
    app.get(&format!("/delivery-ms/noah/{id}"))
        .await
        .problem(404);
    app.get("/delivery-ms/mia/01890a5d-ac96-774b-bcce-b302099a8057")
        .await
        .problem(404);
    app.get("/delivery-ms/mia/not-an-id").await.problem(404);
    app.get("/delivery-ms/bad%20user/x").await.problem(400);
}

/// Rows of the delivery read model by order id: (status, version).
async fn delivery_rows(app: &TestApp) -> BTreeMap<uuid::Uuid, (String, i32)> {
    projections::delivery::all_rows(&app.db.pool)
        .await
        .expect("delivery rows")
        .into_iter()
        .map(|r| (r.order_id, (r.status.code().to_owned(), r.version)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_model_equals_the_fold_of_the_log() {
    let app = app_with_kafka().await;
    for i in 0..20 {
        let id = app.place_ok("olga").await;
        if i % 3 == 0 {
            app.move_to("olga", &id, "preparing", &[]).await.ok(200);
        }
    }
    let events = app.db.events().await;
    eventually(Duration::from_secs(10), "all events applied", || async {
        let applied = projections::delivery::events_applied(&app.db.pool)
            .await
            .ok()?;
        (applied == events).then_some(())
    })
    .await;
    let (_, fold) = e2e::order_model_and_fold(&app.db.pool).await;
    let expected: BTreeMap<_, _> = fold
        .iter()
        .map(|o| (o.order_id, (o.status.code().to_owned(), o.version)))
        .collect();
    assert_eq!(delivery_rows(&app).await, expected);
    let _: Value = app.get("/delivery-ms/received").await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_reads_json_envelopes_keyed_by_order_id() {
    let app = app_with_kafka().await;
    for i in 0..10 {
        let id = app.place_ok("pyuser").await;
        if i % 2 == 0 {
            app.move_to("pyuser", &id, "preparing", &[]).await.ok(200);
        }
    }
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    let kafka = app.kafka.clone().expect("kafka");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/read_topic.py");
    let output = tokio::process::Command::new("python3")
        .args([
            script,
            "--brokers",
            &kafka.brokers.join(","),
            "--topic",
            &kafka.topic,
            "--expect",
            "15",
        ])
        .output()
        .await
        .expect("run python3 (kafka-python is installed by `just test`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kafka-python check failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
    assert_eq!(summary["records"], 15);
    assert_eq!(summary["orders"], 10);
}

/// The delivery projection's row of `orders projections status --json`.
async fn delivery_status(app: &TestApp) -> Value {
    let kafka = app.kafka.as_ref().expect("kafka");
    let out = e2e::run_orders(&app.db, Some(kafka), &["projections", "status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("status JSON");
    rows.into_iter()
        .find(|r| r["name"] == "delivery")
        .expect("a row for the delivery projection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_delivery_projections_position_and_lag_in_the_logs_terms() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        relay: false,
        ..AppOptions::default()
    })
    .await;
    for _ in 0..3 {
        app.place_ok("lagging").await;
    }
    // Not published yet: three events behind, the oldest some time ago.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let behind = delivery_status(&app).await;
    assert_eq!(behind["lag_events"], 3, "{behind}");
    assert_eq!(behind["head"], 3, "{behind}");
    assert_eq!(behind["position"], 0, "{behind}");
    assert!(
        behind["lag_seconds"].as_f64().expect("seconds") >= 0.2,
        "{behind}"
    );
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"projection_lag_events{projection="delivery"} 3"#),
        "{metrics}"
    );

    let relay = e2e::TestRelay::start(&app.db.pool, app.kafka.as_ref().expect("kafka"));
    eventually(
        Duration::from_secs(20),
        "the delivery model catches up",
        || async {
            let s = delivery_status(&app).await;
            (s["lag_events"] == 0 && s["position"] == 3).then_some(())
        },
    )
    .await;
    let caught_up = delivery_status(&app).await;
    assert_eq!(caught_up["lag_records"], 0, "{caught_up}");
    assert_eq!(caught_up["events_applied"], 3, "{caught_up}");
    let metrics = app.get("/metrics").await.text;
    for needle in [
        r#"projection_position{projection="delivery"} 3"#,
        r#"projection_lag_events{projection="delivery"} 0"#,
        r#"projection_lag_seconds{projection="delivery"} 0"#,
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_list_takes_a_limit_and_newest_first_and_shows_versions() {
    let app = app_with_kafka().await;
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(app.place_ok("USER0009").await);
    }
    eventually(Duration::from_secs(10), "three orders received", || async {
        (in_status(&app, "received").await.len() == 3).then_some(())
    })
    .await;
    let newest = app
        .get("/delivery-ms/received?order=newest&limit=2")
        .await
        .ok(200);
    let ids: Vec<&str> = newest
        .as_array()
        .expect("an array")
        .iter()
        .map(|o| o["order_id"].as_str().expect("order_id"))
        .collect();
    assert_eq!(
        ids,
        [placed[2].as_str(), placed[1].as_str()],
        "newest first, two of them"
    );
    let first = &newest[0];
    assert_eq!(first["version"], 1);
    assert!(first["ordered_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        in_status(&app, "received").await,
        placed,
        "oldest first by default"
    );
    let one = app
        .get(&format!("/delivery-ms/USER0009/{}", placed[0]))
        .await;
    assert_eq!(one.header("etag"), Some("\"1\""));
    for bad in ["limit=0", "limit=501", "limit=x", "order=sideways"] {
        app.get(&format!("/delivery-ms/received?{bad}"))
            .await
            .problem(400);
    }
}
