//! Who may do what ("Who may do what" in API.md, the HTTP contract kept beside the repository), against the real local
//! OpenID Connect provider: every route for every kind of caller, the actor
//! recorded in events, and the rate limit (the tokens that must be refused,
//! key rotation and a provider that is down: [`super::tokens`]).

use std::time::Duration;

use e2e::oidc::Provider;
use e2e::{eventually, spawn_app_opts, test_kafka, AppOptions, As, Reply, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use services::http::access::{RateLimit, RateLimitConfig};

const A: &str = "alice";
const B: &str = "bob";

/// The callers of the matrix, in its column order.
fn callers() -> [(&'static str, As); 5] {
    [
        ("no token", As::Nobody),
        ("customer A", As::customer(A)),
        ("customer B", As::customer(B)),
        ("staff", As::Staff),
        ("operator", As::Operator),
    ]
}

async fn send(app: &TestApp, who: &As, method: &Method, path: &str, body: Option<&Value>) -> Reply {
    app.request_as(who.clone(), method.clone(), path, body, &[])
        .await
}

/// One row of the matrix: a request and the status API.md gives each caller,
/// in the order of [`callers`].
type Route<'a> = (Method, String, Option<&'a Value>, [u16; 5]);

/// Every route of API.md, against A's `order` and `to_cancel` (which the
/// matrix cancels), with the bodies it posts.
fn route_matrix<'a>(
    order: &str,
    to_cancel: &str,
    place: &'a Value,
    moved: &'a Value,
) -> Vec<Route<'a>> {
    // Expected status per caller: no token, A, B, staff, operator.
    vec![
        (Method::GET, "/order-ms".into(), None, [200; 5]),
        (Method::GET, "/health-check".into(), None, [200; 5]),
        (Method::GET, "/healthz".into(), None, [200; 5]),
        (Method::GET, "/readyz".into(), None, [200; 5]),
        (Method::GET, "/openapi.json".into(), None, [200; 5]),
        (
            Method::POST,
            format!("/order-ms/{A}/orders"),
            Some(place),
            [401, 201, 404, 403, 404],
        ),
        (
            Method::GET,
            format!("/order-ms/{A}/orders"),
            None,
            [401, 200, 404, 200, 404],
        ),
        (
            Method::GET,
            format!("/order-ms/{A}/orders/{order}"),
            None,
            [401, 200, 404, 200, 404],
        ),
        (
            Method::POST,
            format!("/order-ms/{A}/orders/{to_cancel}/cancel"),
            None,
            [401, 200, 404, 403, 404],
        ),
        (
            Method::GET,
            "/delivery-ms/received".into(),
            None,
            [401, 403, 403, 200, 403],
        ),
        (
            Method::GET,
            format!("/delivery-ms/{A}/{order}"),
            None,
            [401, 403, 403, 200, 403],
        ),
        (
            Method::POST,
            format!("/delivery-ms/{A}/{order}/status"),
            Some(moved),
            [401, 403, 403, 200, 403],
        ),
        (
            Method::GET,
            "/metrics".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
    ]
}

/// Sends every route of `matrix` as every caller, in order, and returns the
/// answers whose status differs from API.md's. A refusal with the expected
/// status must also be a problem document, and a 401 must carry a Bearer
/// challenge (asserted here, at once).
async fn wrong_answers(app: &TestApp, matrix: &[Route<'_>]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (method, path, body, expected) in matrix {
        for ((name, who), want) in callers().iter().zip(expected) {
            let reply = send(app, who, method, path, *body).await;
            if reply.status.as_u16() != *want {
                wrong.push(format!(
                    "{method} {path} as {name}: {} (want {want}): {}",
                    reply.status, reply.text
                ));
                continue;
            }
            match want {
                401 => {
                    reply.problem(401);
                    let challenge = reply.header("www-authenticate").unwrap_or_default();
                    assert!(
                        challenge.starts_with("Bearer"),
                        "{method} {path}: {challenge:?}"
                    );
                }
                403 | 404 => {
                    reply.problem(*want);
                }
                _ => {}
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_api_md_says() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    let order = app.place_ok(A).await;
    let to_cancel = app.place_ok(A).await;
    // The delivery side has it (fed from Kafka) before staff read it there.
    eventually(
        Duration::from_secs(10),
        "the order on the delivery side",
        || async {
            (app.get(&format!("/delivery-ms/{A}/{order}")).await.status == 200).then_some(())
        },
    )
    .await;
    let place = json!({"coffee_name": "latte", "coffee_price": 4500});
    let moved = json!({"status": "preparing"});
    let matrix = route_matrix(&order, &to_cancel, &place, &moved);
    let wrong = wrong_answers(&app, &matrix).await;
    assert!(
        wrong.is_empty(),
        "answers that break API.md:\n{}",
        wrong.join("\n")
    );

    // Another customer's order reads exactly as a missing one.
    let missing = "01900000-0000-7000-8000-000000000000";
    let theirs = send(
        &app,
        &As::customer(B),
        &Method::GET,
        &format!("/order-ms/{A}/orders/{order}"),
        None,
    )
    .await;
    let none = send(
        &app,
        &As::customer(B),
        &Method::GET,
        &format!("/order-ms/{B}/orders/{missing}"),
        None,
    )
    .await;
    assert_eq!(
        theirs.problem(404),
        none.problem(404),
        "B learns nothing about A's order"
    );
}

#[tokio::test]
async fn the_actor_in_each_event_comes_from_the_token() {
    let app = e2e::spawn_app().await;
    let order = app.place_ok(A).await;
    app.move_to(A, &order, "preparing", &[]).await.ok(200);
    let who: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'who' FROM events WHERE stream_id = $1::uuid ORDER BY version",
    )
    .bind(&order)
    .fetch_all(&app.db.pool)
    .await
    .expect("the events' metadata");
    assert_eq!(who, ["customer:alice", "staff:barista"]);
}

#[tokio::test]
async fn a_caller_over_its_rate_limit_gets_429_with_retry_after() {
    let limit = RateLimit::new(1, 5).expect("a limit");
    let app = spawn_app_opts(AppOptions {
        rate_limits: RateLimitConfig {
            users: Some(limit),
            peers: Some(limit),
        },
        ..AppOptions::default()
    })
    .await;
    // A's burst of five, then 429; B has a budget of its own.
    for _ in 0..5 {
        app.get(&format!("/order-ms/{A}/orders")).await.ok(200);
    }
    let over = app.get(&format!("/order-ms/{A}/orders")).await;
    over.problem(429);
    let wait: u64 = over
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    app.get(&format!("/order-ms/{B}/orders")).await.ok(200);
    // Without a token, the peer address is the key.
    for _ in 0..5 {
        app.get("/healthz").await;
    }
    app.get("/healthz").await.problem(429);
}

/// `orders serve` with `env`, to completion (it is expected to refuse to
/// start) within 30 s.
async fn serve_refuses(env: &[(&str, &str)]) -> String {
    let db = e2e::TestDb::create().await;
    let port = e2e::processes::free_port().expect("a free port");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(e2e::orders_bin())
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("HTTP_ADDR", format!("0.0.0.0:{port}"))
            .env_remove("OIDC_ISSUER")
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("orders serve exits at once")
    .expect("run orders serve");
    assert!(!out.status.success(), "it must not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn without_an_issuer_the_service_refuses_to_serve_beyond_loopback() {
    let stderr = serve_refuses(&[]).await;
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0") && stderr.contains("OIDC_ISSUER"),
        "a clear message: {stderr}"
    );
    // An issuer whose keys would cross a network in clear is refused too.
    let stderr = serve_refuses(&[("OIDC_ISSUER", "http://login.example.com")]).await;
    assert!(
        stderr.contains("OIDC_ISSUER must be an https URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn credentials_and_database_passwords_never_reach_the_logs() {
    let db = e2e::TestDb::create().await;
    let provider = Provider::shared();
    let port = e2e::processes::free_port().expect("a free port");
    let child = tokio::process::Command::new(e2e::orders_bin())
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OIDC_ISSUER", &provider.issuer)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start orders serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "orders serve answers", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let token = provider.token(A, None).await;
    for auth in [
        format!("Bearer {token}"),
        "Bearer not-a-token-SECRET1".to_owned(),
    ] {
        http.get(format!("{base}/order-ms/{A}/orders"))
            .header("authorization", auth)
            .header("cookie", "session=SECRET2")
            .send()
            .await
            .expect("an answer");
    }
    e2e::processes::send_signal(&child, "TERM").await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it stops")
        .expect("its output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("refused a bearer token"),
        "trace logs were written"
    );
    let signature = token.rsplit('.').next().unwrap_or_default();
    for secret in [signature, "SECRET1", "SECRET2"] {
        assert!(!logs.contains(secret), "{secret:?} reached the logs");
    }

    // A connection failure names the server, never the password.
    let out = tokio::process::Command::new(e2e::orders_bin())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://orders:PW-SECRET3@127.0.0.1:1/orders",
        )
        .output()
        .await
        .expect("run orders migrate");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("PW-SECRET3"),
        "the password was printed: {text}"
    );
}
