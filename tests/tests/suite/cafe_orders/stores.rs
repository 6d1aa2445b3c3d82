//! Stores (API.md "Order service", "Menu"): listed, an unknown or closed
//! one taking no order; a drink sold out at one store only; pickup numbers
//! counted per store; staff of one store seeing and moving only its orders.

use std::time::Duration;

use e2e::{eventually, spawn_app, spawn_app_opts, test_kafka, AppOptions, TestApp};
use serde_json::{json, Value};

use super::{refused, set_menu};

async fn set_stores(app: &TestApp, stores: Value) {
    let stores = services::stores::parse(&stores.to_string()).expect("valid stores");
    services::stores::replace(&app.db.pool, &stores)
        .await
        .expect("set the stores");
}

#[tokio::test]
async fn stores_are_listed_and_an_unknown_or_closed_one_takes_no_order() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/stores").await.ok(200),
        json!([{"store_id": "main", "name": "본점", "open": true}])
    );
    set_stores(
        &app,
        json!([
            {"store_id": "main", "name": "본점"},
            {"store_id": "gangnam", "name": "강남점", "open": true},
            {"store_id": "jamsil", "name": "잠실점", "open": false}
        ]),
    )
    .await;
    let stores = app.get("/stores").await.ok(200);
    assert_eq!(
        stores[1],
        json!({"store_id": "gangnam", "name": "강남점", "open": true})
    );
    assert_eq!(stores[2]["open"], json!(false));
    let at = |store: &str| json!({"store_id": store, "coffee_name": "latte", "coffee_price": 5000});
    refused(&app, at("busan"), "store_id").await;
    refused(&app, at("jamsil"), "store_id").await;
    refused(&app, at("no/such"), "store_id").await;
    let order = app.place("USER0001", at("gangnam")).await.ok(201);
    assert_eq!(order["store_id"], json!("gangnam"));
    // The default store must stay.
    assert!(services::stores::parse(
        &json!([{"store_id": "gangnam", "name": "강남점"}]).to_string()
    )
    .is_err());
}

#[tokio::test]
async fn a_drink_sold_out_at_one_store_is_on_sale_at_the_others() {
    let app = spawn_app().await;
    set_menu(&app).await;
    set_stores(
        &app,
        json!([{"store_id": "main", "name": "본점"}, {"store_id": "gangnam", "name": "강남점"}]),
    )
    .await;
    let store = domain::StoreId::parse("gangnam").expect("a store id");
    let latte = domain::CoffeeName::parse("latte").expect("a name");
    services::menu::set_sold_out(&app.db.pool, Some(&store), &latte, true)
        .await
        .expect("sold out at gangnam");
    let body =
        |store: &str| json!({"store_id": store, "coffee_name": "latte", "coffee_price": 5000});
    refused(&app, body("gangnam"), "coffee_name").await;
    app.place("USER0001", body("main")).await.ok(201);
    let shown = |menu: Value| menu[1]["sold_out"].clone();
    assert_eq!(
        shown(app.get("/menu?store=gangnam").await.ok(200)),
        json!(true)
    );
    assert_eq!(
        shown(app.get("/menu?store=main").await.ok(200)),
        json!(false)
    );
    assert_eq!(shown(app.get("/menu").await.ok(200)), json!(false));
    assert_eq!(app.get("/menu?store=busan").await.status, 404);
    services::menu::set_sold_out(&app.db.pool, Some(&store), &latte, false)
        .await
        .expect("on sale again");
    app.place("USER0001", body("gangnam")).await.ok(201);
}

#[tokio::test]
async fn pickup_numbers_count_per_store_from_one_on_the_same_day() {
    let app = spawn_app().await;
    set_stores(
        &app,
        json!([{"store_id": "main", "name": "본점"}, {"store_id": "gangnam", "name": "강남점"}]),
    )
    .await;
    let mut numbers = Vec::new();
    for store in ["main", "gangnam", "main", "gangnam", "main"] {
        let order = app
            .place(
                "USER0001",
                json!({"store_id": store, "coffee_name": "latte", "coffee_price": 5000}),
            )
            .await
            .ok(201);
        numbers.push((store, order["pickup_number"].as_u64().expect("a number")));
    }
    assert_eq!(
        numbers,
        [
            ("main", 1),
            ("gangnam", 1),
            ("main", 2),
            ("gangnam", 2),
            ("main", 3)
        ]
    );
}

/// A staff token for `user` at `stores` (comma-separated).
async fn staff_at(user: &str, stores: &str) -> String {
    e2e::oidc::Provider::shared()
        .token_with(user, Some("staff"), &[("stores", stores)])
        .await
}

type Events = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// The board stream of the holder of `token`, past its `ready`.
async fn board_stream(app: &TestApp, token: &str) -> Events {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let stream = reqwest::Client::new()
        .get(format!("{}/events/board", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("the stream answers");
    assert_eq!(stream.status(), 200);
    let mut events: Events = Box::pin(stream.bytes_stream().eventsource());
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("ready within 10 s")
        .expect("an event")
        .expect("a well-formed event");
    assert_eq!(first.event, "ready");
    events
}

/// The stores of the status changes `events` brings, up to order `id`'s.
async fn stores_seen_until(events: &mut Events, id: &str) -> Vec<String> {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut stores = Vec::new();
        while let Some(Ok(event)) = events.next().await {
            if event.event != "status" {
                continue;
            }
            let status: Value = serde_json::from_str(&event.data).expect("JSON");
            stores.push(status["store_id"].as_str().unwrap_or_default().to_owned());
            if status["order_id"] == json!(id) {
                return stores;
            }
        }
        stores
    })
    .await
    .expect("the order on the stream within 20 s")
}

/// The order ids of a list answer.
fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("an array")
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_of_one_store_neither_see_nor_move_another_stores_orders() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    set_stores(
        &app,
        json!([{"store_id": "main", "name": "본점"}, {"store_id": "gangnam", "name": "강남점"}]),
    )
    .await;
    let kim = staff_at("kim", "gangnam").await;
    // Kim's board stream, open before anything happens.
    let mut events = board_stream(&app, &kim).await;

    let at = |store: &str| json!({"store_id": store, "coffee_name": "latte", "coffee_price": 5000});
    let main_order = app.place("USER0001", at("main")).await.ok(201);
    let main_id = main_order["order_id"].as_str().expect("an id").to_owned();
    // The default store's staff (no stores claim) see it on the delivery side.
    eventually(
        Duration::from_secs(20),
        "the main order delivered",
        || async {
            (app.get(&format!("/delivery-ms/USER0001/{main_id}"))
                .await
                .status
                == 200)
                .then_some(())
        },
    )
    .await;
    let gangnam_order = app.place("USER0001", at("gangnam")).await.ok(201);
    let gangnam_id = gangnam_order["order_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    // The stream brings the gangnam order, and brought nothing of main's.
    assert_eq!(
        stores_seen_until(&mut events, &gangnam_id).await,
        ["gangnam"],
        "kim's stream carried only gangnam's orders"
    );
    staff_at_gangnam_reach_only_its_orders(&app, &kim, &main_id, &gangnam_id).await;
    // The default store's staff see main's orders and not gangnam's.
    let barista = app.get("/delivery-ms/received").await.ok(200);
    assert_eq!(ids(&barista), [main_id.as_str()]);
}

/// Kim (gangnam's staff): lists are filtered; main's order is not found,
/// read or moved; a list of main is refused; gangnam's order moves on; of
/// the customer's orders only gangnam's are read.
async fn staff_at_gangnam_reach_only_its_orders(
    app: &TestApp,
    kim: &str,
    main_id: &str,
    gangnam_id: &str,
) {
    use e2e::As;
    use reqwest::Method;
    let as_kim = || As::Header(format!("Bearer {kim}"));
    let listed = app
        .request_as(as_kim(), Method::GET, "/delivery-ms/received", None, &[])
        .await
        .ok(200);
    assert_eq!(ids(&listed), [gangnam_id]);
    let foreign = app
        .request_as(
            as_kim(),
            Method::GET,
            "/delivery-ms/received?store=main",
            None,
            &[],
        )
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    let single = |id: &str| format!("/delivery-ms/USER0001/{id}");
    let hidden = app
        .request_as(as_kim(), Method::GET, &single(main_id), None, &[])
        .await;
    assert_eq!(hidden.status, 404);
    let before = app.db.events().await;
    let moved = app
        .request_as(
            as_kim(),
            Method::POST,
            &format!("{}/status", single(main_id)),
            Some(&json!({"status": "preparing"})),
            &[],
        )
        .await;
    assert_eq!(moved.status, 404, "{}", moved.text);
    assert_eq!(app.db.events().await, before, "nothing was written");
    app.request_as(
        as_kim(),
        Method::POST,
        &format!("{}/status", single(gangnam_id)),
        Some(&json!({"status": "preparing"})),
        &[],
    )
    .await
    .ok(200);
    // Reading the customer's orders: only gangnam's.
    let orders = app
        .request_as(
            as_kim(),
            Method::GET,
            "/order-ms/USER0001/orders",
            None,
            &[("Prefer", "consistency=strong")],
        )
        .await
        .ok(200);
    assert_eq!(orders.as_array().map(Vec::len), Some(1));
    assert_eq!(orders[0]["order_id"], json!(gangnam_id));
    let detail = app
        .request_as(
            as_kim(),
            Method::GET,
            &format!("/order-ms/USER0001/orders/{main_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(detail.status, 404);
}
