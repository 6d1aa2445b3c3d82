//! The pages in a real browser (tests/browser/pages.mjs: headless Debian
//! chromium driven by playwright-core, axe-core for accessibility), against
//! two service processes sharing nothing but the database: this test's
//! `orders all` (with Kafka, so the board's delivery side is fed), served
//! under the path prefix `/coffee` as behind the lab's load balancer, and a
//! second `orders serve` process of the real binary, at the root. The script signs a
//! customer and two members of staff in through the provider's own page,
//! orders an iced latte from the menu, follows it live across the processes,
//! races two moves; on a chain of stores (scripts/sample-stores.json) staff
//! of two stores pick one board (remembered), a cart of two drinks placed at
//! gangnam reaches gangnam's board and not main's, and an order is placed
//! with the keyboard alone; it checks the refusals (a customer on /board, a price
//! not the menu's, a write without the CSRF token), signs the customer out
//! in another tab (the page's stream ends and the page offers the sign-in),
//! and searches every line the second process logged (at debug level) for
//! staff's authorization code, state and session cookie.
//!
//! `UPDATE_SCREENSHOTS=1` also writes docs/screenshots/*.png.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use e2e::oidc::{AUDIENCE, WEB_CLIENT};
use e2e::{orders_bin, run_orders, spawn_app_opts, test_kafka, AppOptions, TestApp};
use tokio::process::Child;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// CHROMIUM and BROWSER_DEPS, from scripts/browser.sh (which installs them).
fn browser_env() -> Vec<(String, String)> {
    let out = std::process::Command::new(repo().join("scripts/browser.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/browser.sh");
    assert!(
        out.status.success(),
        "scripts/browser.sh failed: the browser tests need chromium and playwright-core"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

/// A second `orders serve` process of the real binary, on the test app's
/// database and provider, logging everything (debug) to `log`, once it
/// answers `/healthz`; with its base URL.
async fn start_a_second_server(app: &TestApp, log: &Path) -> (Child, String) {
    let provider = app.provider.as_ref().expect("authentication is on");
    let port = e2e::processes::free_port().expect("a free port");
    let other = format!("http://127.0.0.1:{port}");
    let serve = tokio::process::Command::new(orders_bin())
        .arg("serve")
        .env("DATABASE_URL", &app.db.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OIDC_ISSUER", &provider.issuer)
        .env("OIDC_AUDIENCE", AUDIENCE)
        .env("OIDC_WEB_CLIENT_ID", WEB_CLIENT.0)
        .env("OIDC_WEB_CLIENT_SECRET", WEB_CLIENT.1)
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("RATE_LIMIT_PEER_PER_SECOND", "0")
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(log).expect("the second server's log"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start orders serve");
    let mut up = false;
    for _ in 0..300 {
        if let Ok(reply) = reqwest::get(format!("{other}/healthz")).await {
            if reply.status().is_success() {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the second `orders serve` did not come up on {other}");
    (serve, other)
}

#[tokio::test]
async fn customers_and_staff_use_the_pages_live_across_two_processes() {
    let browser = browser_env();
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        path_prefix: Some("/coffee"),
        ..AppOptions::default()
    })
    .await;
    let menu = repo().join("scripts/sample-menu.json");
    let set = run_orders(
        &app.db,
        None,
        &["menu", "set", menu.to_str().expect("a UTF-8 path")],
    )
    .await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );

    let stores = repo().join("scripts/sample-stores.json");
    let set = run_orders(
        &app.db,
        None,
        &["stores", "set", stores.to_str().expect("a UTF-8 path")],
    )
    .await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );

    let scratch = e2e::scratch_dir("orders-browser-");
    let log = scratch.path().join("serve.log");
    let (mut serve, other) = start_a_second_server(&app, &log).await;

    let mut script = tokio::process::Command::new("node");
    script
        .arg(repo().join("tests/browser/pages.mjs"))
        .envs(browser)
        .env("APP_A", &app.base)
        .env("APP_B", &other)
        // Without sqlx's own parameters, which psql refuses.
        .env(
            "DATABASE_URL",
            app.db.url.split('?').next().unwrap_or_default(),
        )
        .env("PSQL", e2e::processes::psql())
        .kill_on_drop(true);
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let shots = repo().join("docs/screenshots");
        std::fs::create_dir_all(&shots).expect("docs/screenshots");
        script.env("SHOTS", shots);
    }
    let out = tokio::time::timeout(Duration::from_secs(240), script.output())
        .await
        .expect("the browser script finishes within 240 s")
        .expect("run node tests/browser/pages.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("measured "), "{stdout}");
    let _ = serve.kill().await;
    assert_no_secret_logged(&stdout, &log);
}

/// Neither the sign-in's code and state nor the session cookie the script
/// noted (`secrets {…}`) is in any line of `log`.
fn assert_no_secret_logged(stdout: &str, log: &Path) {
    let secrets: serde_json::Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("secrets "))
        .and_then(|json| serde_json::from_str(json).ok())
        .expect("the script noted the sign-in's secrets");
    let text = std::fs::read_to_string(log).expect("the second server's log");
    assert!(
        text.contains("signed in through the browser"),
        "the log holds the sign-in (else this search proves nothing)"
    );
    // Each request's line names its client, as the rate limit saw it.
    assert!(
        text.contains(r#""client":"127.0.0.1""#),
        "the request spans record the client's address"
    );
    for name in ["code", "state", "cookie"] {
        let secret = secrets[name].as_str().unwrap_or_default();
        assert!(secret.len() >= 8, "{name}: {secrets}");
        let leaked: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaked.is_empty(),
            "the sign-in's {name} reached the log:\n{}",
            leaked.join("\n")
        );
    }
}
