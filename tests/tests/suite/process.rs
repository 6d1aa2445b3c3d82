//! The `orders` binary as a process: migrate, serve, stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use e2e::processes::{self, send_signal};
use e2e::{orders_bin, TestDb};
use tokio::process::Command;

fn free_port() -> u16 {
    processes::free_port().expect("a free port")
}

#[tokio::test]
async fn migrate_applies_the_schema_to_an_empty_database() {
    let db = TestDb::create().await;
    sqlx::raw_sql(
        "DROP SCHEMA public CASCADE; DROP SCHEMA IF EXISTS delivery CASCADE; \
         DROP SCHEMA IF EXISTS web CASCADE; CREATE SCHEMA public",
    )
    .execute(&db.pool)
    .await
    .expect("empty the database");
    let status = Command::new(orders_bin())
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run orders migrate");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        0,
        "events exists again"
    );
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 0);
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let db = TestDb::create().await;
    let port = free_port();
    let mut child = Command::new(orders_bin())
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start orders serve");
    let url = format!("http://127.0.0.1:{port}/order-ms");
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            assert_eq!(
                r.text().await.expect("body"),
                "Welcome to ORDER Microservice!"
            );
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server came up");
    assert!(send_signal(&child, "TERM").await, "SIGTERM sent");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "graceful exit, got {status}");
}

#[tokio::test]
async fn serve_exits_with_an_error_when_postgres_is_unreachable() {
    let port = free_port();
    let output = Command::new(orders_bin())
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            format!("postgres://nobody@127.0.0.1:{port}/none"),
        )
        // A service waits for its database at start (60 s by default): not
        // this one.
        .env("DB_START_WAIT_SECS", "0")
        .output()
        .await
        .expect("run orders");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
}

/// `orders all` (HTTP, relay and both projections) stopped by SIGINT or
/// SIGTERM exits 0 with no error, however the signal's wake-ups interleave:
/// its workers end because they were asked to, which is not a failure.
#[tokio::test]
async fn all_stops_cleanly_on_sigint_and_sigterm() {
    let db = TestDb::create().await;
    let kafka = e2e::test_kafka();
    for (round, signal) in ["INT", "TERM", "INT", "TERM", "INT", "TERM"]
        .into_iter()
        .enumerate()
    {
        let port = free_port();
        let child = e2e::orders_all(&db, &kafka, port)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orders all");
        let client = reqwest::Client::new();
        let mut placed = false;
        for _ in 0..100 {
            let answer = client
                .post(format!(
                    "http://127.0.0.1:{port}/order-ms/sig{round}/orders"
                ))
                .json(&serde_json::json!({"coffee_name": "latte", "coffee_price": "4500"}))
                .send()
                .await;
            if let Ok(r) = answer {
                assert_eq!(r.status(), 201);
                placed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            placed,
            "round {round}: the service came up and took an order"
        );
        // Let the relay and the projections start working on it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(send_signal(&child, signal).await, "SIG{signal} sent");
        let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
            .await
            .expect("exits within 15 s of the signal")
            .expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "round {round}, SIG{signal}: graceful exit, got {}: {stderr}",
            output.status
        );
        assert!(!stderr.contains("error"), "round {round}: {stderr}");
    }
}
