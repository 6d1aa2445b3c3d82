//! Timeouts tell the truth: a write cut off by the request deadline after
//! its append was sent may have committed, so the answer is 503
//! `/problems/outcome-unknown` ("retry with the same Idempotency-Key"), not a
//! plain timeout that invites a retry without a key and so a second order.

use std::time::{Duration, Instant};

use e2e::{eventually, spawn_app_opts, AppOptions};
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_stalled_past_the_deadline_answers_outcome_unknown_and_a_keyed_retry_settles_it()
{
    let app = spawn_app_opts(AppOptions {
        workers: false,
        request_timeout: Some(Duration::from_millis(400)),
        ..AppOptions::default()
    })
    .await;
    // The database stalls every append: a transaction holds the log locked.
    let mut holder = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    let mut stall = holder.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .expect("lock the log");

    let body = json!({"coffee_name": "flat white", "coffee_price": 5500});
    let key = [("Idempotency-Key", "outcome-unknown-1")];
    let started = Instant::now();
    let reply = app
        .request(Method::POST, "/order-ms/yuna/orders", Some(&body), &key)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off near the deadline"
    );
    let problem = reply.problem(503);
    assert_eq!(problem["type"], "/problems/outcome-unknown", "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("same Idempotency-Key"));
    assert_eq!(reply.header("retry-after"), Some("1"));

    // The stall ends; whatever the first attempt did, the keyed retry
    // settles it: one order, the retry's answer names it.
    stall.commit().await.expect("release the log");
    let retried = eventually(Duration::from_secs(10), "a definitive answer", || async {
        let reply = app
            .request(Method::POST, "/order-ms/yuna/orders", Some(&body), &key)
            .await;
        (reply.status == 201).then_some(reply)
    })
    .await;
    let order = retried.json()["order_id"].as_str().expect("id").to_owned();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT stream_id::text FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_all(&app.db.pool)
            .await
            .expect("placements");
    assert_eq!(stored, [order], "exactly one order for the key");
}

/// `orders serve` (no workers, no authentication) on `db`, its every
/// connection to PostgreSQL through `proxy`.
async fn serve_through(
    db: &e2e::TestDb,
    proxy: &e2e::cutting_proxy::CuttingProxy,
) -> (String, tokio_util::sync::CancellationToken) {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let (host, port) = proxy.address().split_once(':').expect("host:port");
    let url = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .expect("the test database's URL")
        .host(host)
        .port(port.parse().expect("a port"))
        .to_url_lossy()
        .to_string();
    let pools = services::db::Pools::connect(&url, services::db::Budgets::default())
        .await
        .expect("the pools, through the proxy");
    let config = services::app::Config {
        serve: Some(services::app::ServeConfig::on(([127, 0, 0, 1], 0).into())),
        ..services::app::Config::default()
    };
    let app = services::app::App::build(pools, config)
        .await
        .expect("build");
    let port = app.port().expect("it serves HTTP");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    (format!("http://127.0.0.1:{port}"), stop)
}

/// Places `name` for `user` with `key`: the status and the problem type.
async fn place_named(base: &str, user: &str, name: &str, key: &str) -> (u16, serde_json::Value) {
    let reply = reqwest::Client::new()
        .post(format!("{base}/order-ms/{user}/orders"))
        .header("idempotency-key", key)
        .json(&json!({"coffee_name": name, "coffee_price": 4500}))
        .send()
        .await
        .expect("an answer");
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or_default())
}

/// Orders in the log whose drink is `name`.
async fn orders_named(db: &e2e::TestDb, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE payload->'lines'->0->>'coffee_name' = $1")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_after_the_append_was_sent_answers_outcome_unknown_either_way() {
    use e2e::cutting_proxy::{Cut, CuttingProxy};
    let db = e2e::TestDb::create().await;
    let upstream = {
        use std::str::FromStr;
        let options =
            sqlx::postgres::PgConnectOptions::from_str(&db.url).expect("the database's URL");
        format!("{}:{}", options.get_host(), options.get_port())
    };
    let proxy = CuttingProxy::start(upstream).await.expect("the proxy");
    let (base, stop) = serve_through(&db, &proxy).await;

    for (cut, committed) in [(Cut::AfterTheAnswer, 1), (Cut::BeforeTheServer, 0)] {
        let name = format!("cut {cut:?} {}", uuid::Uuid::new_v4().simple());
        let key = format!("key-{}", uuid::Uuid::new_v4().simple());
        proxy.arm(&name, cut);
        let (status, problem) = place_named(&base, "yuna", &name, &key).await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (503, Some("/problems/outcome-unknown")),
            "{cut:?}: {problem}"
        );
        assert_eq!(orders_named(&db, &name).await, committed, "{cut:?}");
        // The keyed retry settles it: one order, whichever way it went.
        let (status, order) = place_named(&base, "yuna", &name, &key).await;
        assert_eq!(status, 201, "{cut:?}: the retry: {order}");
        assert_eq!(orders_named(&db, &name).await, 1, "{cut:?}: one order");
    }

    // A group commit's statement, shared by the requests that arrive
    // together: every one of them is told its outcome is unknown.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mark = format!("group {id}");
    proxy.arm(&mark, Cut::AfterTheAnswer);
    let requests: Vec<(String, String)> = (0..16)
        .map(|i| (format!("{mark} {i}"), format!("group-key-{i}-{id}")))
        .collect();
    let answers = futures::future::join_all(
        requests
            .iter()
            .map(|(name, key)| place_named(&base, "yuna", name, key)),
    )
    .await;
    let unknown = answers
        .iter()
        .filter(|(s, p)| *s == 503 && p["type"] == "/problems/outcome-unknown")
        .count();
    let placed = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(proxy.cuts(), 3, "the marked statement was cut");
    assert!(unknown >= 1, "{answers:?}");
    assert_eq!(
        unknown + placed,
        16,
        "each is placed or told its outcome is unknown: {answers:?}"
    );
    for (name, key) in &requests {
        let (status, _) = place_named(&base, "yuna", name, key).await;
        assert_eq!(status, 201);
    }
    for (name, _) in &requests {
        assert_eq!(orders_named(&db, name).await, 1, "{name}: one order");
    }
    stop.cancel();
}
