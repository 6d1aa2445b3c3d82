//! Operating projections: one worker at a time, replay, status, and the CLI.

use std::process::Stdio;
use std::time::Duration;

use e2e::{
    checkpoint, order_model_and_fold, orders_bin, spawn_app_without_workers, wait_caught_up,
};
use projections::operate;
use projections::orders::NAME;
use projections::runner::{self, WorkerOptions};
use projections::OrdersReadModel;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

fn options() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(20),
        lock_retry: Duration::from_millis(100),
        ..WorkerOptions::default()
    }
}

/// The projection's lease: its token while a live worker holds it.
async fn lease_token(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT token FROM leader_leases
          WHERE name = $1 AND expires_at > clock_timestamp()",
    )
    .bind(infra::lease::projection(NAME))
    .fetch_optional(pool)
    .await
    .expect("read leader_leases")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_waits_and_takes_over_when_the_first_stops() {
    let app = spawn_app_without_workers().await;
    let pool = app.db.pool.clone();
    let first_stop = CancellationToken::new();
    let first = tokio::spawn(runner::run_worker(
        pool.clone(),
        OrdersReadModel,
        options(),
        first_stop.clone(),
    ));
    for _ in 0..20 {
        app.place_ok("ivy").await;
    }
    wait_caught_up(&pool, NAME, Duration::from_secs(10)).await;
    let first_token = lease_token(&pool).await.expect("the first worker leads");

    let second_stop = CancellationToken::new();
    let second = tokio::spawn(runner::run_worker(
        pool.clone(),
        OrdersReadModel,
        options(),
        second_stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lease_token(&pool).await,
        Some(first_token),
        "the second worker stands by"
    );
    for _ in 0..20 {
        app.place_ok("ivy").await;
    }
    wait_caught_up(&pool, NAME, Duration::from_secs(10)).await;

    first_stop.cancel();
    first.await.expect("task").expect("first worker");
    for _ in 0..20 {
        app.place_ok("ivy").await;
    }
    // The second worker takes the lock and applies the rest.
    wait_caught_up(&pool, NAME, Duration::from_secs(10)).await;
    assert_eq!(
        lease_token(&pool).await,
        Some(first_token + 1),
        "the second worker took the lease"
    );
    second_stop.cancel();
    second.await.expect("task").expect("second worker");

    assert_eq!(
        checkpoint(&pool, NAME).await.events_applied,
        60,
        "nothing applied twice"
    );
    let (model, fold) = order_model_and_fold(&pool).await;
    assert_eq!(model, fold);
}

async fn orders_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(orders_bin())
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run orders");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_prints_position_head_and_lag() {
    let app = spawn_app_without_workers().await;
    for _ in 0..3 {
        app.place_ok("jack").await;
    }
    let (ok, out, err) = orders_cli(&app.db.url, &["projections", "status"]).await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("orders"))
        .expect("a line for orders");
    let cols: Vec<&str> = line.split_whitespace().collect();
    // NAME GEN POSITION HEAD LAG-EVENTS LAG APPLIED UPDATED
    assert_eq!(&cols[1..5], ["1", "0", "3", "3"], "{out}");

    let (ok, out, err) = orders_cli(&app.db.url, &["projections", "status", "--json"]).await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["name"], "orders");
    assert_eq!(json[0]["lag_events"], 3);
    assert_eq!(json[0]["head"], 3);
    assert!(json[0]["lag_seconds"].as_f64().expect("seconds") >= 0.0);

    // Replaying with no worker running applies the log itself.
    let (ok, out, err) = orders_cli(&app.db.url, &["projections", "replay", "orders"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("replayed 3 events"), "{out}");
    let (_, out, _) = orders_cli(&app.db.url, &["projections", "status", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["position"], 3);
    assert_eq!(json[0]["lag_events"], 0);

    let (ok, out, _) = orders_cli(&app.db.url, &["projections", "list"]).await;
    assert!(ok);
    assert!(out.contains("orders"), "{out}");
}

#[tokio::test]
async fn operators_mistakes_are_clear_errors() {
    let app = spawn_app_without_workers().await;
    app.place_ok("kim").await;
    let (ok, _, err) = orders_cli(&app.db.url, &["projections", "rebuild", "nope"]).await;
    assert!(!ok);
    assert!(err.contains("no projection is named \"nope\""), "{err}");
    let (ok, _, err) = orders_cli(
        &app.db.url,
        &["projections", "replay", "orders", "--from", "99"],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("no committed event is at log position 99"),
        "{err}"
    );
    let (ok, _, err) = orders_cli(
        &app.db.url,
        &["projections", "replay", "orders", "--from", "0"],
    )
    .await;
    assert!(!ok, "positions start at 1");
    assert!(err.contains("--from"), "{err}");
}

#[tokio::test]
async fn replay_from_a_position_restores_rows_lost_behind_the_checkpoint() {
    let app = spawn_app_without_workers().await;
    let pool = app.db.pool.clone();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.place_ok("lee").await);
    }
    let moved = app.move_to("lee", &ids[3], "preparing", &[]).await;
    moved.ok(200);
    let (ok, _, err) = orders_cli(&app.db.url, &["projections", "replay", "orders"]).await;
    assert!(ok, "{err}");
    let (model, fold) = order_model_and_fold(&pool).await;
    assert_eq!(model, fold);

    // Lose rows as a restore from an older backup would: the last two orders.
    let generation: i32 =
        sqlx::query_scalar("SELECT active_generation FROM projections WHERE name = 'orders'")
            .fetch_one(&pool)
            .await
            .expect("generation");
    sqlx::query(&format!(
        "DELETE FROM order_view_g{generation} WHERE order_id = ANY($1::uuid[])"
    ))
    .bind(vec![
        ids[2].parse::<uuid::Uuid>().expect("id"),
        ids[3].parse().expect("id"),
    ])
    .execute(&pool)
    .await
    .expect("delete rows");
    let (model, fold) = order_model_and_fold(&pool).await;
    assert_ne!(model, fold, "the model is damaged");

    // Replay from the third order's placement (position 3).
    let (ok, out, err) = orders_cli(
        &app.db.url,
        &["projections", "replay", "orders", "--from", "3"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("replayed 3 events"), "{out}");
    let (model, fold) = order_model_and_fold(&pool).await;
    assert_eq!(model, fold, "the replay brought the lost rows back");
    // Replayed events the model already had were no-ops: versions still match.
    assert_eq!(checkpoint(&pool, NAME).await.cursor.position, 5);
}

/// The API without workers, on a PostgreSQL cluster of its own (these
/// tests hold the transaction horizon).
async fn alone_without_workers() -> e2e::TestApp {
    e2e::spawn_app_opts(e2e::AppOptions {
        workers: false,
        alone: true,
        ..e2e::AppOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_waits_for_a_running_transaction_instead_of_stopping_short() {
    let app = alone_without_workers().await;
    let holder = e2e::hold_the_horizon(&app.db).await;
    for _ in 0..3 {
        app.place_ok("mia").await;
    }
    let url = app.db.url.clone();
    let replay =
        tokio::spawn(async move { orders_cli(&url, &["projections", "replay", "orders"]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !replay.is_finished(),
        "the replay must not finish while events it has to apply are not safe to read"
    );
    holder.rollback().await.expect("end the holder");
    let (ok, out, err) = tokio::time::timeout(Duration::from_secs(20), replay)
        .await
        .expect("the replay ends once the horizon moves")
        .expect("task");
    assert!(ok, "{err}");
    assert!(out.contains("replayed 3 events"), "{out}");
    assert_eq!(checkpoint(&app.db.pool, NAME).await.cursor.position, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_without_a_worker_includes_every_event_committed_before_it_began() {
    let app = alone_without_workers().await;
    let pool = app.db.pool.clone();
    let holder = e2e::hold_the_horizon(&app.db).await;
    for _ in 0..4 {
        app.place_ok("noah").await;
    }
    let rebuild = tokio::spawn({
        let pool = pool.clone();
        async move { operate::rebuild(&pool, &OrdersReadModel, 5000, |_| {}).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!rebuild.is_finished(), "the rebuild waits for the horizon");
    holder.rollback().await.expect("end the holder");
    let report = tokio::time::timeout(Duration::from_secs(20), rebuild)
        .await
        .expect("the rebuild ends once the horizon moves")
        .expect("task")
        .expect("rebuild");
    assert_eq!(report.events, 4);
    assert_eq!(checkpoint(&pool, NAME).await.cursor.position, 4);
    let (model, fold) = order_model_and_fold(&pool).await;
    assert_eq!(model, fold);
}
