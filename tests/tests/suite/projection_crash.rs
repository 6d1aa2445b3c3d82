//! The projection worker killed between applying a batch and committing it:
//! after a restart the read model equals the fold of the log, and no event
//! took effect twice.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use domain::{Event, Metadata, OrderId};
use e2e::{checkpoint, order_model_and_fold, orders_bin, placed_payload, wait_caught_up, TestDb};
use projections::orders::NAME;
use services::store::EventStore;
use tokio::process::Command;

/// Sum of the read model's row versions: each applied event adds exactly one.
async fn version_sum(db: &TestDb) -> i64 {
    db.count("SELECT coalesce(sum(version), 0)::bigint FROM order_view")
        .await
}

async fn seed(db: &TestDb, orders: usize) {
    let store = EventStore::new(db.pool.clone());
    for i in 0..orders {
        let id = OrderId::generate();
        let placed = Event::decode(
            Event::PLACED,
            1,
            placed_payload(id.as_uuid(), &format!("user{}", i % 17), "latte", 4500, 2),
        )
        .expect("a placement");
        store
            .append(id, 0, &[placed], &Metadata::default(), None)
            .await
            .expect("append");
        if i % 2 == 0 {
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
}

#[tokio::test]
async fn a_worker_killed_before_commit_leaves_nothing_half_applied() {
    let db = TestDb::create().await;
    seed(&db, 400).await; // 600 events
    let total = db.events().await;

    // The third batch of 50 dies between apply and commit.
    let output = Command::new(orders_bin())
        .args(["project", "orders", "--batch-size", "50"])
        .env("DATABASE_URL", &db.url)
        .env("ORDERS_FAILPOINT", "projection.before_commit:3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the worker dies within 60 s")
        .expect("run orders project");
    assert_eq!(
        output.status.signal(),
        Some(6),
        "killed by SIGABRT at the failpoint; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Two batches committed; the third's changes went with the process.
    let cp = checkpoint(&db.pool, NAME).await;
    assert_eq!(cp.events_applied, 100);
    assert_eq!(
        version_sum(&db).await,
        100,
        "the model holds exactly the committed batches"
    );

    // Restart: it carries on from the checkpoint.
    let mut child = Command::new(orders_bin())
        .args(["project", "--batch-size", "50"])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("restart orders project");
    wait_caught_up(&db.pool, NAME, Duration::from_secs(60)).await;
    child.kill().await.expect("stop the worker");

    let cp = checkpoint(&db.pool, NAME).await;
    assert_eq!(cp.events_applied, total, "every event applied once");
    assert_eq!(version_sum(&db).await, total, "no event took effect twice");
    let (model, fold) = order_model_and_fold(&db.pool).await;
    assert_eq!(model, fold, "the read model equals the fold of the log");
}
