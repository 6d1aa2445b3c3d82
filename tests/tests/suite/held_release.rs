//! Releasing held events: a build that can read what an older build held
//! back releases it by itself when its worker takes the projection over.

use std::time::Duration;

use e2e::eventually;
use projections::runner::WorkerOptions;
use projections::ProjectionError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The order projection's worker over `pool`, and the token that stops it.
fn run_worker(
    pool: &sqlx::PgPool,
    options: &WorkerOptions,
) -> (CancellationToken, JoinSet<Result<(), ProjectionError>>) {
    let shutdown = CancellationToken::new();
    let worker = services::workers::spawn(
        &services::db::Pools::single(pool.clone()),
        &[&projections::orders::REGISTRATION as projections::Registered],
        options,
        None,
        &shutdown,
    );
    (shutdown, worker)
}

/// Stops a worker [`run_worker`] started, and checks it stopped cleanly.
async fn stop_worker(
    shutdown: CancellationToken,
    mut worker: JoinSet<Result<(), ProjectionError>>,
) {
    shutdown.cancel();
    while let Some(ended) = worker.join_next().await {
        ended.expect("task").expect("the worker stops cleanly");
    }
}

/// Leaves `order`'s move (version 2) as an older build would have: held,
/// unreadable to it, with its checkpoint moved past the move.
async fn hold_the_move_as_an_older_build(pool: &sqlx::PgPool, order: uuid::Uuid) {
    // As an older build left it: the move held, unreadable to it.
    let (event_id, envelope): (uuid::Uuid, serde_json::Value) = sqlx::query_as(
        "SELECT event_id, jsonb_build_object(
                    'event_id', event_id, 'stream_id', stream_id, 'version', version,
                    'position', position, 'event_type', event_type,
                    'schema_version', schema_version, 'payload', payload,
                    'metadata', metadata,
                    'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
           FROM events WHERE stream_id = $1 AND version = 2",
    )
    .bind(order)
    .fetch_one(pool)
    .await
    .expect("the move");
    sqlx::query(
        "INSERT INTO projection_held (projection, generation, stream_id, event_id, version, source,
                                      event_type, schema_version, envelope, reason)
         VALUES ('orders', 1, $1, $2, 2, 'log position 2', 'OrderPreparationStarted', 1, $3,
                 'OrderPreparationStarted schema version 1 is newer than this build reads (up to 0)')",
    )
    .bind(order)
    .bind(event_id)
    .bind(envelope)
    .execute(pool)
    .await
    .expect("held by an older build");
    // …and moved its checkpoint past the move it held.
    sqlx::query(
        "UPDATE projection_checkpoints c SET transaction_id = e.transaction_id, position = e.position
           FROM events e WHERE e.event_id = $1 AND c.name = 'orders'",
    )
    .bind(event_id)
    .execute(pool)
    .await
    .expect("the older build's checkpoint");
}

/// What a deploy of a build that knows the event does: its worker, taking
/// the projection over, applies what the older build held back, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_can_read_held_events_releases_them_by_itself() {
    let app = e2e::spawn_app_without_workers().await;
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    // The older build applied the placement…
    let id = app.place_ok("vera").await;
    let order: uuid::Uuid = id.parse().expect("uuid");
    let (shutdown, worker) = run_worker(&app.db.pool, &options);
    e2e::wait_caught_up(
        &app.db.pool,
        projections::orders::NAME,
        Duration::from_secs(10),
    )
    .await;
    stop_worker(shutdown, worker).await;
    app.move_to("vera", &id, "preparing", &[]).await.ok(200);
    hold_the_move_as_an_older_build(&app.db.pool, order).await;

    // The newer build's worker takes the projection over.
    let (shutdown, worker) = run_worker(&app.db.pool, &options);
    eventually(
        Duration::from_secs(10),
        "the held move released",
        || async {
            let version: Option<i32> =
                sqlx::query_scalar("SELECT version FROM order_view WHERE order_id = $1")
                    .bind(order)
                    .fetch_optional(&app.db.pool)
                    .await
                    .ok()?;
            (version == Some(2)).then_some(())
        },
    )
    .await;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_held")
        .fetch_one(&app.db.pool)
        .await
        .expect("held");
    assert_eq!(held, 0);
    assert!(projections::verify::orders(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
    stop_worker(shutdown, worker).await;
}
