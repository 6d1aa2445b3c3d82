//! Events written straight into the log, and the checks tests share: the
//! read model against the fold, a projection caught up, a lease taken.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

/// The lease of projection `name`, for a test that steps the projection
/// itself (as its worker would, under the worker's lease).
/// Waits (up to `within`) until the delivery side has applied every event
/// of the log and the outbox is empty.
pub async fn delivery_caught_up(db: &crate::TestDb, within: Duration) {
    let events = db.events().await;
    eventually(within, "the delivery side caught up", || async {
        let applied = projections::delivery::events_applied(&db.pool).await.ok()?;
        (applied == events && db.outbox().await == 0).then_some(())
    })
    .await;
}

/// A transaction that took its id and stays open: it holds the log's
/// gap-safe horizon back until it ends. The horizon is the whole cluster's,
/// so `db` must have a cluster of its own ([`crate::TestDb::alone`]): on the
/// shared one this stalled every other test's projections.
pub async fn hold_the_horizon(db: &crate::TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    assert!(
        db.is_alone(),
        "a test that holds the transaction horizon needs a cluster of its own (TestDb::alone, AppOptions {{ alone: true, .. }})"
    );
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await
        .expect("take a transaction id");
    holder
}

pub async fn projection_lease(pool: &PgPool, name: &str) -> infra::lease::Lease {
    infra::lease::Lease::try_acquire(
        pool,
        &infra::lease::projection(name),
        infra::lease::DEFAULT_TTL,
    )
    .await
    .expect("take the lease")
    .expect("no worker holds the lease")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payload of an `OrderPlaced` event, for tests that write the log directly.
pub fn placed_payload(
    order_id: uuid::Uuid,
    user_id: &str,
    name: &str,
    price: u64,
    qty: u64,
) -> Value {
    let event = domain::Event::OrderPlaced(domain::OrderPlaced::of(
        domain::OrderId::try_from(order_id).expect("a v7 order id"),
        domain::UserId::parse(user_id).expect("a valid user id"),
        domain::StoreId::default_store(),
        domain::OrderLines::one(domain::OrderLine {
            coffee_name: domain::CoffeeName::parse(name).expect("a valid coffee name"),
            coffee_price: domain::Price::from_json(&Value::from(price)).expect("a valid price"),
            coffee_qty: domain::Quantity::from_json(Some(&Value::from(qty)))
                .expect("a valid quantity"),
            options: domain::DrinkOptions::default(),
        }),
        None,
    ));
    event.payload()
}

/// An `OrderPlaced` payload exactly as the previous build wrote it (schema
/// version 1: no options), for tests of schema evolution.
pub fn placed_payload_v1(
    order_id: uuid::Uuid,
    user_id: &str,
    name: &str,
    price: u64,
    qty: u64,
) -> Value {
    serde_json::json!({
        "order_id": order_id,
        "user_id": user_id,
        "coffee_name": name,
        "coffee_price": price,
        "coffee_qty": qty,
        "total_price": price * qty,
    })
}

/// The active checkpoint of a projection: (position, events applied).
pub async fn checkpoint(pool: &PgPool, name: &str) -> projections::checkpoint::Checkpoint {
    let mut conn = pool.acquire().await.expect("a connection");
    projections::checkpoint::load_active(&mut conn, name)
        .await
        .expect("the active checkpoint")
}

/// Waits until the projection `name` has applied every committed event
/// (its checkpoint is at the head of the log), or panics after `timeout`.
pub async fn wait_caught_up(pool: &PgPool, name: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut conn = pool.acquire().await.expect("a connection");
        let head = projections::log::head(&mut conn)
            .await
            .expect("the log head");
        let at = checkpoint(pool, name).await.cursor;
        if head.is_none_or(|h| at >= h) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projection {name} did not catch up within {timeout:?}: at {at:?}, head {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The order read model (published view) and the fold of the log, both by
/// order id.
pub async fn order_model_and_fold(
    pool: &PgPool,
) -> (Vec<projections::OrderRow>, Vec<projections::OrderRow>) {
    let model = projections::orders::all_rows(pool, None)
        .await
        .expect("read the order read model");
    let mut conn = pool.acquire().await.expect("a connection");
    let accounted = projections::held::accounted(&mut conn, projections::orders::NAME)
        .await
        .expect("what the projection holds back");
    let fold = projections::orders::fold_log(&mut conn, false, &accounted)
        .await
        .expect("fold the log");
    (model, fold.rows)
}

/// Writes one event row straight into the log, as another build (or a
/// previous one) would have: any type, schema version and payload. With
/// `outbox`, the relay publishes it too. Returns its position and event id.
pub async fn insert_event(
    pool: &PgPool,
    stream: uuid::Uuid,
    version: i32,
    event_type: &str,
    schema_version: i16,
    payload: Value,
    outbox: bool,
) -> (i64, uuid::Uuid) {
    let event_id = uuid::Uuid::now_v7();
    let position: i64 = sqlx::query_scalar(
        "WITH e AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING position),
         o AS (INSERT INTO outbox (position, stream_id) SELECT position, $1 FROM e WHERE $7)
         SELECT position FROM e",
    )
    .bind(stream)
    .bind(version)
    .bind(event_id)
    .bind(event_type)
    .bind(schema_version)
    .bind(payload)
    .bind(outbox)
    .fetch_one(pool)
    .await
    .expect("insert an event row");
    (position, event_id)
}
