//! The `orders` binary as a process: migrate, serve, stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use e2e::{orders_bin, TestDb};
use tokio::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn migrate_applies_the_schema_to_an_empty_database() {
    let db = TestDb::create().await;
    sqlx::raw_sql(
        "DROP SCHEMA public CASCADE; DROP SCHEMA IF EXISTS delivery CASCADE; CREATE SCHEMA public",
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
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
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
        .output()
        .await
        .expect("run orders");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
}
