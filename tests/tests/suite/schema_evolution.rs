//! Schema evolution for real: `OrderPlaced` v2 carries the drink's options.
//! A log written by the previous build (v1 rows, exactly as it wrote them)
//! reads as hot/regular everywhere and rebuilds both read models; orders
//! placed with options show them in every read model, `verify` and the Kafka
//! envelope.

use std::time::Duration;

use e2e::{
    eventually, insert_event, placed_payload_v1, read_topic, spawn_app_opts, test_kafka,
    AppOptions, TestApp,
};
use projections::delivery;
use projections::operate;
use projections::orders::OrdersReadModel;
use serde_json::json;

async fn app_with_kafka() -> TestApp {
    spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await
}

/// The previous build's rows: six v1 placements (no options) for two users,
/// every other one moved on by a v1 move. Returns each order and its user.
async fn write_the_previous_builds_log(pool: &sqlx::PgPool) -> Vec<(uuid::Uuid, String)> {
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let id = domain::OrderId::generate().as_uuid();
        let user = format!("old{}", i % 2);
        insert_event(
            pool,
            id,
            1,
            "OrderPlaced",
            1,
            placed_payload_v1(id, &user, "americano", 4000 + i, 2),
            true,
        )
        .await;
        if i % 2 == 0 {
            insert_event(pool, id, 2, "OrderPreparationStarted", 1, json!({}), true).await;
        }
        ids.push((id, user));
    }
    ids
}

/// Every row of both read models reads as hot/regular.
async fn assert_every_row_is_hot_regular(pool: &sqlx::PgPool) {
    let hot_regular = domain::DrinkOptions::default();
    for row in projections::orders::all_rows(pool, None)
        .await
        .expect("order rows")
    {
        assert_eq!(row.options, hot_regular, "{row:?}");
    }
    for row in delivery::all_rows(pool).await.expect("delivery rows") {
        assert_eq!(row.options, hot_regular, "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_by_the_previous_build_rebuilds_both_read_models() {
    let app = app_with_kafka().await;
    let kafka = app.kafka.clone().expect("kafka");
    let ids = write_the_previous_builds_log(&app.db.pool).await;
    // Both models fill from it as they run…
    eventually(
        Duration::from_secs(20),
        "the delivery model has every order",
        || async {
            let rows = delivery::all_rows(&app.db.pool).await.ok()?;
            (rows.len() == 6 && rows.iter().filter(|r| r.version == 2).count() == 3).then_some(())
        },
    )
    .await;
    // …and rebuild from it, from scratch.
    let report = operate::rebuild(&app.db.pool, &OrdersReadModel, 4, |_| {})
        .await
        .expect("rebuild the order read model");
    assert_eq!(report.events, 9);
    let (_, _, records) = delivery::rebuild(&app.db.pool, &kafka, None, |_| {})
        .await
        .expect("rebuild the delivery read model");
    assert_eq!(records, 9);

    assert_every_row_is_hot_regular(&app.db.pool).await;
    // The API shows them as hot/regular; verify finds nothing to say.
    let (id, user) = &ids[0];
    let order = app.order(user, &id.to_string()).await.ok(200);
    assert_eq!(
        order["options"],
        json!({"temperature": "hot", "size": "regular"})
    );
    assert_eq!(order["version"], 2);
    assert!(projections::verify::orders(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
    assert!(projections::verify::delivery(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
    // The new build still moves an old order on.
    app.move_to(user, &id.to_string(), "delivering", &[])
        .await
        .ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_travel_to_every_read_model_and_the_topic() {
    let app = app_with_kafka().await;
    let kafka = app.kafka.clone().expect("kafka");
    let placed = app
        .place(
            "iris",
            json!({"coffee_name": "latte", "coffee_price": "5000", "coffee_qty": 2,
                   "options": {"temperature": "아이스", "size": "large"}}),
        )
        .await
        .ok(201);
    let iced_large = json!({"temperature": "iced", "size": "large"});
    assert_eq!(placed["options"], iced_large);
    let id = placed["order_id"].as_str().expect("id").to_owned();
    assert_eq!(app.order("iris", &id).await.ok(200)["options"], iced_large);
    let listed = app
        .request(
            reqwest::Method::GET,
            "/order-ms/iris/orders",
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await
        .ok(200);
    assert_eq!(listed[0]["options"], iced_large);
    let on_board = eventually(Duration::from_secs(10), "the delivery view", || async {
        let reply = app.get(&format!("/delivery-ms/iris/{id}")).await;
        (reply.status == 200).then(|| reply.json())
    })
    .await;
    assert_eq!(on_board["options"], iced_large);
    // The topic carries the current version (4: options since 2, the pickup
    // number since 3, lines and the store since 4), and says so in its
    // headers.
    let records = eventually(
        Duration::from_secs(10),
        "the record on the topic",
        || async {
            let records = read_topic(&kafka).await;
            (!records.is_empty()).then_some(records)
        },
    )
    .await;
    assert_eq!(records[0].headers["schema_version"], "4");
    match &records[0].envelope.event {
        domain::Event::OrderPlaced(p) => assert_eq!(
            p.lines.first().options,
            domain::DrinkOptions {
                temperature: domain::Temperature::Iced,
                size: domain::Size::Large
            }
        ),
        other => panic!("expected a placement, got {other:?}"),
    }
    let stored: (i16, serde_json::Value) = sqlx::query_as(
        "SELECT schema_version, payload->'lines'->0->'options' FROM events WHERE event_type = 'OrderPlaced'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the stored placement");
    assert_eq!(stored, (4, iced_large.clone()));
    assert!(projections::verify::orders(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
}

#[tokio::test]
async fn unknown_option_values_are_refused_with_the_field_and_nothing_is_appended() {
    let app = e2e::spawn_app_without_workers().await;
    for (options, field) in [
        (json!({"temperature": "warm"}), "options.temperature"),
        (json!({"size": 3}), "options.size"),
        (json!("iced"), "options"),
        (json!({"milk": "oat"}), "options"),
    ] {
        let reply = app
            .place(
                "ivan",
                json!({"coffee_name": "latte", "coffee_price": 5000, "options": options}),
            )
            .await;
        assert_eq!(reply.fields_at_fault(422), [field], "{}", reply.text);
    }
    assert_eq!(app.db.events().await, 0);
}

/// The upgrade path of a running system: tables created by the previous
/// build (no option columns) gain them at start, rows read as hot/regular.
#[tokio::test]
async fn read_model_tables_of_the_previous_build_are_upgraded_in_place() {
    let db = e2e::TestDb::create().await;
    sqlx::raw_sql(
        "DROP VIEW order_view; DROP VIEW delivery.order_status;
         ALTER TABLE order_view_g1 DROP COLUMN temperature, DROP COLUMN size;
         ALTER TABLE delivery.order_status_g1 DROP COLUMN temperature, DROP COLUMN size, DROP COLUMN event_ids;
         CREATE VIEW order_view AS
             SELECT order_id, user_id, coffee_name, coffee_price, coffee_qty, total_price,
                    status, ordered_at, updated_at, version, last_position FROM order_view_g1;
         CREATE VIEW delivery.order_status AS
             SELECT order_id, user_id, coffee_name, coffee_qty, status, ordered_at, updated_at,
                    version, last_position FROM delivery.order_status_g1;
         INSERT INTO order_view_g1 VALUES ('0193a6f0-0000-7000-8000-000000000001', 'u', 'latte',
             4000, 1, 4000, 'received', now(), now(), 1, 1);",
    )
    .execute(&db.pool)
    .await
    .expect("make the tables as the previous build made them");
    projections::install_all(&db.pool).await.expect("install");
    let has: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
          WHERE column_name IN ('temperature', 'size')
            AND table_name IN ('order_view', 'order_status')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("columns");
    assert_eq!(has, 4, "both views show both option columns");
    let rows = projections::orders::all_rows(&db.pool, None)
        .await
        .expect("rows");
    assert_eq!(rows[0].options, domain::DrinkOptions::default());
}

/// OrderPlaced v2 (before pickup numbers) still reads, with no number, in
/// the log's readers and in both read models.
#[test]
fn a_v2_placement_reads_with_no_pickup_number() {
    let v2 = serde_json::json!({
        "order_id": "0193a0b0-0000-7000-8000-000000000001", "user_id": "u1",
        "coffee_name": "latte", "coffee_price": 5000, "coffee_qty": 1, "total_price": 5000,
        "options": {"temperature": "iced", "size": "regular"}
    });
    match domain::Event::decode("OrderPlaced", 2, v2).expect("v2 decodes") {
        domain::Event::OrderPlaced(p) => {
            assert_eq!(p.pickup_number, None);
            assert_eq!(
                p.lines.first().options.temperature,
                domain::Temperature::Iced
            );
        }
        other => panic!("expected a placement, got {other:?}"),
    }
}
