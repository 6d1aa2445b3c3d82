//! Listeners are woken by the writing process after its commit (ADR 0008):
//! not by a NOTIFY inside the appending transaction (there is none any more),
//! and not by their own polling.

use std::time::Duration;

use e2e::{eventually, placed_payload, spawn_app_without_workers};
use projections::runner::WorkerOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn applied(pool: &sqlx::PgPool, id: Uuid) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM order_view WHERE order_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("read the order read model")
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_through_the_api_wakes_the_projection_long_before_its_poll() {
    let app = spawn_app_without_workers().await;
    // A worker that polls only once a minute: within this test, only a
    // notification can wake it.
    let shutdown = CancellationToken::new();
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(60),
        ..WorkerOptions::default()
    };
    let mut workers = services::workers::spawn(
        &services::db::Pools::single(app.db.pool.clone()),
        &[&projections::orders::REGISTRATION as projections::Registered],
        &options,
        None,
        &shutdown,
    );
    // Let it take its lock, read the empty log and start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An event written straight into the log (as psql would) notifies nobody:
    // the waiting worker does not see it.
    let silent = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
         VALUES ($1, 1, $2, 'OrderPlaced', 1, $3)",
    )
    .bind(silent)
    .bind(Uuid::now_v7())
    .bind(placed_payload(silent, "quiet", "drip", 3000, 1))
    .execute(&app.db.pool)
    .await
    .expect("insert an event directly");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !applied(&app.db.pool, silent).await,
        "nothing but a notification or the (one-minute) poll could have woken the worker"
    );

    // An order placed through the API is followed by the writer's NOTIFY:
    // the worker wakes at once and applies both.
    let placed: Uuid = app.place_ok("loud").await.parse().expect("an order id");
    eventually(
        Duration::from_secs(2),
        "both orders applied after the API's commit",
        || async {
            (applied(&app.db.pool, placed).await && applied(&app.db.pool, silent).await)
                .then_some(())
        },
    )
    .await;
    shutdown.cancel();
    while let Some(ended) = workers.join_next().await {
        ended
            .expect("the worker task")
            .expect("the worker stops cleanly");
    }
}
