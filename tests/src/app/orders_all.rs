//! `orders all` run as a process, as deployed, with a test app that talks
//! to it over HTTP.

use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{http_client, TestApp};
use crate::oidc::{Provider, AUDIENCE};
use crate::{eventually, orders_bin, processes, test_kafka, TestDb};

/// `orders all` as a process, as deployed (the production assembly and its
/// connection budgets), with the test's own database and topic, and `env`
/// on top (`DB_READ_CONNECTIONS`, `KAFKA_PARTITIONS`, …). The returned app
/// talks to it over HTTP; the child is killed when dropped.
pub async fn spawn_orders_all(env: &[(&str, &str)]) -> (TestApp, tokio::process::Child) {
    spawn_orders_all_on(TestDb::create().await, env).await
}

/// [`spawn_orders_all`] on `db` (one with a cluster of its own,
/// [`TestDb::alone`], for a test that holds the horizon).
pub async fn spawn_orders_all_on(
    db: TestDb,
    env: &[(&str, &str)],
) -> (TestApp, tokio::process::Child) {
    let kafka = test_kafka();
    let port = processes::free_port().expect("a free port");
    let provider = Provider::shared();
    let mut cmd = tokio::process::Command::new(orders_bin());
    cmd.arg("all")
        .env("DATABASE_URL", &db.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_BROKERS", kafka.brokers.join(","))
        .env("KAFKA_TOPIC", &kafka.topic)
        .env("OIDC_ISSUER", &provider.issuer)
        .env("OIDC_AUDIENCE", AUDIENCE)
        // The pages too, as `just run` deploys it.
        .env("OIDC_WEB_CLIENT_ID", crate::oidc::WEB_CLIENT.0)
        .env("OIDC_WEB_CLIENT_SECRET", crate::oidc::WEB_CLIENT.1)
        // Load tests send many requests as one user.
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("RATE_LIMIT_PEER_PER_SECOND", "0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start orders all");
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        http: http_client(),
        db,
        shutdown: CancellationToken::new(),
        running: None,
        kafka: Some(kafka),
        provider: Some(provider),
        tokens: Mutex::default(),
    };
    eventually(Duration::from_secs(30), "orders all answers", || async {
        let r = app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    (app, child)
}
