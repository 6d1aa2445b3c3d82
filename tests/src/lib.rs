//! Test harness for the end-to-end tests: every test gets its own fresh
//! database (migrated), the real HTTP server on an ephemeral port, and a typed
//! client. Postgres must be reachable through `DATABASE_URL` (`just test`
//! makes it so); a test without it fails loudly, it never skips.

pub mod processes;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use projections::infra::kafka::KafkaSource;
use projections::ProjectionName;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use services::app::{self, App, ServeConfig};
use services::http::Apis;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The server's `DATABASE_URL`, or a panic that says how to get one.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with `just test`, which starts PostgreSQL first")
    })
}

/// A fresh, migrated database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let base =
            PgConnectOptions::from_str(&database_url()).expect("DATABASE_URL is not a valid URL");
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = base
            .clone()
            .database("postgres")
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at DATABASE_URL ({e}); run `just test`")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let options = base.database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(40)
            .connect_with(options)
            .await
            .expect("connect to the test database");
        services::db::migrate(&pool)
            .await
            .expect("migrate the test database");
        TestDb { name, url, pool }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Rows in the event log.
    pub async fn events(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    /// Rows waiting in the outbox.
    pub async fn outbox(&self) -> i64 {
        self.count("SELECT count(*) FROM outbox").await
    }
}

/// A passing test's database is dropped when the test ends (a hundred tests'
/// databases add up on a CI machine short of disk); a failing test's is kept
/// for the post-mortem, as is every one when `TEST_KEEP_DATABASES` is set.
/// `just test` drops the kept ones at its next start.
impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TEST_KEEP_DATABASES").is_some() {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a short-lived thread with its own runtime does the work.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = PgConnectOptions::from_str(&database_url()).ok()?;
                let mut conn = admin.database("postgres").connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        // Best effort: a database left behind is dropped by the next run.
        let _ = dropper.join();
    }
}

/// The application, served on 127.0.0.1 at an ephemeral port.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    shutdown: CancellationToken,
    /// The process's parts, run by the production assembly (`App::run`).
    running: Option<JoinHandle<anyhow::Result<()>>>,
    pub kafka: Option<KafkaSource>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Apis::All).await
}

pub async fn spawn_app_with(apis: Apis) -> TestApp {
    spawn_app_opts(AppOptions {
        apis,
        ..AppOptions::default()
    })
    .await
}

/// How a test's application is set up.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub apis: Apis,
    /// Run the projection workers beside the API, as `orders all` does.
    pub workers: bool,
    /// How long read-your-writes reads wait for the read model.
    pub read_wait: Duration,
    /// With Kafka: the relay and the delivery projection run too, on this
    /// topic (see [`test_kafka`]).
    pub kafka: Option<KafkaSource>,
    /// With Kafka: run the relay in-process (tests of relay processes say no).
    pub relay: bool,
    /// The edge limits (`None`: the server's defaults).
    pub max_in_flight: Option<usize>,
    pub request_timeout: Option<Duration>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            apis: Apis::All,
            workers: true,
            read_wait: ServeConfig::DEFAULT_READ_WAIT,
            kafka: None,
            relay: true,
            max_in_flight: None,
            request_timeout: None,
        }
    }
}

/// The API alone, no projection workers: the test runs (or withholds) them
/// itself.
pub async fn spawn_app_without_workers() -> TestApp {
    spawn_app_opts(AppOptions {
        workers: false,
        ..AppOptions::default()
    })
    .await
}

/// The process `opts` describe, built and run by the production assembly
/// ([`services::app::App`]) with the production connection budgets, on the
/// test's own database and an ephemeral port. Only the pace differs: workers
/// poll every 50 ms and the relay every 100 ms, so tests run fast.
pub async fn spawn_app_opts(opts: AppOptions) -> TestApp {
    let db = TestDb::create().await;
    let mut serve = ServeConfig::on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    serve.apis = opts.apis;
    serve.read_wait = opts.read_wait;
    if let Some(n) = opts.max_in_flight {
        serve.max_in_flight = n;
    }
    if let Some(t) = opts.request_timeout {
        serve.request_timeout = t;
    }
    let projections = match (opts.workers, &opts.kafka) {
        (false, _) => vec![],
        (true, None) => vec![ProjectionName::Orders],
        (true, Some(_)) => ProjectionName::ALL.to_vec(),
    };
    let config = app::Config {
        serve: Some(serve),
        relay: opts
            .kafka
            .as_ref()
            .filter(|_| opts.relay)
            .map(relay_options),
        projections,
        worker: projections::runner::WorkerOptions {
            poll_interval: Duration::from_millis(50),
            ..Default::default()
        },
        kafka: opts.kafka.clone(),
    };
    let pools = services::db::Pools::connect(&db.url, services::db::Budgets::default())
        .await
        .expect("the application's pools");
    let app = App::build(pools, config)
        .await
        .expect("build the application");
    let port = app.port().expect("it serves HTTP");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        db,
        shutdown,
        running: Some(running),
        kafka: opts.kafka,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "errors are problem+json"
        );
        let body = self.json();
        for member in ["type", "title", "status", "detail"] {
            assert!(
                body.get(member).is_some(),
                "problem lacks {member:?}: {body}"
            );
        }
        assert_eq!(body["status"], status);
        body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(body);
        }
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_str(name).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        self.send(req).await
    }

    /// Sends a raw body with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("the server answers");
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("a readable body"),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn place(&self, user: &str, body: Value) -> Reply {
        self.request(
            Method::POST,
            &format!("/order-ms/{user}/orders"),
            Some(&body),
            &[],
        )
        .await
    }

    /// Places a valid order and returns its id.
    pub async fn place_ok(&self, user: &str) -> String {
        let reply = self
            .place(
                user,
                serde_json::json!({"coffee_name": "americano", "coffee_price": "4500", "coffee_qty": "2"}),
            )
            .await;
        reply.ok(201)["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned()
    }

    pub async fn order(&self, user: &str, order_id: &str) -> Reply {
        self.get(&format!("/order-ms/{user}/orders/{order_id}"))
            .await
    }

    pub async fn cancel(&self, user: &str, order_id: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(
            Method::POST,
            &format!("/order-ms/{user}/orders/{order_id}/cancel"),
            None,
            headers,
        )
        .await
    }

    pub async fn move_to(
        &self,
        user: &str,
        order_id: &str,
        status: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = serde_json::json!({ "status": status });
        self.request(
            Method::POST,
            &format!("/delivery-ms/{user}/{order_id}/status"),
            Some(&body),
            headers,
        )
        .await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the application task")
                .expect("the application stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `orders all` as a process, as deployed (the production assembly and its
/// connection budgets), with the test's own database and topic, and `env`
/// on top (`DB_READ_CONNECTIONS`, `KAFKA_PARTITIONS`, …). The returned app
/// talks to it over HTTP; the child is killed when dropped.
pub async fn spawn_orders_all(env: &[(&str, &str)]) -> (TestApp, tokio::process::Child) {
    let db = TestDb::create().await;
    let kafka = test_kafka();
    let port = processes::free_port().expect("a free port");
    let mut cmd = tokio::process::Command::new(orders_bin());
    cmd.arg("all")
        .env("DATABASE_URL", &db.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_BROKERS", kafka.brokers.join(","))
        .env("KAFKA_TOPIC", &kafka.topic)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start orders all");
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        db,
        shutdown: CancellationToken::new(),
        running: None,
        kafka: Some(kafka),
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

/// The Kafka brokers `just test` started (`KAFKA_BROKERS`), with a topic of
/// this test's own.
pub fn test_kafka() -> KafkaSource {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("KAFKA_BROKERS is not set: run the tests with `just test`, which starts a broker")
    });
    KafkaSource {
        brokers: brokers.split(',').map(str::to_owned).collect(),
        topic: format!("test-{}", uuid::Uuid::new_v4().simple()),
        partitions: 3,
        max_request_bytes: KafkaSource::DEFAULT_MAX_REQUEST_BYTES,
        replication_factor: 1,
        retention_ms: -1,
    }
}

/// The lease of projection `name`, for a test that steps the projection
/// itself (as its worker would, under the worker's lease).
pub async fn projection_lease(pool: &PgPool, name: &str) -> projections::infra::lease::Lease {
    projections::infra::lease::Lease::try_acquire(
        pool,
        &projections::infra::lease::projection(name),
        projections::infra::lease::DEFAULT_TTL,
    )
    .await
    .expect("take the lease")
    .expect("no worker holds the lease")
}

/// The relay's settings for tests: small polls, so tests run fast.
pub fn relay_options(kafka: &KafkaSource) -> services::relay::RelayOptions {
    services::relay::RelayOptions {
        poll_interval: Duration::from_millis(100),
        ..services::relay::RelayOptions::new(kafka, projections::infra::lease::DEFAULT_TTL)
    }
}

/// One record read back from the topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub envelope: domain::EventEnvelope,
}

/// Every record of the topic, partition by partition, in offset order.
pub async fn read_topic(kafka: &KafkaSource) -> Vec<TopicRecord> {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = projections::infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    let topic = client
        .list_topics()
        .await
        .expect("list topics")
        .into_iter()
        .find(|t| t.name == kafka.topic)
        .expect("the topic exists");
    let mut out = Vec::new();
    for p in topic.partitions {
        let pc = client
            .partition_client(kafka.topic.clone(), p, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let mut offset = 0;
        loop {
            let (records, high_watermark) = pc
                .fetch_records(offset, 1..4_000_000, 100)
                .await
                .expect("fetch");
            for r in &records {
                out.push(TopicRecord {
                    partition: p,
                    offset: r.offset,
                    key: String::from_utf8(r.record.key.clone().unwrap_or_default())
                        .expect("utf-8 key"),
                    headers: r
                        .record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                    envelope: serde_json::from_slice(r.record.value.as_deref().unwrap_or_default())
                        .expect("a JSON envelope"),
                });
            }
            match records.last() {
                Some(last) => offset = last.offset + 1,
                None => break,
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    out
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payload of an `OrderPlaced` event, for tests that write the log directly.
pub fn placed_payload(
    order_id: uuid::Uuid,
    user_id: &str,
    name: &str,
    price: u64,
    qty: u64,
) -> Value {
    let event = domain::Event::OrderPlaced(domain::OrderPlaced {
        order_id: domain::OrderId::try_from(order_id).expect("a v7 order id"),
        user_id: domain::UserId::parse(user_id).expect("a valid user id"),
        coffee_name: domain::CoffeeName::parse(name).expect("a valid coffee name"),
        coffee_price: domain::Price::from_json(&Value::from(price)).expect("a valid price"),
        coffee_qty: domain::Quantity::from_json(Some(&Value::from(qty))).expect("a valid quantity"),
        total_price: domain::Won(price * qty),
        options: domain::DrinkOptions::default(),
    });
    event.payload()
}

/// An `OrderPlaced` payload exactly as the previous build wrote it (schema
/// version 1: no options), for tests of schema evolution.
pub fn placed_payload_v1(
    order_id: uuid::Uuid,
    user_id: &str,
    name: &str,
    price: u64,
    qty: u64,
) -> Value {
    serde_json::json!({
        "order_id": order_id,
        "user_id": user_id,
        "coffee_name": name,
        "coffee_price": price,
        "coffee_qty": qty,
        "total_price": price * qty,
    })
}

/// The active checkpoint of a projection: (position, events applied).
pub async fn checkpoint(pool: &PgPool, name: &str) -> projections::checkpoint::Checkpoint {
    let mut conn = pool.acquire().await.expect("a connection");
    projections::checkpoint::load_active(&mut conn, name)
        .await
        .expect("the active checkpoint")
}

/// Waits until the projection `name` has applied every committed event
/// (its checkpoint is at the head of the log), or panics after `timeout`.
pub async fn wait_caught_up(pool: &PgPool, name: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut conn = pool.acquire().await.expect("a connection");
        let head = projections::log::head(&mut conn)
            .await
            .expect("the log head");
        let at = checkpoint(pool, name).await.cursor;
        if head.is_none_or(|h| at >= h) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projection {name} did not catch up within {timeout:?}: at {at:?}, head {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The order read model (published view) and the fold of the log, both by
/// order id.
pub async fn order_model_and_fold(
    pool: &PgPool,
) -> (Vec<projections::OrderRow>, Vec<projections::OrderRow>) {
    let model = projections::order_view::all_rows(pool, None)
        .await
        .expect("read the order read model");
    let mut conn = pool.acquire().await.expect("a connection");
    let accounted = projections::held::accounted(&mut conn, projections::order_view::NAME)
        .await
        .expect("what the projection holds back");
    let fold = projections::order_view::fold_log(&mut conn, false, &accounted)
        .await
        .expect("fold the log");
    (model, fold.rows)
}

/// The `orders` binary, for tests that need a real process (signals, crashes).
/// `just test` builds it; `ORDERS_BIN` overrides where it is looked for.
pub fn orders_bin() -> PathBuf {
    let path = std::env::var_os("ORDERS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // A test executable lives in `<target>/<profile>/deps/`; the binary
            // one level up. This holds whatever CARGO_TARGET_DIR says.
            let exe = std::env::current_exe().expect("the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("the test executable lives in <target>/<profile>/deps");
            profile_dir.join("orders")
        });
    assert!(
        path.exists(),
        "the orders binary is missing at {}: run `cargo build -p services` (or `just test`)",
        path.display()
    );
    path
}

/// Writes one event row straight into the log, as another build (or a
/// previous one) would have: any type, schema version and payload. With
/// `outbox`, the relay publishes it too. Returns its position and event id.
pub async fn insert_event(
    pool: &PgPool,
    stream: uuid::Uuid,
    version: i32,
    event_type: &str,
    schema_version: i16,
    payload: Value,
    outbox: bool,
) -> (i64, uuid::Uuid) {
    let event_id = uuid::Uuid::now_v7();
    let position: i64 = sqlx::query_scalar(
        "WITH e AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING position),
         o AS (INSERT INTO outbox (position, stream_id) SELECT position, $1 FROM e WHERE $7)
         SELECT position FROM e",
    )
    .bind(stream)
    .bind(version)
    .bind(event_id)
    .bind(event_type)
    .bind(schema_version)
    .bind(payload)
    .bind(outbox)
    .fetch_one(pool)
    .await
    .expect("insert an event row");
    (position, event_id)
}

/// Runs `orders ARGS…` against `db` (and `kafka`, when given) to completion.
pub async fn run_orders(
    db: &TestDb,
    kafka: Option<&KafkaSource>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(orders_bin());
    cmd.args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn");
    if let Some(k) = kafka {
        cmd.env("KAFKA_BROKERS", k.brokers.join(","))
            .env("KAFKA_TOPIC", &k.topic);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("orders finishes within 60 s")
        .expect("run orders");
    output
}

/// A relay of its own for a test that starts and stops it (a relay that
/// restarts, one started after a backlog was written).
pub struct TestRelay {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestRelay {
    pub fn start(pool: &PgPool, kafka: &KafkaSource) -> TestRelay {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(services::relay::run(
            pool.clone(),
            relay_options(kafka),
            shutdown.clone(),
        ));
        TestRelay { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the relay stops");
    }
}

/// Produces one raw record to a partition of the test's topic, as a foreign
/// producer (or a relay of another history) would.
pub async fn produce_raw(kafka: &KafkaSource, partition: i32, key: &[u8], value: Vec<u8>) {
    use rskafka::client::partition::{Compression, UnknownTopicHandling};
    let client = projections::infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    let timestamp =
        rskafka::chrono::TimeZone::timestamp_millis_opt(&rskafka::chrono::Utc, 1_790_000_000_000)
            .single()
            .expect("a timestamp");
    client
        .partition_client(kafka.topic.clone(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("a partition client")
        .produce(
            vec![rskafka::record::Record {
                key: Some(key.to_vec()),
                value: Some(value),
                headers: Default::default(),
                timestamp,
            }],
            Compression::NoCompression,
        )
        .await
        .expect("produce");
}
