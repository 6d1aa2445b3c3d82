//! A database restored into another cluster whose transaction counter is
//! behind the stored ids (made here with `pg_resetwal -e` on a throwaway
//! source cluster, then `pg_dump` / `pg_restore` into a fresh one): the
//! services refuse to start and say why, `orders log-clock advance` repairs
//! it in the schema, and afterwards nothing is lost or mis-ordered.

use std::path::{Path, PathBuf};

use domain::{Event, Metadata, OrderId};
use e2e::placed_payload;
use e2e::processes::{pg_program, start_cluster, stop_cluster};
use projections::orders::OrdersReadModel;
use projections::{clock, operate, runner, ProjectionError, ReadMode};
use services::store::EventStore;
use sqlx::{PgConnection, PgPool};

async fn connect(url: &str) -> PgPool {
    let pool = services::db::connect(url, 5).await.expect("connect");
    services::db::migrate(&pool).await.expect("migrate");
    pool
}

async fn place(pool: &PgPool, n: usize) {
    let store = EventStore::new(pool.clone());
    for i in 0..n {
        let id = OrderId::generate();
        let placed = Event::decode(
            Event::PLACED,
            2,
            placed_payload(id.as_uuid(), &format!("u{i}"), "latte", 4500, 1),
        )
        .expect("a placement");
        store
            .append(id, 0, &[placed], &Metadata::default(), None)
            .await
            .expect("append");
        store
            .append(
                id,
                1,
                &[Event::OrderPreparationStarted],
                &Metadata::default(),
                None,
            )
            .await
            .expect("append");
    }
}

/// Applies whatever the live worker would, batch by batch, until nothing is
/// safe to read.
async fn project(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let lease = e2e::projection_lease(pool, projections::orders::NAME).await;
    while runner::step(
        &mut conn,
        lease.fence(),
        &OrdersReadModel,
        100,
        ReadMode::GapSafe,
    )
    .await
    .expect("a batch")
        > 0
    {}
    lease.release().await;
}

async fn rows(pool: &PgPool) -> usize {
    projections::orders::all_rows(pool, None)
        .await
        .expect("rows")
        .len()
}

/// Builds a source cluster whose transaction ids start in epoch 3 (~12.9
/// billion), writes and projects ten orders there, and dumps it; returns the
/// dump's path. The source cluster is stopped on return.
async fn dump_a_cluster_ahead(source: &Path) -> PathBuf {
    start_cluster(source).await;
    stop_cluster(source).await;
    pg_program(
        "pg_resetwal",
        &["-e", "3", "-D", &source.join("data").to_string_lossy()],
    )
    .await;
    let url = start_cluster(source).await;
    let pool = connect(&url).await;
    place(&pool, 10).await;
    project(&pool).await;
    assert_eq!(rows(&pool).await, 10);
    let dump = source.join("orders.dump");
    pg_program("pg_dump", &["-Fc", "-f", &dump.to_string_lossy(), &url]).await;
    pool.close().await;
    stop_cluster(source).await;
    dump
}

/// Restores `dump` into a fresh cluster at `target` (its counter is in
/// epoch 0); returns the cluster's URL.
async fn restore_into_a_fresh_cluster(target: &Path, dump: &Path) -> String {
    let url = start_cluster(target).await;
    pg_program(
        "pg_restore",
        &[
            "--clean",
            "--if-exists",
            "--no-owner",
            "-d",
            &url,
            &dump.to_string_lossy(),
        ],
    )
    .await;
    url
}

/// The clock is found behind the stored ids, and the service refuses to
/// start, saying why and what to run.
async fn assert_refused_until_repaired(conn: &mut PgConnection, url: &str) {
    let status = clock::status(conn).await.expect("clock");
    assert!(status.ahead_by().is_some(), "detected: {status:?}");
    assert!(matches!(
        clock::ensure_in_order(conn).await,
        Err(ProjectionError::ClockBehind { .. })
    ));
    let out = tokio::process::Command::new(e2e::orders_bin())
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("run orders serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("orders log-clock advance"), "{stderr}");
}

/// Something that is not `orders` writes before the repair (as psql
/// would): its events sort before the projection's checkpoint. Returns the
/// position of that early write.
async fn write_before_the_repair(pool: &PgPool) -> i64 {
    place(pool, 1).await;
    let early: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(pool)
        .await
        .expect("head");
    project(pool).await;
    assert_eq!(
        rows(pool).await,
        10,
        "invisible to the projection before the repair"
    );
    early
}

/// The repair: the clock moves past every stored id, once.
async fn repair(conn: &mut PgConnection) {
    let (before, after) = clock::advance(conn, "test", "restored from the source cluster")
        .await
        .expect("advance");
    assert!(after > before);
    clock::ensure_in_order(conn).await.expect("in order now");
    assert_eq!(
        clock::advance(conn, "test", "again")
            .await
            .expect("advance"),
        (after, after),
        "idempotent"
    );
}

/// After the repair nothing is lost or mis-ordered, the early write (at
/// position `early`) included.
async fn assert_nothing_lost_after_the_repair(pool: &PgPool, early: i64) {
    // New events sort after every old one, and the projection sees them.
    place(pool, 5).await;
    project(pool).await;
    assert_eq!(rows(pool).await, 15);
    // The early write is found by replaying from its position (the replay
    // starts before every event at positions ≥ it, whatever their ids).
    operate::replay(pool, &OrdersReadModel, Some(early - 1), 100, |_| {})
        .await
        .expect("replay");
    assert_eq!(rows(pool).await, 16);
    assert!(projections::verify::orders(pool)
        .await
        .expect("verify")
        .is_empty());
    let (old_max, new_min): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT max(transaction_id::text::bigint) FROM events WHERE position <= 20),
                (SELECT min(transaction_id::text::bigint) FROM events WHERE position > $1)",
    )
    .bind(early)
    .fetch_one(pool)
    .await
    .expect("ids");
    assert!(
        new_min > old_max,
        "new ids {new_min} after old ones {old_max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_cluster_behind_the_stored_ids_is_refused_then_repaired_without_loss() {
    let tmp = std::env::temp_dir().join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
    let (source, target) = (tmp.join("source"), tmp.join("target"));
    let dump = dump_a_cluster_ahead(&source).await;
    let url = restore_into_a_fresh_cluster(&target, &dump).await;
    let pool = connect(&url).await;
    let mut conn = pool.acquire().await.expect("conn");
    assert_refused_until_repaired(&mut conn, &url).await;
    let early = write_before_the_repair(&pool).await;
    repair(&mut conn).await;
    assert_nothing_lost_after_the_repair(&pool, early).await;
    drop(conn);
    pool.close().await;
    stop_cluster(&target).await;
    let _ = std::fs::remove_dir_all(Path::new(&tmp));
}
