//! Nothing a client or a writer sends travels unbounded: the relay splits
//! produce requests by bytes (`KAFKA_MAX_REQUEST_BYTES`) and dead-letters a
//! single event too large for one instead of retrying it for ever at the
//! head of its partition; a client's `X-Request-Id` that is too long or not
//! plain text is replaced by a generated one.

use std::time::Duration;

use e2e::{eventually, insert_event, read_topic, spawn_app_opts, test_kafka, AppOptions};
use infra::kafka::KafkaSource;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_a_produce_request_is_dead_lettered_and_its_partition_goes_on() {
    let kafka = KafkaSource {
        max_request_bytes: 8 * 1024,
        ..test_kafka()
    };
    let app = spawn_app_opts(AppOptions {
        kafka: Some(kafka.clone()),
        relay: false,
        ..AppOptions::default()
    })
    .await;
    // A backlog: a 20 KB event (a newer build's, say) among 60 orders.
    let mut ids = Vec::new();
    for i in 0..60 {
        if i == 10 {
            let order = domain::OrderId::generate().as_uuid();
            let (position, _) = insert_event(
                &app.db.pool,
                order,
                1,
                "OrderNoteAdded",
                1,
                json!({"note": "x".repeat(20_000)}),
                true,
            )
            .await;
            ids.push(format!("big {position}"));
        }
        ids.push(app.place_ok("vera").await);
    }
    let relay = e2e::TestRelay::start(&app.db.pool, &kafka);
    eventually(Duration::from_secs(20), "the outbox drained", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    relay.stop().await;

    let dead: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT position, size_bytes, reason FROM outbox_dead_letters")
            .fetch_all(&app.db.pool)
            .await
            .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1 > 20_000);
    assert!(
        dead[0].2.contains("KAFKA_MAX_REQUEST_BYTES"),
        "{}",
        dead[0].2
    );
    assert_eq!(ids[10], format!("big {}", dead[0].0));
    let records = read_topic(&kafka).await;
    assert_eq!(
        records.len(),
        60,
        "every order published, the big event not"
    );
    // Split into requests below the limit, yet each partition in log order.
    for p in 0..kafka.partitions {
        let positions: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == p)
            .filter_map(|r| r.envelope.position)
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
    // The delivery side's verification leaves the dead letter out of what
    // it could have seen.
    eventually(
        Duration::from_secs(20),
        "the delivery model complete",
        || async {
            projections::verify::delivery(&app.db.pool)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_request_id_too_long_or_not_plain_text_is_replaced_by_a_generated_one() {
    let app = e2e::spawn_app_without_workers().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 4000});
    for (sent, kept) in [
        ("order-42:retry.1", true),
        (&*"a".repeat(128), true),
        (&*"a".repeat(129), false),
        ("<script>", false),
        ("two words", false),
    ] {
        let reply = app
            .request(
                Method::POST,
                "/order-ms/wendy/orders",
                Some(&body),
                &[("X-Request-Id", sent)],
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let used = reply.header("x-request-id").expect("an id").to_owned();
        assert_eq!(used == sent, kept, "sent {sent:?}, used {used:?}");
        if !kept {
            assert!(
                uuid::Uuid::parse_str(&used).is_ok(),
                "a generated id: {used}"
            );
        }
        let order = reply.json()["order_id"].as_str().expect("id").to_owned();
        let recorded: String = sqlx::query_scalar(
            "SELECT metadata->>'request_id' FROM events WHERE stream_id = $1::uuid",
        )
        .bind(&order)
        .fetch_one(&app.db.pool)
        .await
        .expect("metadata");
        assert_eq!(recorded, used, "the event records the id the answer names");
    }
}
