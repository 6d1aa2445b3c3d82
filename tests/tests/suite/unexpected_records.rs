//! What is on the topic or in the log that nobody expected: records that are
//! not order events, events of a newer build, moves of orders nobody placed,
//! and operators' replays from a position. Each is visible and accounted for;
//! none stops a partition, a projection or the relay, none is skipped
//! silently.

use std::time::Duration;

use e2e::{
    eventually, insert_event, placed_payload, produce_raw, spawn_app_opts,
    spawn_app_without_workers, test_kafka, AppOptions, TestApp,
};
use projections::held;
use projections::orders::OrdersReadModel;
use serde_json::json;

async fn app_with_kafka() -> TestApp {
    spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await
}

async fn held_list(app: &TestApp, name: &str) -> Vec<held::HeldEvent> {
    let mut conn = app.db.pool.acquire().await.expect("conn");
    held::list(&mut conn, name).await.expect("held list")
}

async fn on_delivery_view(app: &TestApp, user: &str, id: &str) {
    eventually(
        Duration::from_secs(15),
        "the order on the delivery view",
        || async {
            (app.get(&format!("/delivery-ms/{user}/{id}")).await.status == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_build_s_event_is_relayed_as_stored_and_held_back_on_the_delivery_side() {
    let app = app_with_kafka().await;
    let first = app.place_ok("nora").await;
    on_delivery_view(&app, "nora", &first).await;
    let id: uuid::Uuid = first.parse().expect("uuid");
    let (_, newer) = insert_event(
        &app.db.pool,
        id,
        2,
        "OrderPreparationStarted",
        5,
        json!({"station": 1}),
        true,
    )
    .await;
    // The relay moves it without reading it; the orders after it flow.
    let mut later = Vec::new();
    for _ in 0..6 {
        later.push(app.place_ok("otto").await);
    }
    for id in &later {
        on_delivery_view(&app, "otto", id).await;
    }
    eventually(Duration::from_secs(10), "the outbox drained", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    let held = eventually(
        Duration::from_secs(10),
        "the delivery side holds nora's order",
        || async {
            let held = held_list(&app, "delivery").await;
            (!held.is_empty()).then_some(held)
        },
    )
    .await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].event_id, newer);
    assert_eq!(
        (held[0].event_type.as_str(), held[0].schema_version),
        ("OrderPreparationStarted", 5)
    );
    let kafka = app.kafka.as_ref().expect("kafka");
    assert!(
        held[0].source.starts_with(&format!("{}/", kafka.topic)),
        "held by topic/partition/offset: {}",
        held[0].source
    );
    // Parked by its record's coordinates, with a reason.
    let mut conn = app.db.pool.acquire().await.expect("conn");
    held::park(
        &mut conn,
        "delivery",
        &held::HeldRef::Source(held[0].source.clone()),
        "test: a build that was rolled back",
        "tester",
    )
    .await
    .expect("park by record");
    eventually(Duration::from_secs(10), "released", || async {
        held_list(&app, "delivery").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_order_events_are_dead_lettered_and_the_partitions_go_on() {
    let app = app_with_kafka().await;
    let kafka = app.kafka.clone().expect("kafka");
    let first = app.place_ok("pia").await;
    on_delivery_view(&app, "pia", &first).await;
    for partition in 0..kafka.partitions {
        let garbage = format!("\u{0}garbage {partition}").into_bytes();
        produce_raw(&kafka, partition, b"not-ours", garbage).await;
    }
    let mut later = Vec::new();
    for _ in 0..6 {
        later.push(app.place_ok("pia").await);
    }
    for id in &later {
        on_delivery_view(&app, "pia", id).await;
    }
    let dead: Vec<(i32, Vec<u8>, String)> = sqlx::query_as(
        "SELECT partition, value, reason FROM delivery.dead_letters ORDER BY partition",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("dead letters");
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (partition, value, reason) in &dead {
        assert_eq!(value, format!("\u{0}garbage {partition}").as_bytes());
        assert!(reason.contains("not an order event"), "{reason}");
    }
    assert!(held_list(&app, "delivery").await.is_empty());
    assert!(app
        .get("/metrics")
        .await
        .text
        .contains("delivery_dead_letters 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_of_an_order_nobody_placed_is_held_as_corruption_in_both_models() {
    let app = app_with_kafka().await;
    let ghost = domain::OrderId::generate().as_uuid();
    insert_event(
        &app.db.pool,
        ghost,
        1,
        "OrderPreparationStarted",
        1,
        json!({}),
        true,
    )
    .await;
    let after = app.place_ok("quinn").await;
    on_delivery_view(&app, "quinn", &after).await;
    for name in ["orders", "delivery"] {
        let held = eventually(Duration::from_secs(10), "the ghost order held", || async {
            let held = held_list(&app, name).await;
            (!held.is_empty()).then_some(held)
        })
        .await;
        assert_eq!(held.len(), 1, "{name}: {held:?}");
        assert_eq!(held[0].stream_id, ghost);
        assert!(
            held[0].reason.starts_with("corruption"),
            "{}",
            held[0].reason
        );
    }
    // Nothing was written for it, and the placed order is there.
    let rows = projections::orders::all_rows(&app.db.pool, None)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].order_id.to_string(), after);
}

/// A rebuild loads each order's whole stream into a table it has just
/// created, with no upsert: an order it cannot load (a move nobody placed, a
/// placement of a newer build and the move after it) is held back before
/// anything of it is written, and every other order is loaded, whichever
/// batch it falls in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_holds_back_the_orders_it_cannot_load_and_loads_the_rest() {
    let app = spawn_app_without_workers().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(app.place_ok("rhea").await);
    }
    app.move_to("rhea", &placed[1], "preparing", &[])
        .await
        .ok(200);
    let ghost = domain::OrderId::generate().as_uuid();
    insert_event(
        &app.db.pool,
        ghost,
        1,
        "OrderPreparationStarted",
        1,
        json!({}),
        false,
    )
    .await;
    let newer = domain::OrderId::generate().as_uuid();
    let payload = placed_payload(newer, "rhea", "latte", 4500, 1);
    insert_event(&app.db.pool, newer, 1, "OrderPlaced", 99, payload, false).await;
    insert_event(
        &app.db.pool,
        newer,
        2,
        "OrderPreparationStarted",
        1,
        json!({}),
        false,
    )
    .await;

    // Batches of 3 events: streams fall on both sides of batch boundaries.
    let report = projections::operate::rebuild(&app.db.pool, &OrdersReadModel, 3, |_| {})
        .await
        .expect("the rebuild goes on past what it cannot load");
    assert_eq!(report.events, 9);
    let held = held_list(&app, "orders").await;
    let mut streams: Vec<_> = held.iter().map(|h| (h.stream_id, h.version)).collect();
    streams.sort();
    let mut expected = vec![(ghost, 1), (newer, 1), (newer, 2)];
    expected.sort();
    assert_eq!(streams, expected, "{held:?}");
    let ghost_reason = held
        .iter()
        .find(|h| h.stream_id == ghost)
        .map(|h| &h.reason);
    assert!(
        ghost_reason.is_some_and(|r| r.starts_with("corruption")),
        "{ghost_reason:?}"
    );
    let (model, fold) = e2e::order_model_and_fold(&app.db.pool).await;
    assert_eq!(model.len(), 5);
    assert_eq!(model, fold);
    // The loaded table got its key when it was finished: live applies upsert on it.
    let generation = report.new_generation;
    let keyed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint
                         WHERE conrelid = $1::regclass AND contype = 'p')",
    )
    .bind(format!("order_view_g{generation}"))
    .fetch_one(&app.db.pool)
    .await
    .expect("constraints");
    assert!(keyed, "order_view_g{generation} has its primary key");
}

#[tokio::test]
async fn a_replay_from_a_position_never_moves_a_lagging_checkpoint_forward() {
    // No worker: the checkpoint stays at the start while orders come in.
    let app = spawn_app_without_workers().await;
    for _ in 0..3 {
        app.place_ok("rosa").await;
    }
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("head");
    projections::operate::replay(&app.db.pool, &OrdersReadModel, Some(last), 100, |_| {})
        .await
        .expect("replay");
    let rows = projections::orders::all_rows(&app.db.pool, None)
        .await
        .expect("rows");
    assert_eq!(
        rows.len(),
        3,
        "the events before the replay position were applied too"
    );
    assert!(projections::verify::orders(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
}

#[tokio::test]
async fn a_replay_from_a_position_includes_later_positions_of_older_transactions() {
    let app = spawn_app_opts(AppOptions {
        workers: false,
        alone: true,
        ..AppOptions::default()
    })
    .await;
    let (a, b) = (
        domain::OrderId::generate().as_uuid(),
        domain::OrderId::generate().as_uuid(),
    );
    let insert =
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
                  VALUES ($1, 1, $2, 'OrderPlaced', 2, $3) RETURNING position";
    // An order before them, so that the replay position is not the log's
    // first (from which everything is replayed anyway).
    app.place_ok("sam").await;
    // The older transaction takes its id first and its position last.
    let mut older = e2e::hold_the_horizon(&app.db).await;
    let mut newer = app.db.pool.begin().await.expect("begin");
    let from: i64 = sqlx::query_scalar(insert)
        .bind(b)
        .bind(uuid::Uuid::now_v7())
        .bind(placed_payload(b, "sam", "mocha", 5000, 1))
        .fetch_one(&mut *newer)
        .await
        .expect("insert");
    newer.commit().await.expect("commit");
    let later: i64 = sqlx::query_scalar(insert)
        .bind(a)
        .bind(uuid::Uuid::now_v7())
        .bind(placed_payload(a, "sam", "mocha", 5000, 1))
        .fetch_one(&mut *older)
        .await
        .expect("insert");
    older.commit().await.expect("commit");
    assert!(later > from);
    projections::operate::replay(&app.db.pool, &OrdersReadModel, None, 100, |_| {})
        .await
        .expect("replay all");
    sqlx::query("DELETE FROM order_view_g1 WHERE order_id IN ($1, $2)")
        .bind(a)
        .bind(b)
        .execute(&app.db.pool)
        .await
        .expect("lose their rows");
    projections::operate::replay(&app.db.pool, &OrdersReadModel, Some(from), 100, |_| {})
        .await
        .expect("replay from");
    let rows = projections::orders::all_rows(&app.db.pool, None)
        .await
        .expect("rows");
    assert_eq!(
        rows.len(),
        3,
        "the order before and both events at positions ≥ {from} are back: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_a_version_already_applied_with_another_id_is_held_as_a_conflict() {
    // What a log restored to an earlier point in time produces: the topic
    // already carries (order, version 2) and the restored log writes a
    // different version 2, which the relay publishes.
    let app = app_with_kafka().await;
    let kafka = app.kafka.clone().expect("kafka");
    let id = app.place_ok("tess").await;
    app.move_to("tess", &id, "preparing", &[]).await.ok(200);
    eventually(
        Duration::from_secs(10),
        "version 2 on the delivery side",
        || async {
            let reply = app.get(&format!("/delivery-ms/tess/{id}")).await;
            (reply.status == 200 && reply.json()["status"] == "preparing").then_some(())
        },
    )
    .await;
    let order: uuid::Uuid = id.parse().expect("uuid");
    let rewritten = domain::StoredEvent {
        event_id: uuid::Uuid::now_v7(),
        stream_id: order,
        version: 2,
        position: Some(2),
        event_type: "OrderCancelled".into(),
        schema_version: 1,
        payload: json!({"by": "customer"}),
        metadata: json!({}),
        recorded_at: time::OffsetDateTime::now_utc(),
    };
    let partition = infra::kafka::partition_for(id.as_bytes(), kafka.partitions);
    let value = serde_json::to_vec(&rewritten).expect("json");
    produce_raw(&kafka, partition, id.as_bytes(), value).await;
    let held = eventually(Duration::from_secs(10), "the conflict held", || async {
        let held = held_list(&app, "delivery").await;
        (!held.is_empty()).then_some(held)
    })
    .await;
    assert_eq!(held[0].event_id, rewritten.event_id);
    assert!(held[0].reason.starts_with("conflict"), "{}", held[0].reason);
    // The model still shows what it applied, not a silent mix of the two.
    let row = app.get(&format!("/delivery-ms/tess/{id}")).await;
    assert_eq!(row.status, 503, "held back: {}", row.text);
}
