//! The workers' connections plan every statement for the tables as they are
//! now (`services::db::planned_per_batch`). A statement the delivery
//! consumer first ran while its generation's table was empty must not keep
//! that plan, a scan of the whole table, once the table has grown: a fresh
//! database, a rebuilt generation and an outbox that fills during a broker
//! outage all start that way. So do the tables an operator's command
//! fills (a rebuild's new generation).

use e2e::TestDb;
use services::db::{Budgets, Pools};

/// The delivery model's check of the event ids a batch's orders applied
/// (projections/src/delivery/model.rs), prepared under a name of our own.
const CHECK: &str = "PREPARE check_ids(uuid[]) AS
    SELECT order_id, event_ids FROM delivery.order_status_g1 WHERE order_id = ANY($1)";

/// The plan `check_ids` runs with now, on that connection.
async fn plan(conn: &mut sqlx::PgConnection) -> String {
    let lines: Vec<String> =
        sqlx::query_scalar("EXPLAIN EXECUTE check_ids(array_fill(gen_random_uuid(), ARRAY[11]))")
            .fetch_all(&mut *conn)
            .await
            .expect("explain the prepared statement");
    lines.join("\n")
}

#[tokio::test]
async fn a_statement_first_run_on_an_empty_table_reads_by_index_once_the_table_has_grown() {
    let db = TestDb::create().await;
    let pools = Pools::connect(&db.url, Budgets::default())
        .await
        .expect("connect the service's pools");
    // An operator's command (a rebuild into a new, empty generation) writes
    // through its write pool.
    let command = Pools::connect_for_command(&db.url, Budgets::default())
        .await
        .expect("connect a command's pools");
    // Prepared and run while the table is empty, with a batch's worth of
    // ids, as often as PostgreSQL needs to settle on a plan it would keep
    // (five times, then a generic one); then planned again after 50,000
    // orders were applied, with no ANALYZE in between.
    let mut workers = pools.workers.acquire().await.expect("a worker connection");
    let mut consumer = pools
        .consumer
        .acquire()
        .await
        .expect("a consumer connection");
    let mut writes = command
        .writes
        .acquire()
        .await
        .expect("a command's connection");
    for conn in [&mut workers, &mut consumer, &mut writes] {
        sqlx::query(CHECK)
            .execute(&mut **conn)
            .await
            .expect("prepare");
        for _ in 0..8 {
            sqlx::query("EXECUTE check_ids(array_fill(gen_random_uuid(), ARRAY[11]))")
                .execute(&mut **conn)
                .await
                .expect("execute on the empty table");
        }
    }
    sqlx::query(
        "INSERT INTO delivery.order_status_g1
             (order_id, user_id, coffee_name, coffee_qty, status, ordered_at, updated_at,
              version, last_position)
         SELECT gen_random_uuid(), 'USER' || n, 'latte', 1, 'received', now(), now(), 1, n
           FROM generate_series(1, 50000) AS n",
    )
    .execute(&db.pool)
    .await
    .expect("apply 50,000 orders");
    for (name, conn) in [
        ("workers", &mut workers),
        ("consumer", &mut consumer),
        ("command's write", &mut writes),
    ] {
        let plan = plan(conn).await;
        assert!(
            !plan.contains("Seq Scan"),
            "the {name} pool's statement still scans the whole table after it grew:\n{plan}"
        );
        assert!(
            plan.contains("order_status_g1_pkey"),
            "the {name} pool's statement reads by the order id's index:\n{plan}"
        );
    }
}
