//! Group commit (services/src/store/group.rs): orders placed at the same time
//! are appended together, in one transaction, and each request still gets
//! its own answer: a replayed or refused one never fails the others, and a
//! key held twice in one batch places one order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use e2e::{spawn_app, Reply, TestApp};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

const AT_ONCE: usize = 120;

async fn place(app: &TestApp, user: &str, body: &Value, key: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    app.request(
        Method::POST,
        &format!("/order-ms/{user}/orders"),
        Some(body),
        &headers,
    )
    .await
}

fn latte(qty: usize) -> Value {
    json!({"coffee_name": "latte", "coffee_price": "4000", "coffee_qty": qty.to_string()})
}

/// How many transactions wrote the log's events.
async fn transactions(app: &TestApp) -> i64 {
    app.db
        .count("SELECT count(DISTINCT transaction_id) FROM events")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_at_once_share_transactions_and_each_gets_its_own_answer() {
    let app = Arc::new(spawn_app().await);
    // Tokens first, so the requests leave together.
    for u in 0..4 {
        app.token(&format!("g{u}"), None).await;
    }
    let replies = join_all((0..AT_ONCE).map(|i| {
        let app = app.clone();
        async move { place(&app, &format!("g{}", i % 4), &latte(i % 9 + 1), None).await }
    }))
    .await;
    let mut ids = HashSet::new();
    for (i, reply) in replies.iter().enumerate() {
        let body = reply.ok(201);
        assert_eq!(body["coffee_qty"], (i % 9 + 1) as u64, "each its own order");
        assert_eq!(body["user_id"], format!("g{}", i % 4));
        ids.insert(body["order_id"].as_str().expect("an id").to_owned());
    }
    assert_eq!(ids.len(), AT_ONCE);
    assert_eq!(app.db.events().await, AT_ONCE as i64);
    assert_eq!(app.db.outbox().await, AT_ONCE as i64);
    let txs = transactions(&app).await;
    assert!(
        txs < AT_ONCE as i64,
        "{AT_ONCE} orders placed at once were appended in {txs} transactions: no group commit"
    );
    // Each order reads back as placed, at the position its answer named.
    for reply in &replies {
        let position: i64 = reply
            .header("x-log-position")
            .and_then(|p| p.parse().ok())
            .expect("X-Log-Position");
        let id = reply.json()["order_id"].as_str().expect("id").to_owned();
        let at: i64 = app
            .db
            .count(&format!(
                "SELECT position FROM events WHERE stream_id = '{id}'"
            ))
            .await;
        assert_eq!(at, position, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_many_times_at_once_places_one_order_and_the_others_are_unaffected() {
    let app = Arc::new(spawn_app().await);
    app.token("k1", None).await;
    // Half the requests carry one key (the same body), a few the same key
    // with another body, the rest keys of their own.
    let replies = join_all((0..AT_ONCE).map(|i| {
        let app = app.clone();
        async move {
            let (body, key) = match i % 4 {
                0 | 1 => (latte(2), "shared".to_owned()),
                2 if i % 8 == 2 => (latte(5), "shared".to_owned()),
                _ => (latte(3), format!("own-{i}")),
            };
            (i, place(&app, "k1", &body, Some(&key)).await)
        }
    }))
    .await;
    // Whichever body took the shared key first, every request with that
    // body gets its order and every request with the other body is refused.
    let mut shared_orders = HashSet::new();
    let mut own_orders = HashSet::new();
    let mut refused_bodies = HashSet::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (i, reply) in &replies {
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
        let shared = i % 4 < 2 || i % 8 == 2;
        if shared {
            let qty = if i % 4 < 2 { 2 } else { 5 };
            if reply.status == 201 {
                let body = reply.json();
                assert_eq!(body["coffee_qty"], qty, "a replay of the other body");
                shared_orders.insert((body["order_id"].to_string(), qty));
            } else {
                assert_eq!(
                    reply.problem(422)["type"],
                    "/problems/idempotency-key-reused"
                );
                refused_bodies.insert(qty);
            }
        } else {
            own_orders.insert(reply.ok(201)["order_id"].to_string());
        }
    }
    assert_eq!(
        shared_orders.len(),
        1,
        "one key, one order: {shared_orders:?} ({statuses:?})"
    );
    let winner = shared_orders.iter().next().map(|(_, qty)| *qty);
    assert!(
        !refused_bodies.iter().any(|qty| Some(*qty) == winner),
        "a request with the winning body was refused"
    );
    let own = replies
        .iter()
        .filter(|(i, _)| i % 4 == 3 || (i % 4 == 2 && i % 8 != 2))
        .count();
    assert_eq!(own_orders.len(), own);
    assert_eq!(app.db.events().await, (own + 1) as i64);
    assert_eq!(app.db.outbox().await, (own + 1) as i64);
    assert_eq!(
        app.db.count("SELECT count(*) FROM idempotency_keys").await,
        (own + 1) as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_the_database_refuses_fails_alone() {
    let app = Arc::new(spawn_app().await);
    app.token("p1", None).await;
    // A rule of this test's database only: it refuses orders of 7 lattes.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_seven() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.payload->'lines'->0->>'coffee_qty' = '7' THEN
                 RAISE EXCEPTION 'seven is refused here' USING ERRCODE = 'check_violation';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_seven BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refuse_seven();",
    )
    .execute(&app.db.pool)
    .await
    .expect("install the test's trigger");
    let replies = join_all((0..AT_ONCE).map(|i| {
        let app = app.clone();
        async move {
            let qty = if i % 10 == 0 { 7 } else { 1 + i % 5 };
            (qty, place(&app, "p1", &latte(qty), None).await)
        }
    }))
    .await;
    let mut placed = 0;
    for (qty, reply) in &replies {
        if *qty == 7 {
            assert!(
                reply.status.is_server_error(),
                "the refused order: {} {}",
                reply.status,
                reply.text
            );
        } else {
            assert_eq!(reply.ok(201)["coffee_qty"], *qty as u64);
            placed += 1;
        }
    }
    assert_eq!(placed, AT_ONCE - AT_ONCE / 10);
    assert_eq!(app.db.events().await, placed as i64);
    assert_eq!(app.db.outbox().await, placed as i64);
}

/// A placement checked against a menu generation that is no longer the
/// menu's writes nothing, neither its events, its outbox row, its key nor a
/// pickup number, alone (one statement) or beside current ones in one
/// batch; each answer says so (`MenuChanged`), and the current ones are
/// appended, each with a number of the store's day drawn by its append: 1 to
/// 8, none twice, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_checked_against_a_menu_that_changed_writes_nothing() {
    use domain::{Event, Metadata, OrderId, StoreId};
    use services::store::{EventStore, IdempotencyKey, StoreError};

    let db = e2e::TestDb::create().await;
    let now: i64 = sqlx::query_scalar("SELECT generation FROM menu_generation")
        .fetch_one(&db.pool)
        .await
        .expect("the generation");
    let main = StoreId::default_store();
    let day = time::Date::from_calendar_date(2026, time::Month::December, 24).expect("a day");
    let placed = |id: OrderId| {
        Event::decode(
            Event::PLACED,
            2,
            e2e::placed_payload(id.as_uuid(), "g", "latte", 4000, 1),
        )
        .expect("a placement")
    };
    let key = |k: &str| IdempotencyKey {
        scope: "g".into(),
        key: k.into(),
        fingerprint: "f".into(),
    };
    let mut numbers = Vec::new();
    for store in [
        EventStore::new(db.pool.clone()),
        EventStore::new(db.pool.clone()).with_group_commit(),
    ] {
        let store = Arc::new(store);
        let attempts = (0..8).map(|i| {
            let (store, main) = (store.clone(), main.clone());
            let id = OrderId::generate();
            let generation = if i % 2 == 0 { now } else { now - 1 };
            let key = key(&format!("k{i}-{}", id.as_uuid()));
            async move {
                let result = store
                    .place(
                        id,
                        &[placed(id)],
                        &Metadata::default(),
                        Some(&key),
                        (generation, (&main, day)),
                    )
                    .await;
                (generation == now, result)
            }
        });
        for (current, result) in join_all(attempts).await {
            match (current, result) {
                (true, Ok(appended)) => {
                    let Event::OrderPlaced(placed) = &appended.events[0].event else {
                        panic!("a placement")
                    };
                    numbers.push(placed.pickup_number.expect("a drawn number"));
                }
                (false, Err(StoreError::MenuChanged)) => {}
                (current, other) => panic!("current menu {current}: {other:?}"),
            }
        }
    }
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=8).collect::<Vec<u32>>(),
        "drawn once each, none skipped"
    );
    assert_eq!(
        db.events().await,
        8,
        "the current ones only, 4 of each store"
    );
    assert_eq!(db.outbox().await, 8);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 8);
    // The number is in the stored event too.
    let stored: i64 = db
        .count("SELECT count(DISTINCT (payload->>'pickup_number')::int) FROM events")
        .await;
    assert_eq!(stored, 8);
}
