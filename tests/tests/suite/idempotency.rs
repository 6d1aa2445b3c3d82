//! `Idempotency-Key` on POST: a retry returns the first result and appends
//! nothing; the same key with another body is refused.

use std::sync::Arc;

use e2e::{spawn_app, TestApp};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

async fn place_with_key(app: &TestApp, user: &str, key: &str, body: Value) -> e2e::Reply {
    app.request(
        Method::POST,
        &format!("/order-ms/{user}/orders"),
        Some(&body),
        &[("Idempotency-Key", key)],
    )
    .await
}

#[tokio::test]
async fn the_same_key_twice_places_one_order() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": "4000", "coffee_qty": "2"});
    let first = place_with_key(&app, "u1", "key-1", body.clone()).await;
    let second = place_with_key(&app, "u1", "key-1", body).await;
    assert_eq!(
        second.ok(201),
        first.ok(201),
        "the retry returns the first result"
    );
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(
        second.header("x-log-position"),
        first.header("x-log-position")
    );
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(app.db.events().await, 1);
    assert_eq!(app.db.outbox().await, 1);
}

#[tokio::test]
async fn numbers_or_strings_are_the_same_request_under_one_key() {
    let app = spawn_app().await;
    let first = place_with_key(
        &app,
        "u1",
        "k",
        json!({"coffee_name": "latte", "coffee_price": "4000"}),
    )
    .await;
    let second = place_with_key(
        &app,
        "u1",
        "k",
        json!({"coffee_name": " latte", "coffee_price": 4000, "coffee_qty": 1}),
    )
    .await;
    assert_eq!(first.ok(201)["order_id"], second.ok(201)["order_id"]);
    assert_eq!(app.db.events().await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_appends_nothing() {
    let app = spawn_app().await;
    place_with_key(
        &app,
        "u1",
        "k",
        json!({"coffee_name": "latte", "coffee_price": 4000}),
    )
    .await
    .ok(201);
    let reused = place_with_key(
        &app,
        "u1",
        "k",
        json!({"coffee_name": "latte", "coffee_price": 4500}),
    )
    .await;
    let problem = reused.problem(422);
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or_default()
            .contains("idempotency"),
        "{problem}"
    );
    assert_eq!(app.db.events().await, 1);
}

#[tokio::test]
async fn keys_belong_to_one_user() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 4000});
    let a = place_with_key(&app, "alice", "k", body.clone())
        .await
        .ok(201);
    let b = place_with_key(&app, "bob", "k", body).await.ok(201);
    assert_ne!(a["order_id"], b["order_id"]);
    assert_eq!(app.db.events().await, 2);
}

#[tokio::test]
async fn a_retry_after_the_order_moved_still_returns_the_first_result() {
    let app = spawn_app().await;
    let body = json!({"coffee_name": "latte", "coffee_price": 4000});
    let first = place_with_key(&app, "u1", "k", body.clone()).await.ok(201);
    let id = first["order_id"].as_str().expect("id");
    app.move_to("u1", id, "preparing", &[]).await.ok(200);
    let retry = place_with_key(&app, "u1", "k", body).await.ok(201);
    assert_eq!(retry, first);
    assert_eq!(retry["status"], "received");
    assert_eq!(app.db.events().await, 2);
}

#[tokio::test]
async fn sixteen_concurrent_retries_place_one_order() {
    let app = Arc::new(spawn_app().await);
    let body = json!({"coffee_name": "latte", "coffee_price": 4000});
    let racers = (0..16).map(|_| {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { place_with_key(&app, "u1", "same", body).await })
    });
    let replies: Vec<_> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| r.ok(201)["order_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "every retry names the same order");
    assert_eq!(app.db.events().await, 1);
    assert_eq!(
        app.db.count("SELECT count(*) FROM idempotency_keys").await,
        1
    );
}
