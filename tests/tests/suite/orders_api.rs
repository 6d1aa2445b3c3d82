//! The order and delivery write APIs, driven over HTTP as the original
//! coffee-order clients drive them.

use e2e::spawn_app;
use serde_json::json;

/// `2026-11-22T12:00:00.123Z`
fn is_api_time(v: &serde_json::Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn placed_order_is_returned_and_readable_at_its_location() {
    let app = spawn_app().await;
    let placed = app
        .place(
            "USER0001",
            json!({"coffee_name": "today's coffee", "coffee_price": "5000", "coffee_qty": "3"}),
        )
        .await;
    let body = placed.ok(201);
    assert_eq!(body["user_id"], "USER0001");
    assert_eq!(body["coffee_name"], "today's coffee");
    assert_eq!(body["coffee_price"], 5000);
    assert_eq!(body["coffee_qty"], 3);
    assert_eq!(body["total_price"], 15000);
    assert_eq!(body["status"], "received");
    assert_eq!(body["status_label"], "접수완료");
    assert_eq!(body["version"], 1);
    assert!(
        is_api_time(&body["ordered_at"]) && is_api_time(&body["updated_at"]),
        "{body}"
    );
    assert_eq!(placed.header("etag"), Some("\"1\""));
    let position: i64 = placed
        .header("x-log-position")
        .expect("X-Log-Position")
        .parse()
        .expect("a number");
    assert!(position > 0);
    let id = body["order_id"].as_str().expect("order_id");
    assert_eq!(id.len(), 36);
    let location = placed.header("location").expect("Location");
    assert_eq!(location, format!("/order-ms/USER0001/orders/{id}"));

    let detail = app.get(location).await;
    assert_eq!(detail.ok(200), body, "the detail is the order as placed");
    assert_eq!(detail.header("etag"), Some("\"1\""));

    assert_eq!(app.db.events().await, 1);
    assert_eq!(app.db.outbox().await, 1, "every event has its outbox row");
    let (event_type, stored_position): (String, i64) =
        sqlx::query_as("SELECT event_type, position FROM events")
            .fetch_one(&app.db.pool)
            .await
            .expect("event");
    assert_eq!(event_type, "OrderPlaced");
    assert_eq!(stored_position, position);
}

#[tokio::test]
async fn numbers_and_numeric_strings_place_the_same_order() {
    let app = spawn_app().await;
    let as_text = app
        .place(
            "u1",
            json!({"coffee_name": "latte", "coffee_price": "4000", "coffee_qty": "2"}),
        )
        .await
        .ok(201);
    let as_numbers = app
        .place(
            "u1",
            json!({"coffee_name": "latte", "coffee_price": 4000, "coffee_qty": 2}),
        )
        .await
        .ok(201);
    for field in ["coffee_price", "coffee_qty", "total_price"] {
        assert_eq!(as_text[field], as_numbers[field], "{field}");
    }
    assert_eq!(as_text["total_price"], 8000);
}

#[tokio::test]
async fn quantity_defaults_to_one_and_names_are_trimmed() {
    let app = spawn_app().await;
    let body = app
        .place(
            "u1",
            json!({"coffee_name": "  flat white ", "coffee_price": 4800}),
        )
        .await
        .ok(201);
    assert_eq!(body["coffee_qty"], 1);
    assert_eq!(body["total_price"], 4800);
    assert_eq!(body["coffee_name"], "flat white");
}

#[tokio::test]
async fn form_bodies_and_curl_style_json_are_accepted() {
    let app = spawn_app().await;
    let form = app
        .post_raw(
            "/order-ms/u1/orders",
            Some("application/x-www-form-urlencoded"),
            "coffee_name=mocha&coffee_price=5500&coffee_qty=2",
        )
        .await;
    assert_eq!(form.ok(201)["total_price"], 11000);
    // `curl -d '{…}'` without -H labels JSON as form data.
    let curl = app
        .post_raw(
            "/order-ms/u1/orders",
            Some("application/x-www-form-urlencoded"),
            r#"{"coffee_name":"mocha","coffee_price":"5500"}"#,
        )
        .await;
    assert_eq!(curl.ok(201)["coffee_name"], "mocha");
    let unlabelled = app
        .post_raw(
            "/order-ms/u1/orders",
            None,
            r#"{"coffee_name":"mocha","coffee_price":1}"#,
        )
        .await;
    unlabelled.ok(201);
}

#[tokio::test]
async fn paths_work_with_and_without_a_trailing_slash() {
    let app = spawn_app().await;
    let reply = app
        .request(
            reqwest::Method::POST,
            "/order-ms/USER0001/orders/",
            Some(&json!({"coffee_name": "x", "coffee_price": 1})),
            &[],
        )
        .await;
    let id = reply.ok(201)["order_id"].as_str().expect("id").to_owned();
    for path in [
        format!("/order-ms/USER0001/orders/{id}"),
        format!("/order-ms/USER0001/orders/{id}/"),
    ] {
        assert_eq!(
            app.get(&path).await.ok(200)["order_id"],
            id.as_str(),
            "{path}"
        );
    }
    for path in ["/order-ms", "/order-ms/"] {
        let r = app.get(path).await;
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(r.text, "Welcome to ORDER Microservice!");
    }
    for path in ["/health-check", "/health-check/", "/healthz", "/healthz/"] {
        assert_eq!(app.get(path).await.status.as_u16(), 200, "{path}");
    }
    let moved = app
        .request(
            reqwest::Method::POST,
            &format!("/delivery-ms/USER0001/{id}/status/"),
            Some(&json!({"status": "preparing"})),
            &[],
        )
        .await;
    assert_eq!(moved.ok(200)["status"], "preparing");
    let cancelled = app
        .request(
            reqwest::Method::POST,
            &format!("/order-ms/USER0001/orders/{id}/cancel/"),
            None,
            &[],
        )
        .await;
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
}

#[tokio::test]
async fn health_check_answers_as_the_original() {
    let app = spawn_app().await;
    let reply = app.get("/health-check").await;
    assert_eq!(reply.status.as_u16(), 200);
    assert!(
        reply.text.starts_with("Server is running on "),
        "{}",
        reply.text
    );
    assert_eq!(app.get("/readyz").await.status.as_u16(), 200);
}

#[tokio::test]
async fn another_users_order_is_exactly_as_missing_as_a_missing_one() {
    let app = spawn_app().await;
    let id = app.place_ok("alice").await;
    let missing = uuid::Uuid::now_v7().to_string();
    let other = app.order("bob", &id).await.problem(404);
    let absent = app.order("alice", &missing).await.problem(404);
    assert_eq!(other, absent, "no hint that the order exists");
    app.order("alice", "ORD0001").await.problem(404);
    // Neither may bob cancel or move it.
    app.cancel("bob", &id, &[]).await.problem(404);
    app.move_to("bob", &id, "preparing", &[]).await.problem(404);
    assert_eq!(app.db.events().await, 1);
}

#[tokio::test]
async fn staff_move_an_order_through_its_lifecycle_by_code_or_label() {
    let app = spawn_app().await;
    let id = app.place_ok("u1").await;
    let steps = [
        ("제작중", "preparing", "제작중"),
        ("delivering", "delivering", "배송중"),
        ("배송완료", "delivered", "배송완료"),
    ];
    for (sent, code, label) in steps {
        let reply = app.move_to("u1", &id, sent, &[]).await;
        let body = reply.ok(200);
        assert_eq!(body["status"], code);
        assert_eq!(body["status_label"], label);
        assert_eq!(body["order_id"], id.as_str());
        assert_eq!(body["user_id"], "u1");
        assert_eq!(body["coffee_name"], "americano");
        assert_eq!(body["coffee_qty"], 2);
        assert!(reply.header("x-log-position").is_some());
    }
    let detail = app.order("u1", &id).await;
    assert_eq!(detail.ok(200)["version"], 4);
    assert_eq!(detail.header("etag"), Some("\"4\""));

    // delivered is final: a move back is 409 and changes nothing.
    let refused = app.move_to("u1", &id, "preparing", &[]).await.problem(409);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("delivered"),
        "{refused}"
    );
    app.cancel("u1", &id, &[]).await.problem(409);
    assert_eq!(app.db.events().await, 4);
}

#[tokio::test]
async fn skipping_a_step_or_moving_after_cancel_is_refused() {
    let app = spawn_app().await;
    let id = app.place_ok("u1").await;
    app.move_to("u1", &id, "delivered", &[]).await.problem(409);
    app.move_to("u1", &id, "received", &[]).await.problem(409);
    assert_eq!(
        app.move_to("u1", &id, "취소", &[]).await.ok(200)["status"],
        "cancelled"
    );
    for status in [
        "received",
        "preparing",
        "delivering",
        "delivered",
        "cancelled",
    ] {
        app.move_to("u1", &id, status, &[]).await.problem(409);
    }
    assert_eq!(app.db.events().await, 2);
}

#[tokio::test]
async fn the_customer_cancels_until_the_order_is_on_its_way() {
    let app = spawn_app().await;
    let early = app.place_ok("u1").await;
    let body = app.cancel("u1", &early, &[]).await.ok(200);
    assert_eq!(
        (body["status"].as_str(), body["status_label"].as_str()),
        (Some("cancelled"), Some("취소"))
    );
    assert_eq!(body["version"], 2);
    app.cancel("u1", &early, &[]).await.problem(409);

    let late = app.place_ok("u1").await;
    app.move_to("u1", &late, "preparing", &[]).await.ok(200);
    app.move_to("u1", &late, "delivering", &[]).await.ok(200);
    app.cancel("u1", &late, &[]).await.problem(409);
    assert_eq!(app.order("u1", &late).await.ok(200)["status"], "delivering");
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let app = spawn_app().await;
    let id = app.place_ok("u1").await;
    let stale = app
        .move_to("u1", &id, "preparing", &[("If-Match", "\"2\"")])
        .await;
    let problem = stale.problem(412);
    assert_eq!(problem["current_version"], 1);
    assert_eq!(
        stale.header("etag"),
        Some("\"1\""),
        "412 tells the current version"
    );
    let ok = app
        .move_to("u1", &id, "preparing", &[("If-Match", "\"1\"")])
        .await;
    assert_eq!(ok.ok(200)["status"], "preparing");
    assert_eq!(ok.header("etag"), Some("\"2\""));
    app.cancel("u1", &id, &[("If-Match", "\"1\"")])
        .await
        .problem(412);
    app.cancel("u1", &id, &[("If-Match", "not-an-etag")])
        .await
        .problem(400);
    assert_eq!(
        app.cancel("u1", &id, &[("If-Match", "*")]).await.ok(200)["version"],
        3
    );
    assert_eq!(app.db.events().await, 3);
}

#[tokio::test]
async fn if_none_match_answers_not_modified() {
    let app = spawn_app().await;
    let id = app.place_ok("u1").await;
    let path = format!("/order-ms/u1/orders/{id}");
    let same = app
        .request(
            reqwest::Method::GET,
            &path,
            None,
            &[("If-None-Match", "\"1\"")],
        )
        .await;
    assert_eq!(same.status.as_u16(), 304);
    app.move_to("u1", &id, "preparing", &[]).await.ok(200);
    let changed = app
        .request(
            reqwest::Method::GET,
            &path,
            None,
            &[("If-None-Match", "\"1\"")],
        )
        .await;
    assert_eq!(changed.ok(200)["version"], 2);
}

#[tokio::test]
async fn the_request_id_is_returned_and_recorded_with_the_event() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "x", "coffee_price": 1});
    let reply = app
        .request(
            reqwest::Method::POST,
            "/order-ms/u1/orders",
            Some(&body),
            &[("X-Request-Id", "req-42")],
        )
        .await;
    reply.ok(201);
    assert_eq!(reply.header("x-request-id"), Some("req-42"));
    let metadata: serde_json::Value = sqlx::query_scalar("SELECT metadata FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("event");
    assert_eq!(metadata["correlation_id"], "req-42");
    assert_eq!(metadata["request_id"], "req-42");
    assert_eq!(metadata["who"], "customer:u1");
    // A request without one gets one generated.
    assert!(app
        .get("/order-ms")
        .await
        .header("x-request-id")
        .is_some_and(|id| id.len() >= 32));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_json() {
    let app = spawn_app().await;
    app.get("/no-such-thing").await.problem(404);
    let reply = app
        .request(reqwest::Method::DELETE, "/order-ms", None, &[])
        .await;
    reply.problem(405);
}

#[tokio::test]
async fn graceful_stop_finishes_and_releases_the_port() {
    let app = spawn_app().await;
    app.place_ok("u1").await;
    let base = app.base.clone();
    app.stop().await;
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no longer listening"
    );
}
