//! The pages served by the service (API.md "Pages"): what a browser gets
//! before any script runs: the pages and assets with their headers, the
//! staff board's refusal of signed-out callers, the start of the browser
//! sign-in, and the refusals of a sign-in that is not this browser's.

use e2e::spawn_app;
use reqwest::header;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

#[tokio::test]
async fn pages_and_assets_carry_a_strict_policy_and_are_revalidated() {
    let app = spawn_app().await;
    let http = no_redirects();
    for path in ["/", "/assets/app.css", "/assets/customer.js", "/menu"] {
        let reply = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("GET");
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
    let css = http
        .get(format!("{}/assets/app.css", app.base))
        .send()
        .await
        .expect("GET");
    assert!(css.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/css"));
    let etag = css.headers()[header::ETAG].clone();
    let again = http
        .get(format!("{}/assets/app.css", app.base))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), 304);
    let missing = http
        .get(format!("{}/assets/nope.js", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_board_sends_signed_out_callers_to_sign_in_and_refuses_customers() {
    let app = spawn_app().await;
    let http = no_redirects();
    let reply = http
        .get(format!("{}/board", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()[header::LOCATION], "/auth/login?next=/board");
    let customer = app.token("alice", None).await;
    let reply = http
        .get(format!("{}/board", app.base))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 403);
    assert!(reply.text().await.expect("body").contains("직원만"));
    let staff = app.token("barista", Some("staff")).await;
    let reply = http
        .get(format!("{}/board", app.base))
        .bearer_auth(&staff)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 200);
    // The staff stream refuses customers as the delivery API does.
    let reply = http
        .get(format!("{}/events/board", app.base))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 403);
}

#[tokio::test]
async fn sign_in_starts_with_pkce_at_the_provider_and_a_lax_http_only_cookie() {
    let app = spawn_app().await;
    let http = no_redirects();
    let reply = http
        .get(format!("{}/auth/login?next=//evil.example/", app.base))
        .send()
        .await
        .expect("GET");
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
    assert!(cookie.starts_with("orders_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_owned();

    // A callback with another state is not this browser's sign-in.
    let reply = http
        .get(format!("{}/auth/callback?code=x&state=forged", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 400);
    let problem: serde_json::Value = reply.json().await.expect("problem");
    assert_eq!(problem["type"], "/problems/sign-in-failed");
    // And the attempt is spent: the same cookie cannot try again.
    let reply = http
        .get(format!("{}/auth/callback?code=x&state=forged", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 400);

    // Nobody is signed in with that cookie.
    let reply = http
        .get(format!("{}/auth/session", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 401);
    // Nor with a forged one; and API clients never get a cookie.
    let reply = http
        .get(format!("{}/auth/session", app.base))
        .header(header::COOKIE, "orders_session=forged")
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 401);
    let token = app.token("alice", None).await;
    let reply = http
        .get(format!("{}/order-ms/alice/orders", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 200);
    assert!(reply.headers().get(header::SET_COOKIE).is_none());
}
