//! Rebuilding the order read model beside the live one, under readers: the
//! rebuilt model equals the live one row by row, and no reader ever sees an
//! error, an empty page or a partial order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{order_model_and_fold, spawn_app, wait_caught_up, TestApp};
use projections::operate::{self, RebuildReport};
use projections::orders::NAME;
use projections::OrdersReadModel;
use serde_json::Value;
use uuid::Uuid;

const ORDERS: usize = 50_000;
const USERS: usize = 100;

/// Writes ≥ 100,000 events straight into the log, 10,000 orders per
/// transaction: placements, then moves along every path of the lifecycle.
async fn seed(pool: &sqlx::PgPool) -> i64 {
    for chunk in 0..ORDERS / 10_000 {
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        let users: Vec<String> = (0..10_000)
            .map(|i| format!("user{}", (chunk * 10_000 + i) % USERS))
            .collect();
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("CREATE TEMP TABLE seed ON COMMIT DROP AS SELECT * FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS s(id, user_id, n)")
            .bind(&ids)
            .bind(&users)
            .execute(&mut *tx)
            .await
            .expect("seed table");
        sqlx::query(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             SELECT id, 1, gen_random_uuid(), 'OrderPlaced', 1, jsonb_build_object(
                        'order_id', id, 'user_id', user_id, 'coffee_name', 'coffee ' || (n % 7),
                        'coffee_price', 1000 + (n % 5) * 500, 'coffee_qty', 1 + n % 3,
                        'total_price', (1000 + (n % 5) * 500) * (1 + n % 3))
               FROM seed ORDER BY n",
        )
        .execute(&mut *tx)
        .await
        .expect("placements");
        for (version, event_type, payload, filter) in [
            (2, "OrderPreparationStarted", "{}", "n % 2 = 0"),
            (
                2,
                "OrderCancelled",
                r#"{"by": "customer"}"#,
                "n % 2 = 1 AND n % 3 = 0",
            ),
            (3, "OrderOutForDelivery", "{}", "n % 4 = 0"),
            (4, "OrderDelivered", "{}", "n % 8 = 0"),
        ] {
            sqlx::query(&format!(
                "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
                 SELECT id, {version}, gen_random_uuid(), '{event_type}', 1, '{payload}'::jsonb
                   FROM seed WHERE {filter} ORDER BY n"
            ))
            .execute(&mut *tx)
            .await
            .expect("moves");
        }
        tx.commit().await.expect("commit the seed");
    }
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// A complete order as the HTTP contract kept beside the repository (API.md) shows it, or why not.
fn check_order(order: &Value) -> Result<(), String> {
    let fields = [
        "order_id",
        "user_id",
        "coffee_name",
        "coffee_price",
        "coffee_qty",
        "total_price",
        "status",
        "status_label",
        "ordered_at",
        "updated_at",
        "version",
    ];
    for f in fields {
        if order.get(f).is_none_or(Value::is_null) {
            return Err(format!("missing {f}: {order}"));
        }
    }
    let (price, qty, total) = (
        order["coffee_price"].as_u64(),
        order["coffee_qty"].as_u64(),
        order["total_price"].as_u64(),
    );
    if price.zip(qty).map(|(p, q)| p * q) != total {
        return Err(format!("total is not price × qty: {order}"));
    }
    Ok(())
}

struct ReaderStats {
    polls: AtomicU64,
    failures: AtomicU64,
}

async fn reader(app: Arc<TestApp>, stop: Arc<AtomicBool>, stats: Arc<ReaderStats>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let user = rng.usize(..USERS);
        let reply = app
            .get(&format!("/order-ms/user{user}/orders?limit=50"))
            .await;
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let problem = if reply.status != 200 {
            Some(format!("status {}: {}", reply.status, reply.text))
        } else {
            match serde_json::from_str::<Value>(&reply.text) {
                Ok(Value::Array(orders)) if orders.len() == 50 => {
                    orders.iter().find_map(|o| check_order(o).err())
                }
                Ok(other) => Some(format!("not a full page: {other}")),
                Err(e) => Some(format!("not JSON: {e}")),
            }
        };
        if let Some(problem) = problem {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("reader saw: {problem}");
        }
    }
}

/// Seeds the log, waits for the live worker to apply it, and snapshots the
/// live model (`live_snapshot`) to compare the rebuilt one with.
async fn seed_and_snapshot_the_live_model(pool: &sqlx::PgPool) {
    let seeded = Instant::now();
    let events = seed(pool).await;
    assert!(events >= 100_000, "at least 100,000 events: {events}");
    let caught_up = Instant::now();
    wait_caught_up(pool, NAME, Duration::from_secs(300)).await;
    eprintln!(
        "seeded {events} events in {:.1?}; the live worker applied them in {:.1?}",
        caught_up - seeded,
        caught_up.elapsed()
    );
    sqlx::query("CREATE TABLE live_snapshot AS SELECT * FROM order_view")
        .execute(pool)
        .await
        .expect("snapshot the live model");
}

/// What runs against the app during the rebuild: two readers polling full
/// pages, and a writer placing new orders, until `stop`.
struct Traffic {
    stop: Arc<AtomicBool>,
    stats: Arc<ReaderStats>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<u64>,
}

impl Traffic {
    /// Starts the two readers and the writer.
    fn start(app: &Arc<TestApp>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ReaderStats {
            polls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let readers: Vec<_> = (0..2)
            .map(|i| tokio::spawn(reader(app.clone(), stop.clone(), stats.clone(), i)))
            .collect();
        // New orders keep arriving during the rebuild.
        let writer = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut placed = 0;
                while !stop.load(Ordering::Relaxed) {
                    app.place_ok("during-rebuild").await;
                    placed += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                placed
            })
        };
        Traffic {
            stop,
            stats,
            readers,
            writer,
        }
    }

    /// Stops the readers and the writer; returns how many orders were placed.
    async fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for r in std::mem::take(&mut self.readers) {
            r.await.expect("reader");
        }
        (&mut self.writer).await.expect("writer")
    }
}

/// Reports the rebuild, and checks the readers never saw a bad page and the
/// rebuild went from generation 1 to 2 over every seeded event.
fn check_the_rebuild_and_its_readers(report: &RebuildReport, stats: &ReaderStats, placed: u64) {
    let rate = report.events as f64 / report.elapsed.as_secs_f64();
    eprintln!(
        "rebuild: {} events in {:.2?} ({rate:.0} events/s), generation {} → {}; readers polled {} times, {} orders placed meanwhile",
        report.events,
        report.elapsed,
        report.old_generation,
        report.new_generation,
        stats.polls.load(Ordering::Relaxed),
        placed
    );
    assert_eq!(
        stats.failures.load(Ordering::Relaxed),
        0,
        "readers never saw an error, an empty page or a partial order"
    );
    assert!(
        stats.polls.load(Ordering::Relaxed) > 10,
        "the readers did read"
    );
    assert_eq!((report.old_generation, report.new_generation), (1, 2));
    assert!(report.events >= 100_000);
}

/// Readers are on the new generation alone, which is row by row the live
/// model it replaced and, with the orders placed meanwhile, the fold of the
/// log.
async fn check_the_rebuilt_model(pool: &sqlx::PgPool) {
    // The old generation is gone; readers are on the new one.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE tablename LIKE 'order_view_g%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert_eq!(tables, ["order_view_g2"]);

    // Row by row identical to the live model it replaced...
    let differ = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect(sql)
        }
    };
    assert_eq!(
        differ(
            "SELECT count(*) FROM (SELECT * FROM live_snapshot EXCEPT SELECT * FROM order_view) d"
        )
        .await,
        0,
        "every live row is in the rebuilt model, unchanged"
    );
    assert_eq!(
        differ("SELECT count(*) FROM (SELECT * FROM order_view WHERE user_id <> 'during-rebuild' EXCEPT SELECT * FROM live_snapshot) d").await,
        0,
        "and the rebuilt model has no other rows"
    );
    // ...and, with the orders placed meanwhile, equal to the fold of the log.
    wait_caught_up(pool, NAME, Duration::from_secs(30)).await;
    let (model, fold) = order_model_and_fold(pool).await;
    assert_eq!(model.len(), fold.len());
    assert!(
        model == fold,
        "the rebuilt model equals the fold of the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_switches_to_an_identical_model_while_readers_poll() {
    let app = Arc::new(spawn_app().await);
    let pool = app.db.pool.clone();
    seed_and_snapshot_the_live_model(&pool).await;
    let mut traffic = Traffic::start(&app);
    let report = operate::rebuild(&pool, &OrdersReadModel, 5000, |_| {})
        .await
        .expect("rebuild");
    // Keep reading a little after the switch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let placed_during = traffic.stop().await;
    check_the_rebuild_and_its_readers(&report, &traffic.stats, placed_during);
    check_the_rebuilt_model(&pool).await;
}
