//! The application under test, built by the production assembly, and a
//! typed HTTP client for it.

mod order_api;
mod orders_all;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infra::kafka::KafkaSource;
use projections::registry;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use services::app::{self, App, ServeConfig};
use services::http::Apis;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::callers::{As, Auth};
use crate::oidc::{Provider, AUDIENCE};
pub use crate::reply::Reply;
use crate::{relay_options, TestDb};
pub use orders_all::{spawn_orders_all, spawn_orders_all_on};

/// The application, served on 127.0.0.1 at an ephemeral port.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    shutdown: CancellationToken,
    /// The process's parts, run by the production assembly (`App::run`).
    running: Option<JoinHandle<anyhow::Result<()>>>,
    pub kafka: Option<KafkaSource>,
    /// The provider whose tokens the app accepts (`None`: authentication off).
    pub provider: Option<Arc<Provider>>,
    tokens: Mutex<HashMap<(String, Option<&'static str>), String>>,
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
    /// topic (see [`test_kafka`](crate::test_kafka)).
    pub kafka: Option<KafkaSource>,
    /// With Kafka: run the relay in-process (tests of relay processes say no).
    pub relay: bool,
    /// The edge limits (`None`: the server's defaults).
    pub max_in_flight: Option<usize>,
    pub request_timeout: Option<Duration>,
    pub auth: Auth,
    /// Rate limits (none by default: tests send many requests as one user).
    pub rate_limits: services::http::access::RateLimitConfig,
    /// How often the issuer's keys are fetched again (`None`: the default).
    pub keys_refresh: Option<Duration>,
    /// Serve everything under this path (`PATH_PREFIX`); the app's `base`
    /// then ends with it, so the tests' paths are as API.md writes them.
    pub path_prefix: Option<&'static str>,
    /// A PostgreSQL cluster of the test's own ([`TestDb::alone`]): for a
    /// test that holds the transaction horizon.
    pub alone: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            apis: Apis::All,
            workers: true,
            read_wait: services::http::Shared::DEFAULT_READ_WAIT,
            kafka: None,
            relay: true,
            max_in_flight: None,
            request_timeout: None,
            auth: Auth::Shared,
            rate_limits: Default::default(),
            keys_refresh: None,
            path_prefix: None,
            alone: false,
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
/// Tokens from `provider` (none: authentication off), refreshing its keys
/// every `keys_refresh`; the pages sign in through it too (its
/// `orders-web` client accepts a callback on any loopback port).
fn sign_in_through(
    serve: &mut ServeConfig,
    provider: Option<&Provider>,
    keys_refresh: Option<Duration>,
) {
    serve.auth = provider.map(|p| {
        let mut config = services::auth::AuthConfig::new(p.issuer.clone(), AUDIENCE);
        config.ca = p.ca.clone();
        if let Some(every) = keys_refresh {
            config.refresh = every;
        }
        config
    });
    serve.web = provider.map(|_| services::http::pages::WebConfig {
        client_id: crate::oidc::WEB_CLIENT.0.to_owned(),
        client_secret: crate::oidc::WEB_CLIENT.1.into(),
        public_url: None,
    });
}

pub async fn spawn_app_opts(opts: AppOptions) -> TestApp {
    let db = if opts.alone {
        TestDb::alone().await
    } else {
        TestDb::create().await
    };
    let mut serve = ServeConfig::on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    serve.apis = opts.apis;
    serve.read_wait = opts.read_wait;
    if let Some(n) = opts.max_in_flight {
        serve.max_in_flight = n;
    }
    if let Some(t) = opts.request_timeout {
        serve.request_timeout = t;
    }
    let provider = match opts.auth {
        Auth::Shared => Some(Provider::shared()),
        Auth::Own(provider) => Some(provider),
        Auth::Off => None,
    };
    sign_in_through(&mut serve, provider.as_deref(), opts.keys_refresh);
    serve.rate_limits = opts.rate_limits;
    if let Some(prefix) = opts.path_prefix {
        serve.path_prefix = services::http::PathPrefix::parse(prefix).expect("a valid prefix");
    }
    let projections = match (opts.workers, &opts.kafka) {
        (false, _) => vec![],
        (true, None) => vec![&projections::orders::REGISTRATION as projections::Registered],
        (true, Some(_)) => registry::ALL.to_vec(),
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
        base: format!(
            "http://127.0.0.1:{port}{}",
            opts.path_prefix.unwrap_or_default()
        ),
        http: http_client(),
        db,
        shutdown,
        running: Some(running),
        kafka: opts.kafka,
        provider,
        tokens: Mutex::default(),
    }
}

impl TestApp {
    /// A request sent as the caller its path implies ([`As::for_path`]).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.request_as(As::for_path(path), method, path, body, headers)
            .await
    }

    /// An access token for `user` (with `role`) from the app's provider,
    /// fetched once per user and role.
    pub async fn token(&self, user: &str, role: Option<&'static str>) -> String {
        let key = (user.to_owned(), role);
        if let Some(token) = self.tokens.lock().expect("tokens").get(&key) {
            return token.clone();
        }
        let provider = self.provider.as_ref().expect("the app has a provider");
        let token = provider.token(user, role).await;
        self.tokens
            .lock()
            .expect("tokens")
            .insert(key, token.clone());
        token
    }

    /// The `Authorization` header `who` sends (none without a provider).
    pub async fn authorization(&self, who: &As) -> Option<String> {
        self.provider.as_ref()?;
        let token = match who {
            As::Nobody => return None,
            As::Header(value) => return Some(value.clone()),
            As::Customer(user) => self.token(user, None).await,
            As::Staff => self.token("barista", Some("staff")).await,
            As::Operator => self.token("ops", Some("operator")).await,
        };
        Some(format!("Bearer {token}"))
    }

    /// `GET path` with `Authorization: Bearer {token}`, whatever the token.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.request_as(
            As::Header(format!("Bearer {token}")),
            Method::GET,
            path,
            None,
            &[],
        )
        .await
    }

    /// A request sent as `who`.
    pub async fn request_as(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(value) = self.authorization(&who).await {
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
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
        if let Some(value) = self.authorization(&As::for_path(path)).await {
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
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

/// The tests' HTTP client: a request that hangs fails the test in 30 s.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}
