//! The pages served by the service ("Pages" in API.md, the HTTP contract kept beside the repository): what a browser gets
//! before any script runs: the pages and assets with their headers, the
//! staff board's refusal of signed-out callers, the start of the browser
//! sign-in, the refusals of a sign-in that is not this browser's, and the
//! live streams' answers to whoever is asking.

use std::time::Duration;

use e2e::{eventually, spawn_app, As, TestApp};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header;

/// What a request carries.
#[derive(Clone, Copy)]
enum With<'a> {
    Nothing,
    Bearer(&'a str),
    Cookie(&'a str),
}

/// GET `path` on `app` as a browser would, without following redirects.
async fn get(app: &TestApp, path: &str, with: With<'_>) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let request = http.get(format!("{}{path}", app.base));
    let request = match with {
        With::Nothing => request,
        With::Bearer(token) => request.bearer_auth(token),
        With::Cookie(cookie) => request.header(header::COOKIE, cookie),
    };
    request.send().await.expect("GET")
}

#[tokio::test]
async fn pages_and_assets_carry_a_strict_policy_and_are_revalidated() {
    let app = spawn_app().await;
    for path in ["/", "/assets/app.css", "/assets/customer.js", "/menu"] {
        let reply = get(&app, path, With::Nothing).await;
        assert_eq!(reply.status(), 200, "{path}");
        let headers = reply.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
    let css = get(&app, "/assets/app.css", With::Nothing).await;
    assert!(css.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/css"));
    let etag = css.headers()[header::ETAG].clone();
    let again = app
        .http
        .get(format!("{}/assets/app.css", app.base))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), 304);
    let missing = get(&app, "/assets/nope.js", With::Nothing).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_board_sends_signed_out_callers_to_sign_in_and_refuses_customers() {
    let app = spawn_app().await;
    let reply = get(&app, "/board", With::Nothing).await;
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()[header::LOCATION], "/auth/login?next=/board");
    let customer = app.token("alice", None).await;
    let reply = get(&app, "/board", With::Bearer(&customer)).await;
    assert_eq!(reply.status(), 403);
    assert!(reply.text().await.expect("body").contains("직원만"));
    let staff = app.token("barista", Some("staff")).await;
    let reply = get(&app, "/board", With::Bearer(&staff)).await;
    assert_eq!(reply.status(), 200);
    // The staff stream refuses customers as the delivery API does.
    let reply = get(&app, "/events/board", With::Bearer(&customer)).await;
    assert_eq!(reply.status(), 403);
}

#[tokio::test]
async fn sign_in_starts_with_pkce_at_the_provider_and_a_lax_http_only_cookie() {
    let app = spawn_app().await;
    let reply = get(&app, "/auth/login?next=//evil.example/", With::Nothing).await;
    assert_eq!(reply.status(), 303);
    let location = reply.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    let provider = app.provider.as_ref().expect("a provider");
    assert!(location.starts_with(&provider.issuer), "{location}");
    for part in [
        "response_type=code",
        "client_id=orders-web",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
    ] {
        assert!(location.contains(part), "{part} in {location}");
    }
    let cookie = reply.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    // The sign-in in flight travels in a sealed cookie of its own, for the
    // callback only: no session (and no row) for a visitor.
    assert!(cookie.starts_with("orders_sign_in="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/auth/callback"), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_owned();

    // A callback with another state is not this browser's sign-in.
    let reply = get(
        &app,
        "/auth/callback?code=x&state=forged",
        With::Cookie(&session),
    )
    .await;
    assert_eq!(reply.status(), 400);
    let spent = reply
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        spent.starts_with("orders_sign_in=") && spent.contains("Max-Age=0"),
        "a failed callback spends the sign-in: {spent:?}"
    );
    let problem: serde_json::Value = reply.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/sign-in-failed");
    // And the attempt is spent: the same cookie cannot try again.
    let reply = get(
        &app,
        "/auth/callback?code=x&state=forged",
        With::Cookie(&session),
    )
    .await;
    assert_eq!(reply.status(), 400);

    // Nobody is signed in with that cookie.
    let reply = get(&app, "/auth/session", With::Cookie(&session)).await;
    assert_eq!(reply.status(), 401);
    // Nor with a forged one; and API clients never get a cookie.
    let reply = get(&app, "/auth/session", With::Cookie("orders_session=forged")).await;
    assert_eq!(reply.status(), 401);
    let token = app.token("alice", None).await;
    let reply = get(&app, "/order-ms/alice/orders", With::Bearer(&token)).await;
    assert_eq!(reply.status(), 200);
    assert!(reply.headers().get(header::SET_COOKIE).is_none());
}

/// The events a stream sends, by name and data.
async fn events(
    app: &TestApp,
    path: &str,
    who: &As,
) -> impl Stream<Item = (String, serde_json::Value)> {
    let auth = app.authorization(who).await.expect("authentication is on");
    let reply = reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .header(header::AUTHORIZATION, auth)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 200, "{path}");
    assert!(reply.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    reply.bytes_stream().eventsource().map(|event| {
        let event = event.expect("a well-formed event stream");
        let data = serde_json::from_str(&event.data).expect("JSON data");
        (event.event, data)
    })
}

/// The next event named `name` (others are skipped), within 20 s.
async fn next_named(
    stream: &mut (impl Stream<Item = (String, serde_json::Value)> + Unpin),
    name: &str,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some((event, data)) if event == name => return data,
                Some(_) => continue,
                None => panic!("the stream ended before a `{name}` event"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{name}` event within 20 s"))
}

/// `live_streams_open` as `/metrics` shows it now.
async fn open_streams(app: &TestApp) -> f64 {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    reply
        .text
        .lines()
        .find_map(|line| line.strip_prefix("live_streams_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_customers_stream_carries_only_their_own_orders_and_is_counted_while_open() {
    // A process of its own: the gauge is a process's, and this binary's
    // other tests open streams of their own at the same time.
    let (app, _child) = e2e::spawn_orders_all(&[]).await;
    let mut bob = Box::pin(events(&app, "/events/orders", &As::customer("bob")).await);
    let mut alice = Box::pin(events(&app, "/events/orders", &As::customer("alice")).await);
    next_named(&mut bob, "ready").await;
    next_named(&mut alice, "ready").await;
    assert_eq!(open_streams(&app).await, 2.0);

    // Bob's order first: the changes reach every stream in commit order,
    // so by the time Alice's stream shows hers, Bob's has passed it by.
    let bobs = app.place_ok("bob").await;
    let shown = next_named(&mut bob, "order").await;
    assert_eq!(shown["order_id"], bobs.as_str());
    assert_eq!(shown["user_id"], "bob");
    let alices = app.place_ok("alice").await;
    let shown = next_named(&mut alice, "order").await;
    assert_eq!(
        shown["order_id"],
        alices.as_str(),
        "Alice's stream showed another's order"
    );
    assert_eq!(shown["status"], "received");

    // A move shows too.
    app.move_to("alice", &alices, "preparing", &[])
        .await
        .ok(200);
    let shown = next_named(&mut alice, "order").await;
    assert_eq!(
        (shown["order_id"].as_str(), shown["status"].as_str()),
        (Some(alices.as_str()), Some("preparing"))
    );

    drop(bob);
    drop(alice);
    eventually(
        Duration::from_secs(10),
        "closed streams uncounted",
        || async { (open_streams(&app).await == 0.0).then_some(()) },
    )
    .await;
}
