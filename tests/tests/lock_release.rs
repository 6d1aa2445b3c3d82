//! Locks never leak: a worker whose statement is cancelled mid-batch gives
//! its advisory lock back (its connection is closed, never returned to the
//! pool still holding the lock), and the projection goes on under whichever
//! worker takes the lock next.

use std::time::{Duration, Instant};

use e2e::{placed_payload, spawn_app_without_workers, wait_caught_up};
use projections::runner::WorkerOptions;
use tokio_util::sync::CancellationToken;

/// `checkpoint::WORKER_LOCK`, the first key of a worker's advisory lock.
const WORKER_LOCK: i64 = 0x6f72_0001;

async fn lock_holder(pool: &sqlx::PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objsubid = 2",
    )
    .bind(WORKER_LOCK)
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_statement_is_cancelled_gives_its_lock_back_and_the_projection_goes_on() {
    let app = spawn_app_without_workers().await;
    // A backlog, so that the leader is busy with small batches.
    let ids: Vec<uuid::Uuid> = (0..6000).map(|_| uuid::Uuid::now_v7()).collect();
    let payloads: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| placed_payload(*id, "lock", "latte", 4000, 1))
        .collect();
    let event_ids: Vec<uuid::Uuid> = ids.iter().map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
         SELECT s, 1, e, 'OrderPlaced', 2, p FROM UNNEST($1::uuid[], $2::uuid[], $3::jsonb[]) AS u(s, e, p)",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&payloads)
    .execute(&app.db.pool)
    .await
    .expect("a backlog");

    // A leader and a standby.
    let shutdown = CancellationToken::new();
    let options = WorkerOptions {
        batch_size: 10,
        poll_interval: Duration::from_millis(50),
        lock_retry: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let name = [projections::order_view::NAME];
    let mut leader = services::workers::spawn(&app.db.pool, &name, &options, None, &shutdown);
    let mut standby = services::workers::spawn(&app.db.pool, &name, &options, None, &shutdown);

    // Cancel the lock holder's statements until one lands mid-batch (the
    // holder changes or goes).
    let deadline = Instant::now() + Duration::from_secs(10);
    let cancelled = loop {
        assert!(
            Instant::now() < deadline,
            "no statement of the leader was cancelled"
        );
        let Some(pid) = lock_holder(&app.db.pool).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .fetch_one(&app.db.pool)
            .await
            .expect("cancel");
        tokio::time::sleep(Duration::from_millis(20)).await;
        if lock_holder(&app.db.pool).await != Some(pid) {
            break pid;
        }
    };
    // Within a second the cancelled backend holds no lock: it was closed, not
    // returned to the pool with the lock.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still_locked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'",
    )
    .bind(cancelled)
    .fetch_one(&app.db.pool)
    .await
    .expect("pg_locks");
    assert_eq!(
        still_locked, 0,
        "backend {cancelled} still holds an advisory lock"
    );
    // And a worker applies the rest.
    wait_caught_up(
        &app.db.pool,
        projections::order_view::NAME,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) FROM order_view").await, 6000);
    shutdown.cancel();
    while let Some(ended) = leader.join_next().await {
        ended.expect("task").expect("the worker stops cleanly");
    }
    while let Some(ended) = standby.join_next().await {
        ended.expect("task").expect("the worker stops cleanly");
    }
}
