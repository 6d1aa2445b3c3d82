//! The gap-safe reader under concurrent writers: no event committed out of
//! position order is ever skipped, and none is applied twice.
//!
//! `GAP_TEST_READER=naive` runs the stress test against the naive
//! `position > checkpoint` reader instead, to show that the test catches it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{CancelledBy, Event, OrderCancelled, Status};
use e2e::{checkpoint, order_model_and_fold, placed_payload, TestDb};
use projections::orders::NAME;
use projections::runner::{self, WorkerOptions};
use projections::{OrdersReadModel, ReadMode};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Appends one event inside the caller's transaction, as the event store
/// does (event row + outbox row), and returns its position.
async fn insert(conn: &mut PgConnection, stream: Uuid, version: i32, event: &Event) -> i64 {
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
         VALUES ($1, $2, $3, $4, 1, $5) RETURNING position",
    )
    .bind(stream)
    .bind(version)
    .bind(Uuid::now_v7())
    .bind(event.event_type())
    .bind(event.payload())
    .fetch_one(&mut *conn)
    .await
    .expect("insert an event");
    sqlx::query("INSERT INTO outbox (position, stream_id) VALUES ($1, $2)")
        .bind(position)
        .bind(stream)
        .execute(&mut *conn)
        .await
        .expect("insert its outbox row");
    position
}

fn placed(order: Uuid, user: &str) -> Event {
    let payload = placed_payload(order, user, "drip", 3000, 1);
    Event::decode(Event::PLACED, 1, payload).expect("a valid placement")
}

/// The event that moves an order from `status` on, picked at random among
/// the lifecycle's allowed moves.
fn next_event(status: Status, rng: &mut fastrand::Rng) -> Option<Event> {
    let next = status.next();
    if next.is_empty() {
        return None;
    }
    Some(match next[rng.usize(..next.len())] {
        Status::Preparing => Event::OrderPreparationStarted,
        Status::Delivering => Event::OrderOutForDelivery,
        Status::Delivered => Event::OrderDelivered,
        Status::Cancelled => Event::OrderCancelled(OrderCancelled {
            by: CancelledBy::Staff,
        }),
        Status::Received => return None,
    })
}

async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.url).await.expect("connect")
}

async fn model_ids(db: &TestDb) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT order_id FROM order_view ORDER BY order_id")
        .fetch_all(&db.pool)
        .await
        .expect("read the model")
}

/// Position 1 is written first but commits after position 2.
async fn out_of_order_commit(mode: ReadMode) -> (usize, usize, Vec<Uuid>, [Uuid; 2]) {
    let db = TestDb::create().await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let mut a = connect(&db).await;
    let mut b = connect(&db).await;
    let mut reader = connect(&db).await;
    let lease = e2e::projection_lease(&db.pool, projections::orders::NAME).await;

    let mut held = a.begin().await.expect("begin");
    let p1 = insert(&mut held, first, 1, &placed(first, "early")).await;
    let mut quick = b.begin().await.expect("begin");
    let p2 = insert(&mut quick, second, 1, &placed(second, "late")).await;
    assert!(p1 < p2, "the held transaction has the lower position");
    quick
        .commit()
        .await
        .expect("commit the later position first");

    let before = runner::step(&mut reader, lease.fence(), &OrdersReadModel, 100, mode)
        .await
        .expect("a step");
    held.commit()
        .await
        .expect("commit the earlier position last");
    // The visibility horizon is the whole cluster's: other tests' open
    // transactions may hold it back a little longer. Read until both events
    // came (the naive reader ignores the horizon: a short while is enough).
    let mut after = 0;
    let patience = match mode {
        ReadMode::GapSafe => Duration::from_secs(20),
        ReadMode::NaivePositionOnly => Duration::from_millis(500),
    };
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        after += runner::step(&mut reader, lease.fence(), &OrdersReadModel, 100, mode)
            .await
            .expect("a step");
        if after >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (before, after, model_ids(&db).await, [first, second])
}

#[tokio::test]
async fn an_event_committed_after_a_later_position_is_applied_not_skipped() {
    let (before, after, ids, [first, second]) = out_of_order_commit(ReadMode::GapSafe).await;
    assert_eq!(
        before, 0,
        "while position 1 may still commit, nothing after it is handed out"
    );
    assert_eq!(after, 2, "once it committed, both are applied");
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn the_naive_position_reader_skips_it_which_is_the_bug_the_tests_catch() {
    let (before, after, ids, [first, second]) =
        out_of_order_commit(ReadMode::NaivePositionOnly).await;
    assert_eq!(before, 1, "the naive reader applies position 2 at once");
    assert_eq!(after, 0, "and never looks below its checkpoint again");
    assert_eq!(
        ids,
        vec![second],
        "the event at position 1 is lost: {first}"
    );
}

#[derive(Default)]
struct Stats {
    events: AtomicU64,
    held: AtomicU64,
    rolled_back: AtomicU64,
    multi_event: AtomicU64,
}

/// One writer: places orders and moves its own orders on, one transaction at
/// a time; holds a quarter of its transactions open for a random while and
/// rolls some back (leaving holes in the positions).
async fn writer(db_url: String, id: usize, quota: u64, stats: Arc<Stats>) {
    let mut conn = PgConnection::connect(&db_url).await.expect("connect");
    let mut rng = fastrand::Rng::with_seed(0x5eed + id as u64);
    let user = format!("writer{id}");
    // Orders still open: (id, version, status).
    let mut open: Vec<(Uuid, i32, Status)> = Vec::new();
    let mut written = 0u64;
    while written < quota {
        let mut tx = conn.begin().await.expect("begin");
        let mut staged: Vec<(usize, i32, Status)> = Vec::new(); // (slot, version, status)
        let mut n = 0;
        let new_order = open.len() < 3 || rng.u8(..100) < 40;
        if new_order {
            let order = Uuid::now_v7();
            insert(&mut tx, order, 1, &placed(order, &user)).await;
            open.push((order, 0, Status::Received));
            staged.push((open.len() - 1, 1, Status::Received));
            n += 1;
            if rng.u8(..100) < 10 {
                // Two events of one stream in one transaction.
                insert(&mut tx, order, 2, &Event::OrderPreparationStarted).await;
                staged.push((open.len() - 1, 2, Status::Preparing));
                n += 1;
                stats.multi_event.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let slot = rng.usize(..open.len());
            let (order, version, status) = open[slot];
            if let Some(event) = next_event(status, &mut rng) {
                insert(&mut tx, order, version + 1, &event).await;
                staged.push((slot, version + 1, event.status_after()));
                n += 1;
            }
        }
        if rng.u8(..100) < 25 {
            stats.held.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(rng.u64(1..=30))).await;
        }
        if rng.u8(..100) < 5 {
            tx.rollback().await.expect("rollback");
            stats.rolled_back.fetch_add(1, Ordering::Relaxed);
            if new_order {
                open.pop();
            }
            continue;
        }
        tx.commit().await.expect("commit");
        for (slot, version, status) in staged {
            open[slot].1 = version;
            open[slot].2 = status;
        }
        open.retain(|(_, _, s)| !s.next().is_empty());
        written += n;
        stats.events.fetch_add(n, Ordering::Relaxed);
    }
}

/// Let the projection converge: all `in_log` events applied, or no progress
/// for 10 s (other tests' transactions in the cluster may hold the horizon
/// back).
async fn let_the_projection_converge(pool: &sqlx::PgPool, in_log: i64) {
    let mut last = (-1, Instant::now());
    loop {
        let applied = checkpoint(pool, NAME).await.events_applied;
        if applied >= in_log {
            break;
        }
        if applied != last.0 {
            last = (applied, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per stream: the read model's version and status are the log's.
async fn assert_each_row_is_the_fold_of_its_stream(pool: &sqlx::PgPool) {
    let (model, fold) = order_model_and_fold(pool).await;
    assert_eq!(model.len(), fold.len(), "one row per order");
    let by_id: HashMap<Uuid, _> = model.iter().map(|r| (r.order_id, r)).collect();
    for expected in &fold {
        let row = by_id
            .get(&expected.order_id)
            .unwrap_or_else(|| panic!("order {} is missing", expected.order_id));
        assert_eq!(*row, expected, "the row equals the fold of its stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_with_held_transactions_every_event_applied_exactly_once() {
    const WRITERS: usize = 8;
    const EVENTS: u64 = 10_000;
    let mode = match std::env::var("GAP_TEST_READER").as_deref() {
        Ok("naive") => ReadMode::NaivePositionOnly,
        _ => ReadMode::GapSafe,
    };
    let db = TestDb::create().await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(runner::run_worker(
        db.pool.clone(),
        OrdersReadModel,
        WorkerOptions {
            batch_size: 250,
            poll_interval: Duration::from_millis(5),
            read_mode: mode,
            ..WorkerOptions::default()
        },
        stop.clone(),
    ));

    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                db.url.clone(),
                id,
                EVENTS / WRITERS as u64,
                stats.clone(),
            ))
        })
        .collect();
    for w in writers {
        w.await.expect("a writer");
    }
    let written = stats.events.load(Ordering::Relaxed);
    let in_log = db.events().await;
    assert_eq!(in_log, i64::try_from(written).expect("fits"));
    assert!(in_log >= 10_000, "at least 10,000 events: {in_log}");

    let_the_projection_converge(&db.pool, in_log).await;
    stop.cancel();
    worker.await.expect("worker task").expect("worker ran");

    let applied = checkpoint(&db.pool, NAME).await.events_applied;
    eprintln!(
        "gap test ({mode:?}): {in_log} events by {WRITERS} writers in {:.1?}; {} transactions held open, {} rolled back, {} with two events; applied {applied}, skipped {}",
        started.elapsed(),
        stats.held.load(Ordering::Relaxed),
        stats.rolled_back.load(Ordering::Relaxed),
        stats.multi_event.load(Ordering::Relaxed),
        in_log - applied,
    );
    assert_eq!(
        applied, in_log,
        "every event applied exactly once, none skipped"
    );

    assert_each_row_is_the_fold_of_its_stream(&db.pool).await;
}
