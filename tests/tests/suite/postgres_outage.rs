//! PostgreSQL stopped under a running service: requests answer 503 within the
//! timeout (never hang, never a 500), `/readyz` says why, and the service
//! recovers by itself once the database is back. Runs against a throwaway
//! cluster of its own, started by the project's own script.

use std::time::{Duration, Instant};

use e2e::eventually;
use e2e::processes::{start_cluster, stop_cluster, HeldPort, OwnCluster};
use serde_json::json;
use services::app::{self, App, ServeConfig};
use services::db::{Budgets, Pools};
use tokio_util::sync::CancellationToken;

/// A placement made while Postgres is down: a 503 within the timeout, with
/// `Retry-After` and a problem body that leaks no internals, saying that
/// nothing was written (`unavailable`). A placement is one statement, its
/// append: the first sent on a pooled connection that the server dropped
/// cannot know whether it reached the server, and says so
/// (`outcome-unknown`, API.md: retry with the same key) when `first_on_a_dropped_connection`.
async fn assert_unavailable(reply: reqwest::Response, elapsed: Duration) {
    assert_refused_while_down(reply, elapsed, false).await;
}

async fn assert_refused_while_down(
    reply: reqwest::Response,
    elapsed: Duration,
    first_on_a_dropped_connection: bool,
) {
    assert_eq!(reply.status(), 503);
    assert!(
        elapsed < Duration::from_secs(5),
        "answered within the timeout: {elapsed:?}"
    );
    assert_eq!(
        reply
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = reply.json().await.expect("problem");
    if first_on_a_dropped_connection && body["type"] == "/problems/outcome-unknown" {
        return;
    }
    assert_eq!(body["type"], "/problems/unavailable");
    assert!(
        !body.to_string().contains("Io("),
        "no internals leak: {body}"
    );
}

/// While Postgres is down `/readyz` says so (and why) and `/healthz` still
/// answers: the process is alive.
async fn assert_not_ready_but_alive(client: &reqwest::Client, base_url: &str) {
    let ready = client
        .get(format!("{base_url}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.expect("text").contains("postgres"));
    assert_eq!(
        client
            .get(format!("{base_url}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}

/// `orders serve`, as the binary assembles it, on `pools`; the test's
/// client of it.
struct Served {
    base_url: String,
    client: reqwest::Client,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    async fn start(pools: &Pools) -> Served {
        let config = app::Config {
            serve: Some(ServeConfig::on(([127, 0, 0, 1], 0).into())),
            ..app::Config::default()
        };
        let app = App::build(pools.clone(), config).await.expect("build");
        let base_url = format!("http://127.0.0.1:{}", app.port().expect("serves"));
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run(stop.clone()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Served {
            base_url,
            client,
            stop,
            server,
        }
    }

    /// Places an order for `pat`.
    async fn place(&self) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}/order-ms/pat/orders", self.base_url))
            .json(&json!({"coffee_name": "latte", "coffee_price": "4500"}))
            .send()
            .await
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.await.expect("server").expect("served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answer_503_while_postgres_is_down_and_recover_after() {
    let cluster = OwnCluster::new("pg-outage");
    let base = cluster.base.clone();
    let url = start_cluster(&base).await;
    let pools = Pools::connect(&url, Budgets::default())
        .await
        .expect("connect");
    services::db::migrate(&pools.writes).await.expect("migrate");
    let served = Served::start(&pools).await;
    let (client, base_url) = (&served.client, &served.base_url);
    let place = || served.place();
    assert_eq!(place().await.expect("place").status(), 201);

    stop_cluster(&base).await;
    let held = HeldPort::hold(&url).await;
    let started = Instant::now();
    let reply = place().await.expect("an answer, not a hang");
    let elapsed = started.elapsed();
    assert_refused_while_down(reply, elapsed, true).await;
    // Every later one is refused before anything is sent.
    let started = Instant::now();
    let reply = place().await.expect("an answer, not a hang");
    assert_unavailable(reply, started.elapsed()).await;
    assert_not_ready_but_alive(client, base_url).await;

    // Back: the same process serves again, no restart.
    held.release().await;
    start_cluster(&base).await;
    eventually(Duration::from_secs(30), "orders accepted again", || async {
        (place().await.ok()?.status() == 201).then_some(())
    })
    .await;
    assert_eq!(
        client
            .get(format!("{base_url}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );

    served.stop().await;
    pools.close().await;
    stop_cluster(&base).await;
}

/// A service started while its database is down (restarting, failing over)
/// waits for it and comes up once it answers, instead of exiting for a
/// service manager to restart it again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_while_postgres_is_down_waits_for_it() {
    let cluster = OwnCluster::new("pg-late");
    let base = cluster.base.clone();
    let url = start_cluster(&base).await;
    stop_cluster(&base).await;
    let held = HeldPort::hold(&url).await;
    let port = e2e::processes::free_port().expect("a free port");
    let mut serve = tokio::process::Command::new(e2e::orders_bin())
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start orders serve");
    // Well past one connection attempt's own timeout (3 s), after which a
    // service that does not wait has exited.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        serve.try_wait().expect("its status").is_none(),
        "orders serve exited while its database was down"
    );
    held.release().await;
    start_cluster(&base).await;
    let health = format!("http://127.0.0.1:{port}/readyz");
    eventually(
        Duration::from_secs(30),
        "serving once PostgreSQL is up",
        || async {
            let reply = reqwest::get(&health).await.ok()?;
            (reply.status() == 200).then_some(())
        },
    )
    .await;
    e2e::processes::terminate(&mut serve).await;
    stop_cluster(&base).await;
}

/// Makes `db` take no writes (every new transaction read-only, as on a
/// primary demoted by a failover) or take them again, and cuts the
/// connections open to it so that the service's next ones see it.
async fn set_read_only(db: &e2e::TestDb, on: bool) {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .expect("the database's URL")
        .database("postgres")
        .connect()
        .await
        .expect("an admin connection");
    let value = if on { "on" } else { "off" };
    sqlx::query(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = {value}",
        db.name
    ))
    .execute(&mut admin)
    .await
    .expect("alter the database");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db.name)
        .execute(&mut admin)
        .await
        .expect("cut its connections");
    admin.close().await.ok();
}

/// A primary that stops taking writes (demoted by a failover) is a
/// failover: every place-order is answered 503 with `Retry-After`, never
/// 500, and writes are taken again once it takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_turns_read_only_is_answered_503_and_recovered_from() {
    let app = e2e::spawn_app_without_workers().await;
    app.place_ok("ro").await;
    set_read_only(&app.db, true).await;
    for _ in 0..5 {
        let reply = app
            .place("ro", json!({"coffee_name": "latte", "coffee_price": 4500}))
            .await;
        assert_eq!(reply.status, 503, "a read-only primary: {}", reply.text);
        assert!(reply.header("retry-after").is_some(), "{}", reply.text);
    }
    set_read_only(&app.db, false).await;
    eventually(Duration::from_secs(15), "writes taken again", || async {
        let reply = app
            .place("ro", json!({"coffee_name": "latte", "coffee_price": 4500}))
            .await;
        (reply.status == 201).then_some(())
    })
    .await;
}

/// A load balancer in front of the database with no node behind it (HAProxy
/// while no node passes its check, during a failover) accepts a connection
/// and closes it before any byte of PostgreSQL's protocol: the driver calls
/// that "unexpected response from SSLRequest". That is the database being
/// unavailable, answered 503 with `Retry-After`; it was a 500 (seen in the
/// lab, while the primary was cut off). Then the service recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_with_no_database_behind_it_is_answered_503_and_recovered_from() {
    let db = e2e::TestDb::create().await;
    let mut direct = reqwest::Url::parse(&db.url).expect("the database's URL");
    let upstream = format!(
        "{}:{}",
        direct.host_str().expect("a host"),
        direct.port().unwrap_or(5432)
    );
    let proxy = e2e::cutting_proxy::CuttingProxy::start(upstream)
        .await
        .expect("a balancer in front of the database");
    let (host, port) = proxy.address().split_once(':').expect("host:port");
    direct.set_host(Some(host)).expect("host");
    direct
        .set_port(Some(port.parse().expect("a port")))
        .expect("port");
    let pools = Pools::connect(direct.as_str(), Budgets::default())
        .await
        .expect("connect through the balancer");
    let served = Served::start(&pools).await;
    let place = || served.place();
    assert_eq!(place().await.expect("place").status(), 201);

    proxy.turn_away();
    // The first request meets its pooled connection cut; the next ones make
    // new connections, which the balancer accepts and closes.
    for i in 0..3 {
        let started = Instant::now();
        let reply = place().await.expect("an answer, not a hang");
        assert_refused_while_down(reply, started.elapsed(), i == 0).await;
    }

    proxy.let_in();
    eventually(Duration::from_secs(30), "orders accepted again", || async {
        (place().await.ok()?.status() == 201).then_some(())
    })
    .await;
    served.stop().await;
    pools.close().await;
}
