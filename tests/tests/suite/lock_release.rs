//! Locks never leak: a worker whose statement is cancelled mid-batch leaves
//! no session state behind (no lock held by an idle connection, no
//! transaction left open), gives its lease up, and the projection goes on
//! under whichever worker takes the lease next.

use std::time::{Duration, Instant};

use e2e::{placed_payload, spawn_app_without_workers, wait_caught_up};
use projections::runner::WorkerOptions;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

async fn lease_token(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT token FROM leader_leases WHERE name = $1")
        .bind(infra::lease::projection(projections::orders::NAME))
        .fetch_optional(pool)
        .await
        .expect("leader_leases")
}

const WORKERS: &str = "lock-release-workers";

/// The workers' backends running a statement now that waits for a lock:
/// the leader's batch, held up by the test (no statement of the standby or
/// of the lease waits for the read model's table).
async fn busy_backends(pool: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1
            AND state = 'active' AND wait_event_type = 'Lock' AND query !~* 'LISTEN'",
    )
    .bind(WORKERS)
    .fetch_all(pool)
    .await
    .expect("pg_stat_activity")
}

/// One projection worker's tasks (`services::workers::spawn`).
type Worker = JoinSet<Result<(), projections::ProjectionError>>;

/// A backlog of 6,000 placements written straight into the log, so that the
/// leader is busy with small batches.
async fn insert_a_backlog(pool: &sqlx::PgPool) {
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
    .execute(pool)
    .await
    .expect("a backlog");
}

/// A leader and a standby of the order projection, on a pool of their own
/// at `url`, stopped by `shutdown`.
async fn spawn_leader_and_standby(url: &str, shutdown: &CancellationToken) -> (Worker, Worker) {
    let options = WorkerOptions {
        batch_size: 10,
        poll_interval: Duration::from_millis(50),
        lock_retry: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let name = [&projections::orders::REGISTRATION as projections::Registered];
    // The workers' own pool, its connections named so that the test cancels
    // theirs only (never one of its own).
    let options_for_workers = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .application_name(WORKERS);
    let workers_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options_for_workers)
        .await
        .expect("the workers' pool");
    let pools = services::db::Pools::single(workers_pool);
    let leader = services::workers::spawn(&pools, &name, &options, None, shutdown);
    let standby = services::workers::spawn(&pools, &name, &options, None, shutdown);
    (leader, standby)
}

/// Cancel the leader's statement mid-batch: the leader steps down and the
/// lease is taken again (a new token). The test holds the read model's
/// table, so the leader's next batch waits inside its transaction for the
/// lock, where the cancel lands whatever else the machine is doing.
async fn cancel_the_leader_mid_batch(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        assert!(Instant::now() < deadline, "no worker took the lease");
        if let Some(token) = lease_token(pool).await {
            break token;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut holding = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE order_view_g1 IN EXCLUSIVE MODE")
        .execute(&mut *holding)
        .await
        .expect("hold the read model's table");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cancelled = 0;
    while lease_token(pool).await == Some(first) {
        assert!(
            Instant::now() < deadline,
            "{cancelled} cancels, and the leader never stepped down"
        );
        for pid in busy_backends(pool).await {
            let done: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .fetch_one(pool)
                .await
                .expect("cancel");
            cancelled += usize::from(done);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holding.rollback().await.expect("let the table go");
}

/// Within a second no idle connection holds a lock, and none sits in a
/// transaction (open or aborted) for more than a moment: nothing went
/// back to the pool with session state. (A live batch is idle in its
/// transaction between statements, for microseconds.)
async fn assert_no_session_state_left(pool: &sqlx::PgPool) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leaked: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT a.pid, a.state, l.locktype FROM pg_stat_activity a JOIN pg_locks l USING (pid)
          WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
            AND ((a.state LIKE 'idle in transaction%' AND a.state_change < clock_timestamp() - interval '500 ms')
                 OR (a.state = 'idle' AND l.locktype = 'advisory'))",
    )
    .fetch_all(pool)
    .await
    .expect("pg_locks");
    assert!(leaked.is_empty(), "session state left behind: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_statement_is_cancelled_gives_its_lock_back_and_the_projection_goes_on() {
    let app = spawn_app_without_workers().await;
    insert_a_backlog(&app.db.pool).await;
    let shutdown = CancellationToken::new();
    let (mut leader, mut standby) = spawn_leader_and_standby(&app.db.url, &shutdown).await;
    cancel_the_leader_mid_batch(&app.db.pool).await;
    assert_no_session_state_left(&app.db.pool).await;
    // And a worker applies the rest.
    wait_caught_up(
        &app.db.pool,
        projections::orders::NAME,
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
