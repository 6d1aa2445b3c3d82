//! The menu ("Menu" in API.md, the HTTP contract kept beside the repository): `GET /menu` for anyone, set by operators with
//! `orders menu …`; once set, an order must fit it (422 naming the field,
//! nothing appended); without one, any drink and price in range is taken.

use e2e::{run_orders, spawn_app, As, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

fn sample() -> Value {
    json!([
        {"coffee_name": "americano", "prices": {"regular": 4500, "large": 5000},
         "temperatures": ["hot", "iced"], "sold_out": false},
        {"coffee_name": "latte", "prices": {"regular": 5000, "large": 5500},
         "temperatures": ["iced", "hot"]},
        {"coffee_name": "hot chocolate", "prices": {"regular": 4800},
         "temperatures": ["hot"], "sold_out": true}
    ])
}

async fn set_menu(app: &TestApp, menu: &Value) {
    let menu = services::menu::parse(&menu.to_string()).expect("a valid menu");
    services::menu::replace(&app.db.pool, &menu)
        .await
        .expect("set the menu");
}

async fn refused(app: &TestApp, body: Value, field: &str) {
    app.refused_naming(body, field).await;
}

#[tokio::test]
async fn the_menu_is_empty_until_set_and_then_served_to_anyone_in_its_order() {
    let app = spawn_app().await;
    assert_eq!(app.get("/menu").await.ok(200), json!([]));
    set_menu(&app, &sample()).await;
    // No caller at all: the menu is public.
    let reply = app
        .request_as(As::Nobody, Method::GET, "/menu", None, &[])
        .await;
    let menu = reply.ok(200);
    let names: Vec<&str> = menu
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|d| d["coffee_name"].as_str())
        .collect();
    assert_eq!(names, ["americano", "latte", "hot chocolate"]);
    assert_eq!(menu[1]["prices"], json!({"regular": 5000, "large": 5500}));
    // Temperatures in their usual order, whatever order they were given in.
    assert_eq!(menu[1]["temperatures"], json!(["hot", "iced"]));
    assert_eq!(menu[1]["sold_out"], json!(false));
    assert_eq!(menu[2]["sold_out"], json!(true));
}

#[tokio::test]
async fn with_a_menu_an_order_must_fit_it_and_a_refused_one_appends_nothing() {
    let app = spawn_app().await;
    // Without a menu, any name and price in range is accepted.
    app.place(
        "USER0001",
        json!({"coffee_name": "my own drink", "coffee_price": 1}),
    )
    .await
    .ok(201);
    set_menu(&app, &sample()).await;

    refused(
        &app,
        json!({"coffee_name": "my own drink", "coffee_price": 1}),
        "coffee_name",
    )
    .await;
    refused(
        &app,
        json!({"coffee_name": "latte", "coffee_price": 100}),
        "coffee_price",
    )
    .await;
    // The regular price for a large one is the client naming its own price.
    refused(
        &app,
        json!({"coffee_name": "latte", "coffee_price": 5000, "options": {"size": "large"}}),
        "coffee_price",
    )
    .await;
    refused(
        &app,
        json!({"coffee_name": "hot chocolate", "coffee_price": 4800}),
        "coffee_name",
    )
    .await;
    refused(
        &app,
        json!({"coffee_name": "americano", "coffee_price": 4500, "options": {"temperature": "iced", "size": "large"}}),
        "coffee_price",
    )
    .await;

    let order = app
        .place(
            "USER0001",
            json!({"coffee_name": "latte", "coffee_price": "5500", "coffee_qty": 2,
                   "options": {"temperature": "아이스", "size": "large"}}),
        )
        .await
        .ok(201);
    assert_eq!(order["total_price"], json!(11000));
    assert_eq!(
        order["options"],
        json!({"temperature": "iced", "size": "large"})
    );
}

#[tokio::test]
async fn a_drink_is_refused_in_a_size_or_temperature_it_does_not_come_in() {
    let app = spawn_app().await;
    set_menu(
        &app,
        &json!([{"coffee_name": "espresso", "prices": {"regular": 3000}, "temperatures": ["hot"]}]),
    )
    .await;
    refused(
        &app,
        json!({"coffee_name": "espresso", "coffee_price": 3000, "options": {"size": "large"}}),
        "options.size",
    )
    .await;
    refused(
        &app,
        json!({"coffee_name": "espresso", "coffee_price": 3000, "options": {"temperature": "iced"}}),
        "options.temperature",
    )
    .await;
    app.place(
        "USER0001",
        json!({"coffee_name": "espresso", "coffee_price": 3000}),
    )
    .await
    .ok(201);
}

#[tokio::test]
async fn a_retry_of_an_order_placed_before_the_price_changed_gets_its_first_answer() {
    let app = spawn_app().await;
    set_menu(&app, &sample()).await;
    let body = json!({"coffee_name": "americano", "coffee_price": 4500});
    let key = [("Idempotency-Key", "menu-retry-1")];
    let path = "/order-ms/USER0001/orders";
    let first = app
        .request(Method::POST, path, Some(&body), &key)
        .await
        .ok(201);
    let mut dearer = sample();
    dearer[0]["prices"]["regular"] = json!(4700);
    set_menu(&app, &dearer).await;
    let again = app
        .request(Method::POST, path, Some(&body), &key)
        .await
        .ok(201);
    assert_eq!(again["order_id"], first["order_id"]);
    assert_eq!(app.db.events().await, 1);
    // A new order at the old price is refused.
    refused(&app, body, "coffee_price").await;
}

#[tokio::test]
async fn operators_set_show_sell_out_and_clear_the_menu_with_the_command_line() {
    let app = spawn_app().await;
    // Removed when the test ends, failed or not.
    let dir = e2e::scratch_dir("orders-menu-");
    let file = dir.path().join("menu.json");
    std::fs::write(&file, sample().to_string()).expect("write the menu");
    let path = file.to_str().expect("a UTF-8 path");

    let set = run_orders(&app.db, None, &["menu", "set", path]).await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let sold_out = run_orders(&app.db, None, &["menu", "sold-out", "latte"]).await;
    assert!(
        sold_out.status.success(),
        "{}",
        String::from_utf8_lossy(&sold_out.stderr)
    );
    let shown = run_orders(&app.db, None, &["menu", "show", "--json"]).await;
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown[1]["coffee_name"], json!("latte"));
    assert_eq!(shown[1]["sold_out"], json!(true));
    assert_eq!(app.get("/menu").await.ok(200), shown);
    refused(
        &app,
        json!({"coffee_name": "latte", "coffee_price": 5000}),
        "coffee_name",
    )
    .await;

    let available = run_orders(&app.db, None, &["menu", "available", "latte"]).await;
    assert!(available.status.success());
    app.place(
        "USER0001",
        json!({"coffee_name": "latte", "coffee_price": 5000}),
    )
    .await
    .ok(201);

    // Mistakes are refused with a reason, and change nothing.
    let unknown = run_orders(&app.db, None, &["menu", "sold-out", "tea"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not on the menu"));
    std::fs::write(
        &file,
        r#"[{"coffee_name": "a", "prices": {}, "temperatures": ["hot"]}]"#,
    )
    .expect("write");
    let bad = run_orders(&app.db, None, &["menu", "set", path]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no price"));
    std::fs::write(
        &file,
        r#"[{"coffee_name": "a", "prices": {"venti": 1}, "temperatures": ["hot"]}]"#,
    )
    .expect("write");
    assert!(!run_orders(&app.db, None, &["menu", "set", path])
        .await
        .status
        .success());
    assert_eq!(
        app.get("/menu").await.ok(200).as_array().map(Vec::len),
        Some(3)
    );

    let cleared = run_orders(&app.db, None, &["menu", "clear"]).await;
    assert!(cleared.status.success());
    assert_eq!(app.get("/menu").await.ok(200), json!([]));
    app.place(
        "USER0001",
        json!({"coffee_name": "anything", "coffee_price": 1}),
    )
    .await
    .ok(201);
}

#[tokio::test]
async fn every_change_of_the_menu_is_checked_by_the_next_order_whoever_wrote_it() {
    let app = spawn_app().await;
    set_menu(&app, &sample()).await;
    let latte = json!({"coffee_name": "latte", "coffee_price": 5000, "coffee_qty": 1,
                       "options": {"temperature": "iced", "size": "regular"}});
    app.place("USER0001", latte.clone()).await.ok(201);
    // Changes straight in the table, as an operator with psql would make
    // them: the next order sees each one (the held menu is not trusted
    // past a change, whoever made it).
    sqlx::query("UPDATE menu SET regular_price = 5200 WHERE coffee_name = 'latte'")
        .execute(&app.db.pool)
        .await
        .expect("a price change");
    refused(&app, latte.clone(), "coffee_price").await;
    let dearer = json!({"coffee_name": "latte", "coffee_price": 5200, "coffee_qty": 1,
                        "options": {"temperature": "iced", "size": "regular"}});
    app.place("USER0001", dearer.clone()).await.ok(201);
    sqlx::query("UPDATE menu SET sold_out = true WHERE coffee_name = 'latte'")
        .execute(&app.db.pool)
        .await
        .expect("sold out");
    refused(&app, dearer.clone(), "coffee_name").await;
    sqlx::query("TRUNCATE menu")
        .execute(&app.db.pool)
        .await
        .expect("no menu");
    // No menu: any drink and price again.
    app.place("USER0001", latte).await.ok(201);
}
