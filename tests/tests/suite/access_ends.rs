//! Access ends when it ends, and a refusal costs less than an acceptance:
//! live streams close with their caller's access and are capped; a flood of
//! forged tokens costs a few signature checks; nothing is written for a
//! visitor; forwarding headers count only from trusted proxies.
//!
//! The stream tests run `orders all` as a process of its own: the stream
//! gauges and the signature-check counter they read are a process's, and
//! this binary's other tests open streams and verify tokens too.

use std::collections::HashMap;
use std::time::Duration;

use e2e::oidc::Provider;
use e2e::sessions::signed_in_session;
use e2e::{spawn_app, spawn_orders_all, TestApp};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header;
use serde_json::json;

/// A live stream's answer: its status, `Retry-After` and problem type when
/// refused, its events when opened.
struct Opened {
    status: u16,
    retry_after: Option<String>,
    problem: Option<String>,
    events: Option<std::pin::Pin<Box<dyn Stream<Item = String> + Send>>>,
}

/// Opens `path` with `headers`, as a page's `EventSource` would.
async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Opened {
    let mut request = reqwest::Client::new().get(format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = request.send().await.expect("the server answers");
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status != 200 {
        let body: serde_json::Value = reply.json().await.unwrap_or_default();
        return Opened {
            status,
            retry_after,
            problem: body["type"].as_str().map(str::to_owned),
            events: None,
        };
    }
    let events = reply.bytes_stream().eventsource().map(|event| {
        event
            .map(|e| e.event)
            .unwrap_or_else(|e| format!("broken: {e}"))
    });
    Opened {
        status,
        retry_after,
        problem: None,
        events: Some(Box::pin(events)),
    }
}

/// Waits for `ready`, then for the stream to end; panics if it does not
/// end within `within`.
async fn ends_within(opened: &mut Opened, within: Duration, what: &str) {
    let events = opened.events.as_mut().expect("an open stream");
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no `ready` within 10 s"));
    assert_eq!(first.as_deref(), Some("ready"), "{what}");
    let ended =
        tokio::time::timeout(within, async { while events.next().await.is_some() {} }).await;
    assert!(
        ended.is_ok(),
        "{what}: the stream was still open {within:?} later"
    );
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    let (app, _child) = spawn_orders_all(&[]).await;
    let provider = Provider::shared();
    let token = provider.token_with("alice", None, &[("ttl", "3")]).await;
    let auth = bearer(&token);
    let mut stream = open(&app, "/events/orders", &[("authorization", &auth)]).await;
    assert_eq!(stream.status, 200);
    ends_within(&mut stream, Duration::from_secs(12), "a token of 3 s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_session_signs_out() {
    let (app, _child) = spawn_orders_all(&[]).await;
    let token = Provider::shared().token("alice", None).await;
    let (cookie, csrf) = signed_in_session(&app.db, "alice", &token).await;
    let mut stream = open(&app, "/events/orders", &[("cookie", &cookie)]).await;
    assert_eq!(stream.status, 200, "the session opens a stream");
    let events = stream.events.as_mut().expect("open");
    let ready = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert_eq!(ready.ok().flatten().as_deref(), Some("ready"));

    let signed_out = reqwest::Client::new()
        .post(format!("{}/auth/logout", app.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("POST /auth/logout");
    assert_eq!(signed_out.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its session's sign-out");
    // And the cookie opens nothing any more.
    let again = open(&app, "/events/orders", &[("cookie", &cookie)]).await;
    assert_eq!(again.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped_per_caller_and_in_all() {
    let (app, _child) =
        spawn_orders_all(&[("MAX_STREAMS_PER_USER", "8"), ("MAX_STREAMS", "10")]).await;
    let provider = Provider::shared();
    let alice = bearer(&provider.token("alice", None).await);
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..100 {
        let opened = open(&app, "/events/orders", &[("authorization", &alice)]).await;
        match opened.status {
            200 => held.push(opened),
            _ => refused.push(opened),
        }
    }
    assert_eq!(held.len(), 8, "one caller's open streams are capped at 8");
    assert_eq!(refused.len(), 92);
    for no in &refused {
        assert_eq!(no.status, 429);
        assert_eq!(no.problem.as_deref(), Some("/problems/too-many-streams"));
        assert!(no.retry_after.is_some(), "429 says when to retry");
    }
    // Another caller fills the process's cap; past it, 503.
    let bob = bearer(&provider.token("bob", None).await);
    for _ in 0..2 {
        let opened = open(&app, "/events/orders", &[("authorization", &bob)]).await;
        assert_eq!(opened.status, 200);
        held.push(opened);
    }
    let full = open(&app, "/events/orders", &[("authorization", &bob)]).await;
    assert_eq!(full.status, 503, "the process holds 10 streams at most");
    assert!(full.retry_after.is_some(), "503 says when to retry");
    // The in-flight gauge counts the open streams.
    let metrics = operator_metrics(&app).await;
    let in_flight: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        in_flight >= 10.0,
        "the in-flight gauge counts open streams: {in_flight}"
    );
    // A closed stream gives its place back.
    held.truncate(7);
    let again = eventually_opens(&app, &alice).await;
    assert_eq!(again, 200);
}

/// Opens a stream for `auth` until one opens (a closed stream's place comes
/// back once the server has seen it close).
async fn eventually_opens(app: &TestApp, auth: &str) -> u16 {
    for _ in 0..50 {
        let opened = open(app, "/events/orders", &[("authorization", auth)]).await;
        if opened.status == 200 {
            return 200;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    429
}

/// `/metrics` as an operator reads it.
async fn operator_metrics(app: &TestApp) -> String {
    let ops = Provider::shared().token("ops", Some("operator")).await;
    app.get_with_token("/metrics", &ops).await.text
}

/// `name`'s value in the Prometheus text `metrics` (0 when absent).
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_flood_from_one_address_costs_a_few_signature_checks() {
    let (app, _child) = spawn_orders_all(&[
        ("RATE_LIMIT_PEER_PER_SECOND", "1"),
        ("RATE_LIMIT_PEER_BURST", "1"),
    ])
    .await;
    let provider = Provider::shared();
    let metrics = || operator_metrics(&app);
    // The operator's token is verified once (and remembered).
    let counted = |text: &str| {
        (
            metric(text, "auth_signature_checks_total"),
            metric(text, "http_tokens_refused_total"),
        )
    };
    let (checks_before, refused_before) = counted(&metrics().await);
    let forged = provider.forge(&json!({
        "alg": "RS256", "claims": provider.claims("mallory", &[]), "flip": true
    }));
    let mut answers: HashMap<u16, usize> = HashMap::new();
    for _ in 0..200 {
        let reply = app
            .http
            .get(format!("{}/order-ms/mallory/orders", app.base))
            .header("authorization", bearer(&forged))
            .send()
            .await
            .expect("the server answers");
        *answers.entry(reply.status().as_u16()).or_default() += 1;
    }
    let (checks, refused) = counted(&metrics().await);
    assert!(
        checks - checks_before <= 5.0 && refused - refused_before <= 5.0,
        "200 forged tokens from one address cost {} signature checks and {} refusals \
         after one (answers {answers:?})",
        checks - checks_before,
        refused - refused_before
    );
    assert!(
        answers.get(&429).copied().unwrap_or(0) >= 190,
        "refused by the address's limit: {answers:?}"
    );
}

#[tokio::test]
async fn a_visitor_who_has_not_signed_in_writes_nothing() {
    let app = spawn_app().await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    for _ in 0..5 {
        let reply = browser
            .get(format!("{}/auth/login?next=/board", app.base))
            .send()
            .await
            .expect("GET /auth/login");
        assert!(
            reply.status().is_redirection(),
            "sent to the provider: {}",
            reply.status()
        );
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM web.sessions").await,
        0,
        "starting a sign-in wrote session rows"
    );
}

/// `GET /menu` as a client behind the proxy at the connection's end, which
/// states `forwarded_for`.
async fn menu_for(app: &TestApp, forwarded_for: &str) -> u16 {
    app.http
        .get(format!("{}/menu", app.base))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("GET /menu")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_a_trusted_proxy_and_ipv6_by_prefix() {
    let limited = [
        ("RATE_LIMIT_PEER_PER_SECOND", "1"),
        ("RATE_LIMIT_PEER_BURST", "1"),
    ];
    let mut behind_proxy = limited.to_vec();
    behind_proxy.push(("TRUSTED_PROXIES", "127.0.0.1"));
    let (app, _child) = spawn_orders_all(&behind_proxy).await;
    assert_eq!(menu_for(&app, "203.0.113.1").await, 200);
    assert_eq!(
        menu_for(&app, "203.0.113.1").await,
        429,
        "one client's budget"
    );
    assert_eq!(
        menu_for(&app, "203.0.113.2").await,
        200,
        "another client behind the same proxy has a budget of its own"
    );
    assert_eq!(menu_for(&app, "2001:db8:0:7::1").await, 200);
    assert_eq!(
        menu_for(&app, "2001:db8:0:7::2").await,
        429,
        "an IPv6 /64 is one client"
    );
    assert_eq!(menu_for(&app, "2001:db8:0:8::1").await, 200);

    // Without a trusted proxy the header is the client's own word: ignored.
    let (direct, _child) = spawn_orders_all(&limited).await;
    // Its start was awaited by polling `/healthz` from this address: let
    // the budget fill again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(menu_for(&direct, "203.0.113.1").await, 200);
    assert_eq!(
        menu_for(&direct, "203.0.113.2").await,
        429,
        "a forwarding header from an untrusted peer bought a fresh budget"
    );
}
