//! Orders of several drinks (API.md "Order service", "Menu"): one order
//! through the API, the topic and both read models; a line the menu refuses
//! named by its index; a line's missing options the drink's own defaults.

use std::time::Duration;

use e2e::{eventually, read_topic, spawn_app, spawn_app_opts, test_kafka, AppOptions, TestApp};
use serde_json::{json, Value};

use super::{refused, set_menu};

fn two_drinks() -> Value {
    json!({"items": [
        {"coffee_name": "americano", "coffee_price": 5000, "coffee_qty": 2,
         "options": {"temperature": "iced", "size": "large"}},
        {"coffee_name": "latte", "coffee_price": "5000"}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_of_two_drinks_is_one_order_through_the_api_the_topic_and_both_read_models() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    set_menu(&app).await;
    let order = app.place("USER0001", two_drinks()).await.ok(201);
    // Each line as asked, the second with its drink's defaults; the total
    // is their sum; the original fields are the first line.
    assert_eq!(
        order["items"],
        json!([
            {"coffee_name": "americano", "coffee_price": 5000, "coffee_qty": 2,
             "options": {"temperature": "iced", "size": "large"}, "line_price": 10000},
            {"coffee_name": "latte", "coffee_price": 5000, "coffee_qty": 1,
             "options": {"temperature": "hot", "size": "regular"}, "line_price": 5000}
        ])
    );
    assert_eq!(order["total_price"], json!(15000));
    assert_eq!(order["coffee_name"], json!("americano"));
    assert_eq!(order["coffee_price"], json!(5000));
    assert_eq!(order["coffee_qty"], json!(2));
    assert_eq!(
        order["options"],
        json!({"temperature": "iced", "size": "large"})
    );
    assert_eq!(order["store_id"], json!("main"));
    assert_eq!(order["pickup_number"], json!(1));
    assert_eq!(app.db.events().await, 1, "one order, one event");

    let id = order["order_id"].as_str().expect("an order id");
    let read = app
        .request(
            reqwest::Method::GET,
            &format!("/order-ms/USER0001/orders/{id}"),
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await
        .ok(200);
    assert_eq!(read["items"], order["items"]);
    let listed = app
        .request(
            reqwest::Method::GET,
            "/order-ms/USER0001/orders",
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await
        .ok(200);
    assert_eq!(listed[0]["items"], order["items"]);
    assert_eq!(listed[0]["total_price"], json!(15000));

    let delivered = eventually(
        Duration::from_secs(20),
        "the order on the delivery side",
        || async {
            let reply = app.get(&format!("/delivery-ms/USER0001/{id}")).await;
            (reply.status == 200).then(|| reply.ok(200))
        },
    )
    .await;
    assert_eq!(delivered["items"], order["items"]);
    assert_eq!(delivered["store_id"], json!("main"));
    let board = app.get("/delivery-ms/received?store=main").await.ok(200);
    assert_eq!(board[0]["items"], order["items"]);

    the_topic_and_verify_agree(&app).await;
}

/// The topic carries the new shape and its version; `orders verify` finds
/// both read models equal to the log.
async fn the_topic_and_verify_agree(app: &TestApp) {
    let records = read_topic(app.kafka.as_ref().expect("kafka")).await;
    assert_eq!(records.len(), 1);
    let domain::Event::OrderPlaced(placed) = &records[0].envelope.event else {
        panic!("a placement on the topic")
    };
    assert_eq!(placed.lines.len(), 2);
    assert_eq!(placed.total_price, domain::Won(15000));
    assert_eq!(
        records[0].headers.get("schema_version").map(String::as_str),
        Some("4")
    );

    let verify = e2e::run_orders(&app.db, app.kafka.as_ref(), &["verify"]).await;
    assert!(
        verify.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test]
async fn a_line_the_menu_refuses_is_named_by_its_index_and_nothing_is_written() {
    let app = spawn_app().await;
    set_menu(&app).await;
    let mut body = two_drinks();
    body["items"][1]["coffee_price"] = json!(4000);
    refused(&app, body, "items[1].coffee_price").await;
    let mut body = two_drinks();
    body["items"][0]["options"]["temperature"] = json!("warm");
    refused(&app, body, "items[0].options.temperature").await;
    let mut body = two_drinks();
    body["items"][1]["coffee_name"] = json!("mocha");
    refused(&app, body, "items[1].coffee_name").await;
    // The count: 1 to 20 lines, an array, and not beside the original fields.
    refused(&app, json!({"items": []}), "items").await;
    let line = json!({"coffee_name": "latte", "coffee_price": 5000});
    refused(&app, json!({"items": vec![line.clone(); 21]}), "items").await;
    refused(&app, json!({"items": line.clone()}), "items").await;
    refused(&app, json!({"items": [line.clone(), 7]}), "items[1]").await;
    refused(
        &app,
        json!({"items": [line], "coffee_name": "latte", "coffee_price": 5000}),
        "items",
    )
    .await;
    // No pickup number was spent on a refusal.
    let placed = app.place("USER0001", two_drinks()).await.ok(201);
    assert_eq!(placed["pickup_number"], json!(1));
    // Twenty lines is an order.
    let twenty = json!({"items": vec![json!({"coffee_name": "latte", "coffee_price": 5000}); 20]});
    let placed = app.place("USER0001", twenty).await.ok(201);
    assert_eq!(placed["total_price"], json!(100000));
}

#[tokio::test]
async fn an_original_client_ordering_an_iced_only_drink_without_options_gets_it_iced() {
    let app = spawn_app().await;
    set_menu(&app).await;
    let order = app
        .place(
            "USER0001",
            json!({"coffee_name": "cold brew", "coffee_price": "5200", "coffee_qty": "1"}),
        )
        .await
        .ok(201);
    assert_eq!(
        order["options"],
        json!({"temperature": "iced", "size": "regular"})
    );
    assert_eq!(order["items"][0]["options"], order["options"]);
    // Asked hot, it is refused by name.
    refused(
        &app,
        json!({"coffee_name": "cold brew", "coffee_price": 5200, "options": {"temperature": "hot"}}),
        "options.temperature",
    )
    .await;
}
