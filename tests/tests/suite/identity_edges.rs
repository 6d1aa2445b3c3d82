//! The edges of identity, each a class of defect closed: keys judged by
//! their material, only access tokens taken as access tokens, a session this
//! build cannot read taken as signed out, every list bounded.

use std::sync::Arc;
use std::time::Duration;

use e2e::oidc::Provider;
use e2e::sessions::{session_with, signed_in_session};
use e2e::{eventually, spawn_app, spawn_app_opts, AppOptions, As, Auth, Reply, TestApp};
use reqwest::Method;
use serde_json::json;

const A: &str = "alice";

/// `GET /order-ms/alice/orders` with `Authorization: Bearer {token}`.
async fn with_token(app: &TestApp, token: &str) -> Reply {
    app.get_with_token(&format!("/order-ms/{A}/orders"), token)
        .await
}

#[tokio::test]
async fn a_key_replaced_under_its_id_stops_the_tokens_it_signed_at_once() {
    let provider = Arc::new(Provider::start());
    let app = spawn_app_opts(AppOptions {
        auth: Auth::Own(provider.clone()),
        keys_refresh: Some(Duration::from_millis(300)),
        ..AppOptions::default()
    })
    .await;
    let before = provider.token(A, None).await;
    // Verified once, and remembered; a browser's session holds it too.
    with_token(&app, &before).await.ok(200);
    let (cookie, _) = signed_in_session(&app.db, A, &before).await;
    let by_session = || async {
        app.request_as(
            As::Nobody,
            Method::GET,
            "/auth/session",
            None,
            &[("cookie", cookie.as_str())],
        )
        .await
    };
    by_session().await.ok(200);

    let kid = provider.replace_signing_key();
    let after = provider.token(A, None).await;
    let kid_of = e2e::oidc::header_kid;
    assert_eq!(kid_of(&after), kid, "the new key signs under the old id");
    assert_eq!(kid_of(&before), kid);
    eventually(
        Duration::from_secs(10),
        "the service takes the new key",
        || async { (with_token(&app, &after).await.status == 200).then_some(()) },
    )
    .await;
    // The withdrawn key verifies nothing, remembered or not.
    let refused = with_token(&app, &before).await;
    assert_eq!(
        refused.problem(401)["type"],
        "/problems/invalid-token",
        "a token signed by the withdrawn key still passed: {}",
        refused.text
    );
    // The session holding it is judged again, as a bearer token is.
    assert_eq!(
        by_session().await.status,
        401,
        "a session whose token's key was withdrawn still signed in"
    );
}

#[tokio::test]
async fn an_id_token_of_the_same_issuer_does_not_pass_as_an_access_token() {
    let app = spawn_app().await;
    let provider = app.provider.clone().expect("a provider");
    let claims = provider.claims(A, &[]);
    // A plain JWT access token (typ JWT, or none) passes, as many providers
    // issue them.
    for typ in [json!("JWT"), json!(null)] {
        let token = provider.forge(&json!({"alg": "RS256", "typ": typ, "claims": claims}));
        with_token(&app, &token).await.ok(200);
    }
    // The same claims with what only an ID token carries do not, even for
    // this audience; nor a JWT of another type.
    let id_token_marks = [
        ("nonce", json!("n-0S6_WzA2Mj")),
        ("at_hash", json!("77QmUPtjPfzWtF2AnpK9RQ")),
        ("c_hash", json!("LDktKdoQak3Pk0cnXxCltA")),
        ("typ", json!("ID")),
    ];
    for (name, value) in id_token_marks {
        let mut marked = claims.clone();
        marked[name] = value;
        let token = provider.forge(&json!({"alg": "RS256", "typ": "JWT", "claims": marked}));
        let reply = with_token(&app, &token).await;
        assert_eq!(
            reply.problem(401)["type"],
            "/problems/invalid-token",
            "an ID token (with {name}) passed as an access token"
        );
    }
    let logout = provider.forge(&json!({"alg": "RS256", "typ": "logout+jwt", "claims": claims}));
    with_token(&app, &logout).await.problem(401);
}

#[tokio::test]
async fn a_session_this_build_cannot_read_is_signed_out_not_refused() {
    let app = spawn_app().await;
    // Written by an older build whose signed-in user had other fields.
    let (cookie, id) = session_with(&app.db, json!({"user": {"user": A, "admin": true}})).await;
    let as_signed_out = |what: &'static str| {
        let cookie = cookie.clone();
        let app = &app;
        async move {
            let headers = [("cookie", cookie.as_str())];
            let session = app
                .request_as(As::Nobody, Method::GET, "/auth/session", None, &headers)
                .await;
            assert_eq!(
                session.status, 401,
                "{what}: /auth/session: {}",
                session.text
            );
            let orders = app
                .request_as(
                    As::Nobody,
                    Method::GET,
                    "/order-ms/alice/orders",
                    None,
                    &headers,
                )
                .await;
            assert_eq!(orders.status, 401, "{what}: the API: {}", orders.text);
        }
    };
    as_signed_out("a user of an older shape").await;
    // A row the session store itself cannot decode (another store version).
    sqlx::query("UPDATE web.sessions SET data = '\\x00ff01'::bytea WHERE id = $1")
        .bind(id.to_string())
        .execute(&app.db.pool)
        .await
        .expect("spoil the session row");
    as_signed_out("a row the store cannot decode").await;
}

#[tokio::test]
async fn a_status_list_without_a_limit_is_bounded() {
    let app = e2e::spawn_app_without_workers().await;
    projections::registry::install_all(&app.db.pool)
        .await
        .expect("the read models' tables");
    // 501 orders waiting, written straight into the delivery side's model.
    sqlx::query(
        "INSERT INTO delivery.order_status
             (order_id, user_id, coffee_name, coffee_qty, status, ordered_at, updated_at,
              version, last_position, temperature, size, pickup_number)
         SELECT gen_random_uuid(), 'u' || i, 'latte', 1, 'received',
                now() - i * interval '1 second', now(), 1, i, 'hot', 'regular', i
           FROM generate_series(1, 501) AS i",
    )
    .execute(&app.db.pool)
    .await
    .expect("501 waiting orders");
    let all = app.get("/delivery-ms/received").await.ok(200);
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(500),
        "a list without a limit answers at most 500"
    );
    let some = app.get("/delivery-ms/received?limit=7").await.ok(200);
    assert_eq!(some.as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn another_customers_order_with_an_unreadable_event_is_not_found_like_any_other() {
    let app = e2e::spawn_app_without_workers().await;
    let order = app.place_ok("alice").await;
    let stream = uuid::Uuid::parse_str(&order).expect("an order id");
    // A newer build moved it on with an event this one cannot read.
    e2e::insert_event(
        &app.db.pool,
        stream,
        2,
        "OrderRefunded",
        99,
        json!({"why": "a newer build's event"}),
        false,
    )
    .await;
    for (what, reply) in [
        ("read", app.order("bob", &order).await),
        ("cancel", app.cancel("bob", &order, &[]).await),
    ] {
        let problem = reply.problem(404);
        assert_eq!(
            problem["type"], "/problems/order-not-found",
            "{what}: another customer's order answered {problem}"
        );
        assert!(
            !reply.text.contains("OrderRefunded"),
            "{what}: the held event was named to another customer"
        );
    }
    // Its owner hears why it is held.
    let held = app.order("alice", &order).await.problem(503);
    assert_eq!(held["type"], "/problems/order-held");
}

#[tokio::test]
async fn readiness_tells_anyone_only_ready_and_an_operator_why() {
    let app = spawn_app().await;
    let anyone = app.get("/readyz").await;
    assert_eq!(anyone.status, 200);
    assert_eq!(anyone.text, "ready\n", "the reasons are for operators");
    let operator = app
        .request_as(As::Operator, Method::GET, "/readyz", None, &[])
        .await;
    assert_eq!(operator.status, 200);
    assert!(operator.text.contains("postgres ok"), "{}", operator.text);
    let customer = app
        .request_as(As::customer(A), Method::GET, "/readyz", None, &[])
        .await;
    assert_eq!(customer.text, "ready\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_asks_the_broker_over_one_kept_connection() {
    let mut kafka = e2e::test_kafka();
    let proxy = e2e::cutting_proxy::CuttingProxy::start(kafka.brokers[0].clone())
        .await
        .expect("a proxy before the broker");
    // Every new client bootstraps through the proxy.
    kafka.brokers = vec![proxy.address().to_owned()];
    let app = spawn_app_opts(AppOptions {
        kafka: Some(kafka),
        workers: false,
        relay: false,
        ..AppOptions::default()
    })
    .await;
    let at_start = proxy.connections();
    for _ in 0..20 {
        assert_eq!(app.get("/readyz").await.status, 200);
        // Apart, so that no call shares another's probe.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let made = proxy.connections() - at_start;
    assert!(
        made <= 1,
        "20 readiness probes made {made} connections to the broker"
    );
}
