//! `GET /order-ms/{user_id}/orders`: the order read model through the API,
//! with paging and read-your-writes.

use std::time::Duration;

use e2e::{spawn_app, spawn_app_opts, AppOptions, Reply, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const STRONG: (&str, &str) = ("Prefer", "consistency=strong");

async fn list(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    app.request(Method::GET, path, None, headers).await
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| o["order_id"].as_str().expect("order_id").to_owned())
        .collect()
}

#[tokio::test]
async fn lists_a_users_orders_newest_first_in_pages() {
    let app = spawn_app().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(app.place_ok("alice").await);
    }
    app.place_ok("bob").await;
    placed.reverse(); // newest first

    let first = list(&app, "/order-ms/alice/orders?limit=2", &[STRONG]).await;
    let body = first.ok(200);
    assert_eq!(ids(&body), placed[..2]);
    let cursor = first
        .header("x-next-cursor")
        .expect("a next cursor")
        .to_owned();
    assert_eq!(cursor, placed[1]);
    assert_eq!(
        first.header("link"),
        Some(format!("</order-ms/alice/orders?limit=2&next={cursor}>; rel=\"next\"").as_str())
    );

    // Follow the cursors to the end: every order exactly once, in order.
    let mut seen = ids(&body);
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = list(
            &app,
            &format!("/order-ms/alice/orders/?limit=2&next={cursor}"),
            &[],
        )
        .await;
        seen.extend(ids(&page.ok(200)));
        next = page.header("x-next-cursor").map(str::to_owned);
    }
    assert_eq!(
        seen, placed,
        "paging returns every order once, newest first"
    );

    // The default page holds all five; bob's order is not among them.
    let all = list(&app, "/order-ms/alice/orders", &[]).await;
    assert_eq!(ids(&all.ok(200)), placed);
    assert_eq!(all.header("x-next-cursor"), None, "no next page");
}

#[tokio::test]
async fn list_rows_show_everything_the_order_shows() {
    let app = spawn_app().await;
    let placed = app
        .place(
            "carol",
            json!({"coffee_name": "flat white", "coffee_price": "5200", "coffee_qty": "3"}),
        )
        .await;
    let order = placed.ok(201);
    let position = placed
        .header("x-log-position")
        .expect("a log position")
        .to_owned();
    let listed = list(
        &app,
        "/order-ms/carol/orders",
        &[("X-Log-Position", &position)],
    )
    .await;
    assert_eq!(
        listed.ok(200),
        json!([order]),
        "the row equals the order the write returned"
    );
}

#[tokio::test]
async fn a_read_with_the_writes_position_sees_the_write() {
    let app = spawn_app().await;
    let id = app.place_ok("dave").await;
    for (status, label) in [
        ("preparing", "제작중"),
        ("delivering", "배송중"),
        ("delivered", "배송완료"),
    ] {
        let moved = app.move_to("dave", &id, label, &[]).await;
        moved.ok(200);
        let position = moved
            .header("x-log-position")
            .expect("a log position")
            .to_owned();
        let body = list(
            &app,
            "/order-ms/dave/orders",
            &[("X-Log-Position", &position)],
        )
        .await
        .ok(200);
        assert_eq!(
            body[0]["status"], status,
            "read-your-writes after the move to {status}"
        );
        assert_eq!(body[0]["status_label"], label);
    }
    let cancelled = app.place_ok("dave").await;
    app.cancel("dave", &cancelled, &[]).await.ok(200);
    let body = list(&app, "/order-ms/dave/orders", &[STRONG]).await.ok(200);
    assert_eq!(body[0]["order_id"], cancelled.as_str());
    assert_eq!(body[0]["status"], "cancelled");
    assert_eq!(body[0]["version"], 2);
    assert_eq!(body[1]["version"], 4);
}

#[tokio::test]
async fn an_unknown_or_empty_user_has_an_empty_list() {
    let app = spawn_app().await;
    app.place_ok("erin").await;
    let body = list(&app, "/order-ms/nobody/orders", &[STRONG])
        .await
        .ok(200);
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn bad_list_queries_are_400_problems() {
    let app = spawn_app().await;
    app.place_ok("frank").await;
    for query in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "limit=2.5",
        "limit=1&limit=2",
        "next=not-a-cursor",
        "next=",
        // A UUID, but not a v7 order id.
        "next=4a0c8b42-2f57-4d4e-9c4b-3e8f54f0d8aa",
    ] {
        let reply = list(&app, &format!("/order-ms/frank/orders?{query}"), &[]).await;
        let problem = reply.problem(400);
        assert_eq!(problem["type"], "/problems/invalid-query", "{query}");
    }
    let reply = list(&app, "/order-ms/bad%20user/orders", &[]).await;
    reply.problem(400);
    for position in ["abc", "0", "-3", "1.5"] {
        let reply = list(
            &app,
            "/order-ms/frank/orders",
            &[("X-Log-Position", position)],
        )
        .await;
        reply.problem(400);
    }
    // A position no event has yet.
    let reply = list(
        &app,
        "/order-ms/frank/orders",
        &[("X-Log-Position", "999999")],
    )
    .await;
    let problem = reply.problem(400);
    assert_eq!(problem["errors"][0]["field"], "x-log-position");
}

#[tokio::test]
async fn limit_may_be_sent_as_a_padded_string_of_digits() {
    let app = spawn_app().await;
    app.place_ok("gina").await;
    app.place_ok("gina").await;
    let reply = list(&app, "/order-ms/gina/orders?limit=%201%20", &[STRONG]).await;
    assert_eq!(reply.ok(200).as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn read_your_writes_answers_503_when_the_projection_does_not_catch_up() {
    // No projection worker runs: the read model never reaches the write.
    let app = spawn_app_opts(AppOptions {
        workers: false,
        read_wait: Duration::from_millis(300),
        ..AppOptions::default()
    })
    .await;
    let placed = app
        .place(
            "hank",
            json!({"coffee_name": "mocha", "coffee_price": 5000}),
        )
        .await;
    placed.ok(201);
    let position = placed
        .header("x-log-position")
        .expect("a log position")
        .to_owned();

    let reply = list(
        &app,
        "/order-ms/hank/orders",
        &[("X-Log-Position", &position)],
    )
    .await;
    let problem = reply.problem(503);
    assert_eq!(problem["type"], "/problems/read-model-behind");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let reply = list(&app, "/order-ms/hank/orders", &[STRONG]).await;
    reply.problem(503);

    // Without asking for its own writes, a reader gets what the model has.
    let reply = list(&app, "/order-ms/hank/orders", &[]).await;
    assert_eq!(reply.ok(200), json!([]));
}
