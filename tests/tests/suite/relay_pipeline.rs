//! The relay draining a backlog with rounds in flight (services/src/relay/
//! round.rs): an order's events stay in order on the topic when a
//! transaction that took an early position commits while the drain runs,
//! every event arrives once, and a transaction left open elsewhere does not
//! hold the relay back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use e2e::{eventually, placed_payload, read_topic, relay_options, test_kafka, TestDb, TestRelay};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// `orders` new orders' `OrderPlaced` events, with their outbox rows,
/// written in one transaction. Returns their order ids.
async fn backlog(pool: &PgPool, orders: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..orders).map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<Value> = ids
        .iter()
        .map(|id| placed_payload(*id, "backlog", "latte", 4500, 1))
        .collect();
    let event_ids: Vec<Uuid> = ids.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             SELECT s, 1, i, 'OrderPlaced', 3, p FROM UNNEST($1::uuid[], $2::uuid[], $3::jsonb[]) AS v(s, i, p)
             RETURNING position, stream_id, transaction_id)
         INSERT INTO outbox (position, stream_id, transaction_id)
         SELECT position, stream_id, transaction_id FROM e",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&payloads)
    .execute(pool)
    .await
    .expect("write the backlog");
    ids
}

/// Each order's versions as they stand on the topic, in offset order.
async fn versions_on_topic(kafka: &infra::kafka::KafkaSource) -> BTreeMap<Uuid, Vec<u64>> {
    let mut records = read_topic(kafka).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut by_order: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
    for r in records {
        by_order
            .entry(r.envelope.stream_id.as_uuid())
            .or_default()
            .push(r.envelope.version);
    }
    by_order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_backlog_keeps_an_orders_events_in_order_around_a_late_commit() {
    // A transaction held open for the whole drain holds the horizon: a
    // cluster of the test's own.
    let db = TestDb::alone().await;
    let kafka = test_kafka();

    // A transaction takes an early position for order X's first event and
    // stays open while 20,000 later events commit.
    let x = Uuid::now_v7();
    let mut late = db.pool.begin().await.expect("begin");
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             VALUES ($1, 1, $2, 'OrderPlaced', 3, $3) RETURNING position, transaction_id)
         INSERT INTO outbox (position, stream_id, transaction_id)
         SELECT position, $1, transaction_id FROM e",
    )
    .bind(x)
    .bind(Uuid::now_v7())
    .bind(placed_payload(x, "late", "mocha", 5000, 1))
    .execute(&mut *late)
    .await
    .expect("the late transaction's event");
    let mut orders = backlog(&db.pool, 20_000).await;
    orders.push(x);

    // Small rounds, so that the drain is still under way when X's first
    // event commits and its second follows.
    let relay = TestRelay::start_with(
        &db.pool,
        services::relay::RelayOptions {
            batch_size: 200,
            ..relay_options(&kafka)
        },
    );
    eventually(Duration::from_secs(30), "the relay under way", || async {
        (db.outbox().await < 19_000).then_some(())
    })
    .await;
    late.commit().await.expect("commit the late transaction");
    sqlx::query(
        "WITH e AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             VALUES ($1, 2, $2, 'OrderPreparationStarted', 1, '{}') RETURNING position, transaction_id)
         INSERT INTO outbox (position, stream_id, transaction_id)
         SELECT position, $1, transaction_id FROM e",
    )
    .bind(x)
    .bind(Uuid::now_v7())
    .execute(&db.pool)
    .await
    .expect("X's second event");
    assert!(
        db.outbox().await > 1_000,
        "the backlog is still being drained when X moves on"
    );
    eventually(Duration::from_secs(60), "an empty outbox", || async {
        (db.outbox().await == 0).then_some(())
    })
    .await;
    relay.stop().await;

    let on_topic = versions_on_topic(&kafka).await;
    assert_eq!(
        on_topic.get(&x).map(Vec::as_slice),
        Some(&[1, 2][..]),
        "order X's events on the topic in version order, once each"
    );
    let published: HashSet<&Uuid> = on_topic.keys().collect();
    let missing = orders.iter().filter(|o| !published.contains(o)).count();
    assert_eq!(missing, 0, "every order's events reached the topic");
    let repeated = on_topic.values().filter(|v| v.len() > 1).count();
    assert_eq!(
        repeated, 1,
        "nothing but X has two records (a clean run sends nothing twice)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_left_open_elsewhere_does_not_hold_the_relay_back() {
    let db = TestDb::alone().await;
    let kafka = test_kafka();
    // An open transaction with an id holds the gap-safe horizon (cluster-wide).
    let open = e2e::hold_the_horizon(&db).await;

    let orders = backlog(&db.pool, 7_000).await;
    let relay = TestRelay::start(&db.pool, &kafka);
    eventually(
        Duration::from_secs(30),
        "an empty outbox while the transaction is still open",
        || async { (db.outbox().await == 0).then_some(()) },
    )
    .await;
    relay.stop().await;
    let on_topic = versions_on_topic(&kafka).await;
    assert!(
        orders.iter().all(|o| on_topic.contains_key(o)),
        "every event published"
    );
    open.rollback().await.expect("rollback");
}
