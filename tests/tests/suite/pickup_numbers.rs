//! Pickup numbers ("Delivery service" in API.md, the HTTP contract kept beside the repository): a short per-day number on the
//! order, recorded in its OrderPlaced event, shown by the order and by the
//! delivery side; unique within a day across processes, from 1 each day.

use std::collections::HashSet;

use e2e::{spawn_app, test_kafka, AppOptions, TestDb};
use services::store::EventStore;
use time::macros::date;

/// One process's event store as place-order uses it (group commit), drawing
/// numbers the only way the service does: by placing an order, whose
/// append draws its store's next number of `day`.
struct Placer {
    store: EventStore,
    generation: i64,
}

impl Placer {
    async fn new(db: &TestDb) -> Placer {
        let generation = sqlx::query_scalar("SELECT generation FROM menu_generation")
            .fetch_one(&db.pool)
            .await
            .expect("the menu's generation");
        Placer {
            store: EventStore::new(db.pool.clone()).with_group_commit(),
            generation,
        }
    }

    /// Places an order at the default store on `day`: its pickup number.
    async fn next_on(&self, day: time::Date) -> u32 {
        let id = domain::OrderId::generate();
        let placed = domain::Event::decode(
            domain::Event::PLACED,
            2,
            e2e::placed_payload(id.as_uuid(), "p", "latte", 4000, 1),
        )
        .expect("a placement");
        let main = domain::StoreId::default_store();
        let appended = self
            .store
            .place(
                id,
                &[placed],
                &domain::Metadata::default(),
                None,
                (self.generation, (&main, day)),
            )
            .await
            .expect("placed");
        match &appended.events[0].event {
            domain::Event::OrderPlaced(placed) => placed.pickup_number.expect("a number"),
            other => panic!("not a placement: {other:?}"),
        }
    }
}

#[tokio::test]
async fn numbers_are_unique_within_a_day_across_processes_and_start_at_one_each_day() {
    let db = TestDb::create().await;
    // Two processes: no shared memory, only the database.
    let a = Placer::new(&db).await;
    let b = Placer::new(&db).await;
    let day = date!(2026 - 12 - 03);
    let mut draws = Vec::new();
    for round in 0..50 {
        let (x, y) = tokio::join!(a.next_on(day), b.next_on(day));
        draws.push(x);
        draws.push(y);
        assert!(draws.iter().all(|n| *n >= 1), "round {round}: {draws:?}");
    }
    let unique: HashSet<u32> = draws.iter().copied().collect();
    assert_eq!(
        unique.len(),
        draws.len(),
        "a number was given twice: {draws:?}"
    );
    // Short: a day's numbers are counted, not a global sequence.
    assert!(draws.iter().all(|n| *n <= 101), "{draws:?}");
    // The next day starts again at 1, whichever process asks first.
    let next_day = date!(2026 - 12 - 04);
    assert_eq!(b.next_on(next_day).await, 1);
    assert_eq!(a.next_on(next_day).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_asked_for_at_once_are_each_drawn_once_with_no_gaps() {
    let db = TestDb::create().await;
    let numbers = Placer::new(&db).await;
    let day = date!(2026 - 12 - 05);
    // The orders placed together share statements: every one still gets
    // its own number, and none is lost between them.
    let mut draws = futures::future::join_all((0..300).map(|_| numbers.next_on(day))).await;
    draws.sort_unstable();
    assert_eq!(draws, (1..=300).collect::<Vec<u32>>());
}

#[tokio::test]
async fn the_order_and_the_delivery_side_show_the_same_pickup_number() {
    let kafka = test_kafka();
    let app = e2e::spawn_app_opts(AppOptions {
        kafka: Some(kafka),
        ..AppOptions::default()
    })
    .await;
    let first = app
        .place(
            "USER0001",
            serde_json::json!({"coffee_name": "latte", "coffee_price": 5000}),
        )
        .await
        .ok(201);
    let second = app
        .place(
            "USER0002",
            serde_json::json!({"coffee_name": "latte", "coffee_price": 5000}),
        )
        .await
        .ok(201);
    let (n1, n2) = (
        first["pickup_number"].as_u64(),
        second["pickup_number"].as_u64(),
    );
    assert_eq!(n1, Some(1), "{first}");
    assert_eq!(n2, Some(2), "{second}");
    let id = first["order_id"].as_str().expect("an id");
    let status = e2e::eventually(
        std::time::Duration::from_secs(20),
        "the delivery side",
        || async {
            let reply = app.get(&format!("/delivery-ms/USER0001/{id}")).await;
            (reply.status == 200).then(|| reply.json())
        },
    )
    .await;
    assert_eq!(status["pickup_number"], first["pickup_number"]);
    let listed = app
        .request(
            reqwest::Method::GET,
            "/order-ms/USER0001/orders",
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await
        .ok(200);
    assert_eq!(listed[0]["pickup_number"], first["pickup_number"]);
}

#[tokio::test]
async fn an_idempotent_retry_keeps_its_number_and_draws_none() {
    let app = spawn_app().await;
    let body = serde_json::json!({"coffee_name": "latte", "coffee_price": 5000});
    let key = [("Idempotency-Key", "pickup-retry")];
    let path = "/order-ms/USER0001/orders";
    let first = app
        .request(reqwest::Method::POST, path, Some(&body), &key)
        .await
        .ok(201);
    let again = app
        .request(reqwest::Method::POST, path, Some(&body), &key)
        .await
        .ok(201);
    assert_eq!(again["pickup_number"], first["pickup_number"]);
    let next = app.place("USER0001", body).await.ok(201);
    assert_eq!(
        next["pickup_number"].as_u64(),
        first["pickup_number"].as_u64().map(|n| n + 1)
    );
}
