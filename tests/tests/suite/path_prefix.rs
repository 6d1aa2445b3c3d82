//! The whole product under a path prefix (`PATH_PREFIX=/coffee`, as behind
//! the lab's load balancer): the API, the pages and their assets, the
//! sign-in's redirects and cookies, `Location`, the OpenAPI `servers` and
//! the operations' routes all begin with it, and nothing answers outside it.
//! The pages in a real browser under the prefix: `browser.rs`.

use e2e::{spawn_app_opts, AppOptions, TestApp};
use reqwest::header;
use reqwest::redirect::Policy;

const PREFIX: &str = "/coffee";

async fn app_under_prefix() -> TestApp {
    spawn_app_opts(AppOptions {
        path_prefix: Some(PREFIX),
        ..AppOptions::default()
    })
    .await
}

/// `http://127.0.0.1:PORT`: the app's base without its prefix.
fn origin(app: &TestApp) -> String {
    app.base
        .strip_suffix(PREFIX)
        .expect("the base ends with the prefix")
        .to_owned()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
}

#[tokio::test]
async fn the_api_is_served_under_the_prefix_and_nothing_outside_it() {
    let app = app_under_prefix().await;
    let greeting = app.get("/order-ms").await;
    assert_eq!(greeting.status, 200);
    assert_eq!(greeting.text, "Welcome to ORDER Microservice!");
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/menu"] {
        assert_eq!(app.get(path).await.status, 200, "{PREFIX}{path}");
    }

    // Outside the prefix: a 404 problem, for the API and the pages alike.
    let http = reqwest::Client::new();
    for path in ["/order-ms", "/healthz", "/", "/board", "/coffeex/order-ms"] {
        let outside = http
            .get(format!("{}{path}", origin(&app)))
            .send()
            .await
            .expect("an answer");
        assert_eq!(outside.status(), 404, "{path}");
        assert_eq!(
            outside.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
        );
    }

    // A placed order's Location is under the prefix, and answers there.
    let placed = app
        .place(
            "rita",
            serde_json::json!({"coffee_name": "latte", "coffee_price": 5000, "coffee_qty": 1}),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.json()["order_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let location = placed.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("{PREFIX}/order-ms/rita/orders/{id}"));
    let found = app
        .get(location.strip_prefix(PREFIX).expect("under the prefix"))
        .await;
    assert_eq!(found.status, 200);

    // The OpenAPI document says where its paths are.
    let spec = app.get("/openapi.json").await.json();
    assert_eq!(spec["servers"][0]["url"], PREFIX);
    assert!(spec["paths"]["/order-ms/{user_id}/orders"].is_object());

    // Metrics name the routes as API.md writes them.
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"route="/order-ms/{user_id}/orders""#),
        "{metrics:.2000}"
    );
    assert!(!metrics.contains(r#"route="/coffee"#), "{metrics:.2000}");
}

#[tokio::test]
async fn the_pages_link_redirect_and_set_cookies_under_the_prefix() {
    let app = app_under_prefix().await;
    let http = no_redirects();

    // The customer page, with and without the trailing slash, links its
    // assets and sign-in under the prefix, and they answer there.
    for path in [PREFIX.to_owned(), format!("{PREFIX}/")] {
        let page = http
            .get(format!("{}{path}", origin(&app)))
            .send()
            .await
            .expect("the page");
        assert_eq!(page.status(), 200, "{path}");
        let html = page.text().await.expect("html");
        assert!(html.contains(r#"<meta name="orders-base" content="/coffee">"#));
        assert!(html.contains(r#"src="/coffee/assets/customer.js""#));
        assert!(html.contains(r#"href="/coffee/auth/login?next=/""#));
    }
    for asset in ["app.css", "common.js", "customer.js", "board.js"] {
        assert_eq!(app.get(&format!("/assets/{asset}")).await.status, 200);
    }

    // The board sends a visitor to the sign-in under the prefix.
    let board = http
        .get(format!("{}/board", app.base))
        .send()
        .await
        .expect("the board");
    assert_eq!(board.status(), 303);
    assert_eq!(
        board.headers()[header::LOCATION],
        "/coffee/auth/login?next=/board"
    );

    // The sign-in comes back to the callback under the prefix, and its
    // cookie is only for that path.
    let login = http
        .get(format!("{}/auth/login?next=/board", app.base))
        .send()
        .await
        .expect("the sign-in");
    assert_eq!(login.status(), 303);
    let to_provider =
        reqwest::Url::parse(login.headers()[header::LOCATION].to_str().expect("a URL"))
            .expect("the provider's URL");
    let redirect_uri = to_provider
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .expect("a redirect_uri");
    assert_eq!(
        redirect_uri,
        format!("{}/coffee/auth/callback", origin(&app))
    );
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .expect("a cookie");
    assert!(cookie.starts_with("orders_sign_in="), "{cookie}");
    assert!(cookie.contains("Path=/coffee/auth/callback"), "{cookie}");
}

#[tokio::test]
async fn a_session_is_scoped_to_the_prefix() {
    let app = app_under_prefix().await;
    let token = app.token("rita", None).await;
    let (cookie, _) = e2e::sessions::signed_in_session(&app.db, "rita", &token).await;
    let http = no_redirects();
    let session = http
        .get(format!("{}/auth/session", app.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("the session");
    assert_eq!(session.status(), 200);
    // Signing out sends the browser to the customer page under the prefix
    // (or to the provider, which sends it back there).
    let csrf = session.json::<serde_json::Value>().await.expect("json")["csrf_token"]
        .as_str()
        .expect("a CSRF token")
        .to_owned();
    let out = http
        .post(format!("{}/auth/logout", app.base))
        .header(header::COOKIE, &cookie)
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .expect("the sign-out");
    assert_eq!(out.status(), 200);
    let redirect_to = out.json::<serde_json::Value>().await.expect("json")["redirect_to"]
        .as_str()
        .expect("where to")
        .to_owned();
    assert!(
        redirect_to == "/coffee/"
            || redirect_to.contains(&url_escape(&format!("{}/coffee/", origin(&app)))),
        "{redirect_to}"
    );
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
