//! Every kind of bad input the HTTP contract kept beside the repository (API.md) names gets a 4xx problem+json answer that
//! says which field is at fault, and appends nothing at all.

use e2e::{spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Posts a place-order body and checks the problem and that nothing was written.
async fn refused(app: &TestApp, body: Value, status: u16, field: &str) {
    let reply = app.place("USER0001", body.clone()).await;
    let fields = reply.fields_at_fault(status);
    assert!(
        fields.iter().any(|f| f == field),
        "{body} should blame {field}: {}",
        reply.text
    );
    assert_eq!(app.db.events().await, 0, "{body} appended something");
    assert_eq!(app.db.outbox().await, 0);
}

#[tokio::test]
async fn invalid_coffee_names_are_refused_and_nothing_is_appended() {
    let app = spawn_app().await;
    let long = "가".repeat(101);
    for name in [
        json!(""),
        json!("   "),
        json!(long),
        json!(5),
        json!(null),
        json!(["latte"]),
        json!("bad\u{0007}name"),
    ] {
        refused(
            &app,
            json!({"coffee_name": name, "coffee_price": "5000", "coffee_qty": "1"}),
            422,
            "coffee_name",
        )
        .await;
    }
    refused(&app, json!({"coffee_price": "5000"}), 422, "coffee_name").await;
    // 100 characters (not bytes) is fine.
    app.place(
        "USER0001",
        json!({"coffee_name": "가".repeat(100), "coffee_price": 1}),
    )
    .await
    .ok(201);
}

#[tokio::test]
async fn invalid_prices_are_refused_and_nothing_is_appended() {
    let app = spawn_app().await;
    for price in [
        json!(-1),
        json!("-1"),
        json!(1_000_001),
        json!("1000001"),
        json!("abc"),
        json!("5000.5"),
        json!(5000.5),
        json!(""),
        json!(true),
        json!("1e3"),
        json!(1e300),
        json!("99999999999999999999999"),
        json!({}),
    ] {
        refused(
            &app,
            json!({"coffee_name": "latte", "coffee_price": price, "coffee_qty": 1}),
            422,
            "coffee_price",
        )
        .await;
    }
    refused(&app, json!({"coffee_name": "latte"}), 422, "coffee_price").await;
    // The bounds themselves are allowed.
    for price in [json!(0), json!("1000000")] {
        app.place(
            "USER0001",
            json!({"coffee_name": "latte", "coffee_price": price}),
        )
        .await
        .ok(201);
    }
}

#[tokio::test]
async fn invalid_quantities_are_refused_and_nothing_is_appended() {
    let app = spawn_app().await;
    for qty in [
        json!(0),
        json!("0"),
        json!(1001),
        json!("1001"),
        json!(-3),
        json!("abc"),
        json!(1.5),
        json!(""),
        json!(false),
    ] {
        refused(
            &app,
            json!({"coffee_name": "latte", "coffee_price": 100, "coffee_qty": qty}),
            422,
            "coffee_qty",
        )
        .await;
    }
    app.place(
        "USER0001",
        json!({"coffee_name": "latte", "coffee_price": 100, "coffee_qty": "1000"}),
    )
    .await
    .ok(201);
}

#[tokio::test]
async fn every_invalid_field_is_reported_at_once() {
    let app = spawn_app().await;
    let fields = app
        .place(
            "USER0001",
            json!({"coffee_name": "", "coffee_price": "x", "coffee_qty": 0}),
        )
        .await
        .fields_at_fault(422);
    assert_eq!(fields, ["coffee_name", "coffee_price", "coffee_qty"]);
    assert_eq!(app.db.events().await, 0);
}

#[tokio::test]
async fn invalid_user_ids_are_refused() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 100});
    let too_long = "u".repeat(101);
    for user in [
        too_long.as_str(),
        "bad%20user",
        "user!",
        "%EC%82%AC%EC%9A%A9%EC%9E%90",
        "a%2Fb",
    ] {
        let reply = app
            .request(
                Method::POST,
                &format!("/order-ms/{user}/orders"),
                Some(&body),
                &[],
            )
            .await;
        let problem = reply.problem(400);
        assert_eq!(
            problem["errors"][0]["field"], "user_id",
            "{user}: {problem}"
        );
    }
    app.place(&"u".repeat(100), body.clone()).await.ok(201);
    app.place("a.b-c_D9", body).await.ok(201);
    assert_eq!(app.db.events().await, 2);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused() {
    let app = spawn_app().await;
    let path = "/order-ms/USER0001/orders";
    for (content_type, body) in [
        (Some("application/json"), "{"),
        (Some("application/json"), "[1, 2]"),
        (Some("application/json"), "\"latte\""),
        (Some("application/json"), ""),
        (None, "not json"),
    ] {
        app.post_raw(path, content_type, body).await.problem(400);
    }
    app.post_raw(
        path,
        Some("text/plain"),
        r#"{"coffee_name":"latte","coffee_price":1}"#,
    )
    .await
    .problem(415);
    app.post_raw(path, Some("application/xml"), "<order/>")
        .await
        .problem(415);
    assert_eq!(app.db.events().await, 0);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"coffee_name":"{}","coffee_price":1}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    app.post_raw("/order-ms/USER0001/orders", Some("application/json"), huge)
        .await
        .problem(413);
    // Also when the length is not announced up front (chunked).
    let stream =
        futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(bytes_of(32 * 1024))));
    let reply = app
        .post_raw(
            "/order-ms/USER0001/orders",
            Some("application/json"),
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    reply.problem(413);
    assert_eq!(app.db.events().await, 0);
}

fn bytes_of(n: usize) -> Vec<u8> {
    vec![b' '; n]
}

#[tokio::test]
async fn unknown_statuses_are_400_and_list_the_valid_ones() {
    let app = spawn_app().await;
    let id = app.place_ok("u1").await;
    for status in ["shipped", "", "접수", "PREPARING!"] {
        let problem = app.move_to("u1", &id, status, &[]).await.problem(400);
        let valid = problem["valid_statuses"]
            .as_array()
            .expect("valid_statuses");
        let codes: Vec<&str> = valid.iter().filter_map(|s| s["code"].as_str()).collect();
        assert_eq!(
            codes,
            [
                "received",
                "preparing",
                "delivering",
                "delivered",
                "cancelled"
            ]
        );
        assert_eq!(valid[1]["label"], "제작중");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("배송중"),
            "{problem}"
        );
    }
    let number = app
        .request(
            Method::POST,
            &format!("/delivery-ms/u1/{id}/status"),
            Some(&json!({"status": 2})),
            &[],
        )
        .await;
    number.problem(400);
    let missing = app
        .request(
            Method::POST,
            &format!("/delivery-ms/u1/{id}/status"),
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!(missing.problem(422)["errors"][0]["field"], "status");
    assert_eq!(app.db.events().await, 1, "only the placement");
}

#[tokio::test]
async fn malformed_idempotency_keys_are_refused() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 100});
    let long = "k".repeat(256);
    for key in [long.as_str(), "   "] {
        let reply = app
            .request(
                Method::POST,
                "/order-ms/u1/orders",
                Some(&body),
                &[("Idempotency-Key", key)],
            )
            .await;
        reply.problem(400);
    }
    assert_eq!(app.db.events().await, 0);
}
