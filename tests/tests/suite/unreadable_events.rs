//! Events this build cannot read: a row of a newer schema version (what a
//! rolling deploy produces when a newer build writes first) holds back its
//! order and nothing else. The API, the relay and both projections keep
//! running, the service still starts, status, metrics and readiness say what
//! is held and why, reading or changing the held order answers 503, and an
//! operator's audited parking decision lets the order's later events apply.

use std::process::Stdio;
use std::time::Duration;

use e2e::processes::{free_port, terminate};
use e2e::{eventually, insert_event, run_orders, test_kafka, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::Child;

async fn start_all(db: &TestDb, kafka: &infra::kafka::KafkaSource, port: u16) -> Child {
    e2e::orders_all(db, kafka, port)
        .stderr(Stdio::null())
        .spawn()
        .expect("start orders all")
}

async fn wait_up(http: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("orders all exited with {status}");
        }
        let up = http
            .get(format!("{base}/order-ms"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if up {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orders all did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn place(http: &reqwest::Client, base: &str, user: &str) -> Value {
    let reply = http
        .post(format!("{base}/order-ms/{user}/orders"))
        .json(&json!({"coffee_name": "latte", "coffee_price": 4500, "coffee_qty": 1}))
        .send()
        .await
        .expect("place");
    assert_eq!(reply.status(), StatusCode::CREATED);
    reply.json().await.expect("an order")
}

async fn status_json(db: &TestDb, kafka: &infra::kafka::KafkaSource) -> Vec<Value> {
    let out = run_orders(db, Some(kafka), &["projections", "status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn held_orders(status: &[Value], name: &str) -> i64 {
    status
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["held"]["orders"].as_i64())
        .unwrap_or(0)
}

/// What the scenario's phases share: the database, the topic, and the
/// address of `orders all` (the same port across its restart).
struct Scene {
    db: TestDb,
    kafka: infra::kafka::KafkaSource,
    port: u16,
    base: String,
    http: reqwest::Client,
}

impl Scene {
    /// A fresh database and topic, and a free port for `orders all`.
    async fn new() -> Self {
        let db = TestDb::create().await;
        let kafka = test_kafka();
        let port = free_port().expect("a free port");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        Scene {
            db,
            kafka,
            port,
            base,
            http,
        }
    }

    /// Starts `orders all` and returns once it answers.
    async fn start(&self) -> Child {
        let mut all = start_all(&self.db, &self.kafka, self.port).await;
        wait_up(&self.http, &self.base, &mut all).await;
        all
    }
}

/// Places Ann's order, then writes what a newer build would: a move with an
/// event version this build does not know, and a later move on. Returns Ann's
/// order id and the unknown event's id.
async fn ann_moved_by_a_newer_build(scene: &Scene) -> (uuid::Uuid, uuid::Uuid) {
    let ann = place(&scene.http, &scene.base, "ann").await;
    let ann_id: uuid::Uuid = ann["order_id"].as_str().expect("id").parse().expect("uuid");
    let (_, unknown) = insert_event(
        &scene.db.pool,
        ann_id,
        2,
        "OrderPreparationStarted",
        7,
        json!({"station": "bar 2"}),
        true,
    )
    .await;
    insert_event(
        &scene.db.pool,
        ann_id,
        3,
        "OrderOutForDelivery",
        1,
        json!({}),
        true,
    )
    .await;
    (ann_id, unknown)
}

/// Bob is served as before: placed, listed, moved by staff and seen on the
/// delivery view.
async fn bob_is_served_as_before(scene: &Scene) {
    let (http, base) = (&scene.http, &scene.base);
    let bob = place(http, base, "bob").await;
    let bob_id = bob["order_id"].as_str().expect("id").to_owned();
    let moved = http
        .post(format!("{base}/delivery-ms/bob/{bob_id}/status"))
        .json(&json!({"status": "preparing"}))
        .send()
        .await
        .expect("move");
    assert_eq!(moved.status(), StatusCode::OK);
    let listed: Value = http
        .get(format!("{base}/order-ms/bob/orders"))
        .header("Prefer", "consistency=strong")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed[0]["order_id"], bob_id.as_str());
    eventually(
        Duration::from_secs(20),
        "bob's order on the delivery view",
        || async {
            let rows: Value = http
                .get(format!("{base}/delivery-ms/preparing"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            rows.as_array()?
                .iter()
                .any(|r| r["order_id"] == bob_id.as_str())
                .then_some(())
        },
    )
    .await;
}

/// Waits until both projections hold Ann's order back, and checks that
/// status names the `unknown` event and why it cannot be read.
async fn both_projections_hold_it_and_say_why(scene: &Scene, unknown: uuid::Uuid) {
    let status = eventually(
        Duration::from_secs(20),
        "both projections hold ann's order",
        || async {
            let status = status_json(&scene.db, &scene.kafka).await;
            (held_orders(&status, "orders") == 1 && held_orders(&status, "delivery") == 1)
                .then_some(status)
        },
    )
    .await;
    let first = &status
        .iter()
        .find(|s| s["name"] == "orders")
        .expect("orders")["held"]["first"];
    assert_eq!(first["event_id"], unknown.to_string());
    assert!(
        first["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("newer"),
        "the reason names the newer schema: {first}"
    );
}

/// Reading or changing the held order answers 503 naming the event, and
/// nothing is written.
async fn the_held_order_answers_503(scene: &Scene, ann_id: uuid::Uuid, unknown: uuid::Uuid) {
    let (http, base) = (&scene.http, &scene.base);
    let events_before = scene.db.events().await;
    for reply in [
        http.get(format!("{base}/order-ms/ann/orders/{ann_id}"))
            .send()
            .await,
        http.post(format!("{base}/order-ms/ann/orders/{ann_id}/cancel"))
            .send()
            .await,
        http.post(format!("{base}/delivery-ms/ann/{ann_id}/status"))
            .json(&json!({"status": "delivered"}))
            .send()
            .await,
        http.get(format!("{base}/delivery-ms/ann/{ann_id}"))
            .send()
            .await,
    ] {
        let reply = reply.expect("a reply");
        assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers()["content-type"], "application/problem+json");
        let problem: Value = reply.json().await.expect("problem");
        assert_eq!(problem["type"], "/problems/order-held");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(&unknown.to_string()),
            "names the event: {problem}"
        );
    }
    assert_eq!(scene.db.events().await, events_before, "nothing appended");
}

/// Readiness stays 200 and says what is held; the metrics count it.
async fn readiness_and_metrics_report_the_hold(scene: &Scene) {
    let (http, base) = (&scene.http, &scene.base);
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready
        .text()
        .await
        .expect("body")
        .contains("holds back 1 order"));
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("body");
    assert!(
        metrics.contains("projection_held_orders{projection=\"orders\"} 1"),
        "{metrics}"
    );
}

/// The operator parks the `unknown` event in both projections, with a reason.
async fn park_in_both_projections(scene: &Scene, unknown: uuid::Uuid) {
    for name in ["orders", "delivery"] {
        let out = run_orders(
            &scene.db,
            Some(&scene.kafka),
            &[
                "projections",
                "park",
                name,
                "--event",
                &unknown.to_string(),
                "--reason",
                "written by a build we rolled back",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "park {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Once parked, nothing is held and the order's later event (out for
/// delivery) has applied; `orders verify` passes and counts the parked event.
async fn the_order_moves_on_past_the_parked_event(scene: &Scene, ann_id: uuid::Uuid) {
    let (db, kafka) = (&scene.db, &scene.kafka);
    eventually(
        Duration::from_secs(20),
        "the held order released",
        || async {
            let status = status_json(db, kafka).await;
            (held_orders(&status, "orders") == 0 && held_orders(&status, "delivery") == 0)
                .then_some(())
        },
    )
    .await;
    let (status, version): (String, i32) =
        sqlx::query_as("SELECT status, version FROM order_view WHERE order_id = $1")
            .bind(ann_id)
            .fetch_one(&db.pool)
            .await
            .expect("ann's row");
    assert_eq!((status.as_str(), version), ("delivering", 3));
    let verify = run_orders(db, Some(kafka), &["verify"]).await;
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "verify: {text}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(text.contains("1 event(s) parked"), "{text}");
}

/// The audit trail says who decided to park the `unknown` event and why.
async fn the_audit_trail_names_the_decision(scene: &Scene, unknown: uuid::Uuid) {
    let db = &scene.db;
    let parked = run_orders(db, None, &["projections", "parked"]).await;
    let parked = String::from_utf8_lossy(&parked.stdout);
    assert!(
        parked.contains("written by a build we rolled back"),
        "{parked}"
    );
    assert!(parked.contains(&unknown.to_string()), "{parked}");
    let role: String = sqlx::query_scalar("SELECT DISTINCT database_role FROM projection_parked")
        .fetch_one(&db.pool)
        .await
        .expect("one role");
    assert!(!role.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_row_holds_back_one_order_and_the_service_keeps_serving() {
    let scene = Scene::new().await;
    let mut all = scene.start().await;

    let (ann_id, unknown) = ann_moved_by_a_newer_build(&scene).await;
    bob_is_served_as_before(&scene).await;
    both_projections_hold_it_and_say_why(&scene, unknown).await;
    the_held_order_answers_503(&scene, ann_id, unknown).await;
    readiness_and_metrics_report_the_hold(&scene).await;

    // A restart still starts, and still holds the order back.
    terminate(&mut all).await;
    let mut all = scene.start().await;
    assert_eq!(
        held_orders(&status_json(&scene.db, &scene.kafka).await, "orders"),
        1
    );

    // The operator's audited parking decision releases the order.
    park_in_both_projections(&scene, unknown).await;
    the_order_moves_on_past_the_parked_event(&scene, ann_id).await;
    the_audit_trail_names_the_decision(&scene, unknown).await;
    terminate(&mut all).await;
}
