//! The event store itself: append-only in the database, one transaction per
//! append (events + outbox + idempotency record), typed concurrency conflicts.

use domain::{Command, Event, Metadata, OrderId, PlaceOrder};
use e2e::TestDb;
use services::store::{EventStore, IdempotencyKey, StoreError};

fn placement(id: OrderId) -> Vec<Event> {
    let place = PlaceOrder {
        order_id: id,
        user_id: domain::UserId::parse("u1").expect("valid"),
        store_id: domain::StoreId::default_store(),
        lines: domain::OrderLines::one(domain::OrderLine {
            coffee_name: domain::CoffeeName::parse("latte").expect("valid"),
            coffee_price: domain::Price::try_from(4000).expect("valid"),
            coffee_qty: domain::Quantity::try_from(1).expect("valid"),
            options: domain::DrinkOptions::default(),
        }),
        pickup_number: None,
    };
    domain::decide(&domain::OrderState::NotPlaced, Command::Place(place)).expect("a placement")
}

#[tokio::test]
async fn update_delete_and_truncate_on_the_event_log_fail() {
    let db = TestDb::create().await;
    let store = EventStore::new(db.pool.clone());
    let id = OrderId::generate();
    store
        .append(id, 0, &placement(id), &Metadata::default(), None)
        .await
        .expect("append");

    for sql in [
        "UPDATE events SET event_type = 'Tampered'",
        "UPDATE events SET payload = '{}' WHERE version = 1",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let stream = store.load(id).await.expect("load");
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].event.event_type(), "OrderPlaced");
}

#[tokio::test]
async fn appending_at_a_stale_version_is_a_typed_conflict_and_writes_nothing() {
    let db = TestDb::create().await;
    let store = EventStore::new(db.pool.clone());
    let id = OrderId::generate();
    let meta = Metadata::default();
    store
        .append(id, 0, &placement(id), &meta, None)
        .await
        .expect("first placement");
    let again = store.append(id, 0, &placement(id), &meta, None).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { expected: 0, .. })),
        "{again:?}"
    );
    // Claiming a version the stream has not reached would leave a gap: refused too.
    let ahead = store
        .append(id, 5, &[Event::OrderPreparationStarted], &meta, None)
        .await;
    assert!(
        matches!(ahead, Err(StoreError::Conflict { expected: 5, .. })),
        "{ahead:?}"
    );
    let next = store
        .append(id, 1, &[Event::OrderPreparationStarted], &meta, None)
        .await
        .expect("next version");
    assert_eq!(next.events[0].version, 2);
    assert_eq!(db.events().await, 2);
    assert_eq!(db.outbox().await, 2);
}

#[tokio::test]
async fn an_append_whose_idempotency_key_is_taken_leaves_no_trace() {
    let db = TestDb::create().await;
    let store = EventStore::new(db.pool.clone());
    let key = IdempotencyKey {
        scope: "u1".into(),
        key: "k".into(),
        fingerprint: "f".into(),
    };
    let first = OrderId::generate();
    store
        .append(
            first,
            0,
            &placement(first),
            &Metadata::default(),
            Some(&key),
        )
        .await
        .expect("first");
    let second = OrderId::generate();
    let taken = store
        .append(
            second,
            0,
            &placement(second),
            &Metadata::default(),
            Some(&key),
        )
        .await;
    assert!(
        matches!(taken, Err(StoreError::IdempotencyKeyTaken)),
        "{taken:?}"
    );
    // The events of the second append were rolled back with it.
    assert!(store.load(second).await.expect("load").is_empty());
    assert_eq!(db.events().await, 1);
    assert_eq!(db.outbox().await, 1);
}

#[tokio::test]
async fn stored_events_keep_their_order_metadata_and_writing_transaction() {
    let db = TestDb::create().await;
    let store = EventStore::new(db.pool.clone());
    let id = OrderId::generate();
    let meta = Metadata {
        correlation_id: Some("c-1".into()),
        who: Some("staff".into()),
        ..Metadata::default()
    };
    let placed = store
        .append(id, 0, &placement(id), &meta, None)
        .await
        .expect("append");
    store
        .append(id, 1, &[Event::OrderPreparationStarted], &meta, None)
        .await
        .expect("append");
    let stream = store.load(id).await.expect("load");
    assert_eq!(stream.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        stream[0], placed.events[0],
        "load returns what append reported"
    );
    assert_eq!(stream[1].metadata.correlation_id.as_deref(), Some("c-1"));
    assert!(stream[0].position < stream[1].position);
    // Every row records the transaction that wrote it, for gap-safe readers.
    let distinct_tx = db
        .count("SELECT count(DISTINCT transaction_id::text) FROM events")
        .await;
    assert_eq!(distinct_tx, 2);
}
