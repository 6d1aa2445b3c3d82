//! Encrypted connections with throwaway certificate authorities: the service
//! serving HTTPS (its certificate replaced on disk and taken without a
//! restart), and PostgreSQL reached over TLS with `sslmode=verify-full`.

use std::path::Path;
use std::time::Duration;

use e2e::certs::TestCa;
use e2e::eventually;
use e2e::oidc::{Provider, AUDIENCE};
use e2e::processes::{start_cluster, stop_cluster};
use serde_json::json;
use services::app::{self, App, ServeConfig};
use services::auth::AuthConfig;
use services::db::{Budgets, Pools};
use services::http::tls::TlsFiles;
use tokio_util::sync::CancellationToken;

fn scratch(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{what}-{}", uuid::Uuid::now_v7().simple()))
}

/// A client that trusts only `ca` (no system roots).
fn trusting(ca: &TestCa) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&ca.ca_pem()).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

fn install(ca: &TestCa, live: &Path) {
    std::fs::copy(&ca.cert, live.join("cert.pem")).expect("copy the certificate");
    std::fs::copy(&ca.key, live.join("key.pem")).expect("copy the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_end_to_end_with_a_certificate_replaced_in_place() {
    let dir = scratch("https");
    let first = TestCa::new(&dir.join("ca1"), "orders test CA 1");
    let live = dir.join("live");
    std::fs::create_dir_all(&live).expect("the live directory");
    install(&first, &live);
    let db = e2e::TestDb::create().await;
    let provider = Provider::shared();
    let mut serve = ServeConfig::on(([127, 0, 0, 1], 0).into());
    serve.tls = Some(TlsFiles {
        cert: live.join("cert.pem"),
        key: live.join("key.pem"),
    });
    serve.auth = Some(AuthConfig::new(provider.issuer.clone(), AUDIENCE));
    let config = app::Config {
        serve: Some(serve),
        projections: vec![&projections::orders::REGISTRATION as projections::Registered],
        ..app::Config::default()
    };
    let pools = Pools::connect(&db.url, Budgets::default())
        .await
        .expect("pools");
    let app = App::build(pools, config).await.expect("build");
    let port = app.port().expect("serves");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    let base = format!("https://127.0.0.1:{port}");

    // A customer's whole request over TLS, verified against the CA.
    let client = trusting(&first);
    let token = provider.token("tls-user", None).await;
    let placed = client
        .post(format!("{base}/order-ms/tls-user/orders"))
        .bearer_auth(&token)
        .json(&json!({"coffee_name": "latte", "coffee_price": 4500}))
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(placed.status(), 201);
    // A client that does not trust the CA gets no answer; nor does plain HTTP.
    let strict = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client");
    assert!(strict.get(format!("{base}/healthz")).send().await.is_err());
    let plain = strict
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()));

    // A renewed certificate (here, from another CA) is served without a
    // restart, within seconds of landing on disk.
    let second = TestCa::new(&dir.join("ca2"), "orders test CA 2");
    install(&second, &live);
    let renewed = trusting(&second);
    eventually(
        Duration::from_secs(20),
        "the new certificate is served",
        || async {
            let r = renewed.get(format!("{base}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    assert!(
        trusting(&first)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    stop.cancel();
    running.await.expect("the app task").expect("a clean stop");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs each statement on the cluster as its superuser (one by one:
/// `ALTER SYSTEM` refuses a transaction block).
async fn admin(url: &str, statements: &[&str]) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    for sql in statements {
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    }
}

/// Turns TLS on in the cluster at `base` (with `ca`'s server certificate)
/// and refuses every connection over TCP that does not use it.
async fn require_tls(url: &str, base: &Path, ca: &TestCa) {
    let data = base.join("data");
    std::fs::copy(&ca.cert, data.join("server.crt")).expect("copy the certificate");
    std::fs::copy(&ca.key, data.join("server.key")).expect("copy the key");
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .expect("write pg_hba.conf");
    // The server runs as the data directory's owner and wants its key private.
    for file in ["server.crt", "server.key", "pg_hba.conf"] {
        let status = std::process::Command::new("chown")
            .arg(format!("--reference={}", data.display()))
            .arg(data.join(file))
            .status()
            .expect("chown");
        assert!(status.success());
    }
    let status = std::process::Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key"))
        .status()
        .expect("chmod");
    assert!(status.success());
    admin(
        url,
        &[
            "ALTER SYSTEM SET ssl = on",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_postgres_over_verified_tls() {
    use sqlx::Connection;
    let cluster = e2e::processes::OwnCluster::new("pg-tls");
    let base = cluster.base.clone();
    let url = start_cluster(&base).await;
    let ca = TestCa::new(&base.join("ca"), "orders test PostgreSQL CA");
    require_tls(&url, &base, &ca).await;
    let verified = with_params(
        &url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca.display()),
    );
    // The reload takes effect for new connections: plain ones are refused.
    eventually(
        Duration::from_secs(10),
        "plain connections are refused",
        || async {
            sqlx::PgConnection::connect(&with_params(&url, "sslmode=disable"))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // A server certificate from a CA the client does not trust is refused.
    let stranger = TestCa::new(&base.join("other"), "a CA nobody trusts");
    let wrong = with_params(
        &url,
        &format!("sslmode=verify-full&sslrootcert={}", stranger.ca.display()),
    );
    assert!(sqlx::PgConnection::connect(&wrong).await.is_err());

    // The whole service on the verified connection.
    let pools = Pools::connect(&verified, Budgets::default())
        .await
        .expect("connect over TLS");
    services::db::migrate(&pools.writes).await.expect("migrate");
    let config = app::Config {
        serve: Some(ServeConfig::on(([127, 0, 0, 1], 0).into())),
        projections: vec![&projections::orders::REGISTRATION as projections::Registered],
        ..app::Config::default()
    };
    let app = App::build(pools.clone(), config).await.expect("build");
    let port = app.port().expect("serves");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    let http = reqwest::Client::new();
    let placed = http
        .post(format!("http://127.0.0.1:{port}/order-ms/pat/orders"))
        .json(&json!({"coffee_name": "latte", "coffee_price": "4500"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(placed.status(), 201);
    let list = http
        .get(format!("http://127.0.0.1:{port}/order-ms/pat/orders"))
        .header("Prefer", "consistency=strong")
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        list.status(),
        200,
        "the projection worker reads over TLS too"
    );
    let unencrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
          WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND NOT s.ssl",
    )
    .fetch_one(&pools.reads)
    .await
    .expect("pg_stat_ssl");
    assert_eq!(
        unencrypted, 0,
        "every connection of the service is encrypted"
    );
    stop.cancel();
    running.await.expect("the app task").expect("a clean stop");
    pools.close().await;
    stop_cluster(&base).await;
}

/// An identity provider behind a private CA (the lab's, a company's own):
/// with its CA in `OIDC_CA_FILE` the service fetches its keys over https and
/// accepts its tokens; without it, it trusts only the system's roots, the
/// keys cannot be fetched, and a token is answered 503 (the provider is
/// unavailable to it), never accepted unchecked. A file that holds no
/// certificate stops the service at start with a sentence that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_behind_a_private_ca_is_trusted_through_oidc_ca_file() {
    let dir = scratch("orders-oidc-ca");
    let ca = TestCa::new(&dir, "orders idp test CA");
    let provider = std::sync::Arc::new(Provider::start_tls(&ca));
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );

    // Trusted: the in-process app's AuthConfig carries the provider's CA.
    let app = e2e::spawn_app_opts(e2e::AppOptions {
        auth: e2e::Auth::Own(provider.clone()),
        ..e2e::AppOptions::default()
    })
    .await;
    let token = provider.token("rita", None).await;
    assert_eq!(
        app.get_with_token("/order-ms/rita/orders", &token)
            .await
            .status,
        200
    );

    // Not trusted: `orders serve` without OIDC_CA_FILE.
    let run = |ca_file: Option<&Path>| {
        let port = e2e::processes::free_port().expect("a free port");
        let mut cmd = tokio::process::Command::new(e2e::orders_bin());
        cmd.arg("serve")
            .env("DATABASE_URL", &app.db.url)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("OIDC_ISSUER", &provider.issuer)
            .env("OIDC_AUDIENCE", AUDIENCE)
            .env_remove("OIDC_CA_FILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = ca_file {
            cmd.env("OIDC_CA_FILE", file);
        }
        (cmd.spawn().expect("start orders serve"), port)
    };
    let (_untrusting, port) = run(None);
    let status = first_answer(port, &token).await;
    assert_eq!(status, 503, "a provider whose certificate it cannot check");

    // And with the CA: the same token is accepted.
    let (_trusting, port) = run(Some(&ca.ca));
    let status = first_answer(port, &token).await;
    assert_eq!(status, 200, "OIDC_CA_FILE trusted");

    // A file that is not certificates: refused at start.
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let (refused, _) = run(Some(&not_pem));
    let out = tokio::time::timeout(Duration::from_secs(30), refused.wait_with_output())
        .await
        .expect("it exits")
        .expect("its output");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OIDC_CA_FILE"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first answer of the process on `port` to rita's orders with `token`.
async fn first_answer(port: u16, token: &str) -> u16 {
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "orders serve answers", || async {
        let reply = http
            .get(format!("http://127.0.0.1:{port}/order-ms/rita/orders"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        Some(reply.status().as_u16())
    })
    .await
}
