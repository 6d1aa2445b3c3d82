//! Command line and configuration: environment variables (12-factor), with
//! flags to override them.

mod access;
mod kafka;
mod operators;

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

pub use access::{check_issuer, AccessArgs};
pub use kafka::{KafkaArgs, KafkaSecurityArgs};
pub use operators::{LogClockCmd, MenuCmd, ProjectionsCmd, StoresCmd};

use projections::registry::{self, Source};
use projections::runner::WorkerOptions;

use crate::app::{self, ServeConfig};
use crate::db::Budgets;
use crate::http::Apis;
use crate::relay::RelayOptions;

/// The coffee-order system: API, workers and operators' tools in one binary.
#[derive(Debug, Parser)]
#[command(name = "orders", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub leadership: LeadershipArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<infra::secret::Secret>,
    /// Connections for the API's writes (appends, idempotency records).
    #[arg(long, env = "DB_WRITE_CONNECTIONS", default_value_t = Budgets::DEFAULT_WRITES, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_write_connections: u32,
    /// Connections for the API's reads (lists, order views, the delivery
    /// view, the read-your-writes watcher, /readyz, /metrics).
    #[arg(long, env = "DB_READ_CONNECTIONS", default_value_t = Budgets::DEFAULT_READS, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_read_connections: u32,
    /// Connections for the relay and the log-fed projection workers.
    #[arg(long, env = "DB_WORKER_CONNECTIONS", default_value_t = Budgets::DEFAULT_WORKERS, global = true,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub db_worker_connections: u32,
    /// Seconds a service (`serve`, `work`, `all`, …) waits at start for a
    /// database that does not answer yet or cancels its migration (a
    /// restart, a failover), trying again meanwhile, before it gives up; 0:
    /// give up at once. Operators' commands never wait.
    #[arg(long, env = "DB_START_WAIT_SECS", default_value_t = 60, global = true,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub db_start_wait_secs: u64,
    /// Connections for the delivery consumer's batch commits (any number of
    /// partitions share them).
    #[arg(long, env = "DB_CONSUMER_CONNECTIONS", default_value_t = Budgets::DEFAULT_CONSUMER, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_consumer_connections: u32,
}

#[derive(Debug, Args)]
pub struct LeadershipArgs {
    /// Seconds a relay's or projection worker's lease lives without renewal
    /// (renewed every third of it): a frozen or cut-off leader is replaced
    /// within this plus a second.
    #[arg(long, env = "LEASE_TTL_SECS", default_value_t = 5, global = true,
          value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_ttl_secs: u64,
}

impl LeadershipArgs {
    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl_secs)
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Everything in one process: the HTTP APIs, the outbox relay and the
    /// projection workers.
    All(AllArgs),
    /// The background half of `all`: the outbox relay and every projection
    /// worker, no HTTP (run API and worker processes separately, several of
    /// each).
    Work(WorkerArgs),
    /// Run the outbox relay only (publishes committed events to Kafka).
    Relay,
    /// Serve the HTTP APIs only (migrates the database first).
    Serve(ServeArgs),
    /// Run projection workers only (every known projection when none is named).
    Project(ProjectArgs),
    /// Operators' tools: list, status, replay, rebuild.
    #[command(subcommand)]
    Projections(ProjectionsCmd),
    /// Fold the event log and compare it, row by row, with the read models;
    /// prints the differences and exits non-zero when there are any.
    Verify {
        /// Projections to verify (all when none given).
        names: Vec<String>,
    },
    /// The menu customers order from (GET /menu): show it, set it from a
    /// JSON file, mark a drink sold out or on sale again, clear it.
    #[command(subcommand)]
    Menu(MenuCmd),
    /// The chain's stores (GET /stores): show them, set them from a JSON
    /// file (names, open or closed).
    #[command(subcommand)]
    Stores(StoresCmd),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// The log's clock: whether new events sort after every stored one
    /// (they do not after a restore into another cluster), and its repair.
    #[command(subcommand)]
    LogClock(LogClockCmd),
}

impl Cmd {
    /// What a long-running command runs, from its settings (`None`: an
    /// operator's one-shot command).
    pub fn process(
        &self,
        kafka: &KafkaArgs,
        lease_ttl: std::time::Duration,
    ) -> anyhow::Result<Option<app::Config>> {
        Ok(Some(match self {
            Cmd::Migrate
            | Cmd::Projections(_)
            | Cmd::Verify { .. }
            | Cmd::LogClock(_)
            | Cmd::Menu(_)
            | Cmd::Stores(_) => return Ok(None),
            Cmd::Serve(args) => app::Config {
                serve: Some(args.config()?),
                kafka: kafka.source()?,
                ..app::Config::default()
            },
            Cmd::Relay => app::Config {
                relay: Some(RelayOptions::new(
                    &kafka.require("orders relay")?,
                    lease_ttl,
                )),
                ..app::Config::default()
            },
            Cmd::Project(args) => {
                let names = registry::find_all(&args.names)?;
                let kafka = match names.iter().find(|p| p.source() == Source::Topic) {
                    Some(p) => Some(kafka.require(&format!("the {p} projection"))?),
                    None => None,
                };
                app::Config {
                    projections: names,
                    worker: args.worker.options(lease_ttl),
                    kafka,
                    ..app::Config::default()
                }
            }
            Cmd::Work(args) => {
                let kafka = kafka.require("orders work")?;
                app::Config {
                    relay: Some(RelayOptions::new(&kafka, lease_ttl)),
                    projections: registry::ALL.to_vec(),
                    worker: args.options(lease_ttl),
                    kafka: Some(kafka),
                    ..app::Config::default()
                }
            }
            Cmd::All(args) => {
                let kafka = kafka.require("orders all")?;
                app::Config {
                    serve: Some(args.serve.config()?),
                    relay: Some(RelayOptions::new(&kafka, lease_ttl)),
                    projections: registry::ALL.to_vec(),
                    worker: args.worker.options(lease_ttl),
                    kafka: Some(kafka),
                }
            }
        }))
    }
}

#[derive(Debug, Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Projections to run (see `orders projections list`); all when none given.
    pub names: Vec<String>,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Events a projection worker applies per transaction.
    #[arg(long, env = "PROJECTION_BATCH_SIZE", default_value_t = WorkerOptions::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

impl WorkerArgs {
    pub fn options(&self, lease_ttl: std::time::Duration) -> WorkerOptions {
        WorkerOptions {
            batch_size: self.batch_size,
            lease_ttl,
            ..WorkerOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Which APIs to serve.
    #[arg(long, value_enum, default_value_t = Apis::All)]
    pub api: Apis,
    /// Serve the whole product under this path (`/coffee`): every route,
    /// the pages' links, redirects, cookies and the OpenAPI `servers` begin
    /// with it. Default: none (paths as API.md writes them).
    #[arg(long, env = "PATH_PREFIX", default_value = "", value_parser = path_prefix)]
    pub path_prefix: crate::http::PathPrefix,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = crate::http::Shared::DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Seconds after which a request still running is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = crate::http::Shared::DEFAULT_REQUEST_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_secs: u64,
    /// Live streams (`/events/…`) one signed-in user may have open at once;
    /// more are answered 429 with `Retry-After`.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = crate::http::pages::feed::Caps::DEFAULT_PER_USER as u32,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams_per_user: u32,
    /// Live streams open at once in this process; more are answered 503
    /// with `Retry-After`.
    #[arg(long, env = "MAX_STREAMS", default_value_t = crate::http::pages::feed::Caps::DEFAULT_TOTAL as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams: u32,
    /// Serve HTTPS with this certificate chain (PEM; reloaded when it
    /// changes). Without it the API speaks plain HTTP: terminate TLS at a
    /// proxy in front of it.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// The shop's clock, as an offset from UTC (`+09:00`): pickup numbers
    /// start again at 1 at its midnight.
    #[arg(long, env = "PICKUP_UTC_OFFSET", default_value = "+00:00", value_parser = utc_offset)]
    pub pickup_utc_offset: time::UtcOffset,
    /// The OpenID Connect client the pages sign in with (authorization
    /// code + PKCE, at the OIDC_ISSUER). Without it the pages are served but
    /// browser sign-in is off.
    #[arg(long, env = "OIDC_WEB_CLIENT_ID", requires = "oidc_web_client_secret")]
    pub oidc_web_client_id: Option<String>,
    /// That client's secret.
    #[arg(long, env = "OIDC_WEB_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_web_client_secret: Option<infra::secret::Secret>,
    /// Where browsers reach this service (`https://orders.example.com`): the
    /// sign-in's callback is PUBLIC_URL/auth/callback, and an https URL makes
    /// the session cookie Secure. Default: the address it listens on.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub access: AccessArgs,
}

fn path_prefix(text: &str) -> Result<crate::http::PathPrefix, String> {
    crate::http::PathPrefix::parse(text)
}

/// `+09:00`, `-05:30`, `+00:00`.
fn utc_offset(text: &str) -> Result<time::UtcOffset, String> {
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    time::UtcOffset::parse(text.trim(), &format)
        .map_err(|_| "an offset from UTC such as +09:00 or -05:30".to_owned())
}

impl ServeArgs {
    fn web(&self) -> anyhow::Result<Option<crate::http::pages::WebConfig>> {
        let public_url = match self.public_url.as_deref().map(str::trim) {
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("PUBLIC_URL {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    anyhow::bail!("PUBLIC_URL must be an http or https URL such as https://orders.example.com");
                }
                // The prefix is PATH_PREFIX's to say; a PUBLIC_URL that
                // names it too must name the same.
                let path = parsed.path().trim_end_matches('/');
                if !path.is_empty() && path != self.path_prefix.as_str() {
                    anyhow::bail!(
                        "PUBLIC_URL's path {path:?} is not PATH_PREFIX ({:?}): give PUBLIC_URL as the origin (https://orders.example.com) and the path as PATH_PREFIX",
                        self.path_prefix.as_str()
                    );
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    anyhow::bail!("PUBLIC_URL must not have a query or fragment");
                }
                Some(parsed.origin().ascii_serialization())
            }
            None => None,
        };
        Ok(
            match (&self.oidc_web_client_id, &self.oidc_web_client_secret) {
                (Some(id), Some(secret)) => Some(crate::http::pages::WebConfig {
                    client_id: id.clone(),
                    client_secret: secret.clone(),
                    public_url,
                }),
                _ => None,
            },
        )
    }

    pub fn config(&self) -> anyhow::Result<ServeConfig> {
        Ok(ServeConfig {
            apis: self.api,
            path_prefix: self.path_prefix.clone(),
            max_in_flight: usize::try_from(self.max_in_flight).unwrap_or(usize::MAX),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            auth: self.access.auth()?,
            rate_limits: self.access.limits(),
            peers: self.access.peers(),
            max_streams_per_user: usize::try_from(self.max_streams_per_user).unwrap_or(usize::MAX),
            max_streams: usize::try_from(self.max_streams).unwrap_or(usize::MAX),
            pickup_offset: self.pickup_utc_offset,
            web: self.web()?,
            tls: match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            ..ServeConfig::on(self.http_addr)
        })
    }
}

impl DbArgs {
    pub fn budgets(&self) -> Budgets {
        Budgets {
            writes: self.db_write_connections,
            reads: self.db_read_connections,
            workers: self.db_worker_connections,
            consumer: self.db_consumer_connections,
        }
    }

    pub fn url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(infra::secret::Secret::expose)
            .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is not set (or pass --database-url)"))
    }
}

#[cfg(test)]
mod secrets_tests {
    use clap::Parser;

    #[test]
    fn no_configuration_prints_a_secret() {
        let cli = super::Cli::try_parse_from([
            "orders",
            "--database-url",
            "postgres://orders:db-hunter2@db.example/orders",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-256",
            "--kafka-sasl-username",
            "orders",
            "--kafka-sasl-password",
            "kafka-hunter2",
            "serve",
            "--oidc-issuer",
            "https://login.example.com",
            "--oidc-web-client-id",
            "orders-web",
            "--oidc-web-client-secret",
            "web-hunter2",
        ])
        .expect("the command line parses");
        let mut printed = vec![format!("{cli:?}")];
        if let super::Cmd::Serve(serve) = &cli.command {
            printed.push(format!("{:?}", serve.config().expect("a serve config")));
        }
        printed.push(format!(
            "{:?}",
            cli.kafka.security.security().expect("the Kafka security")
        ));
        for text in &printed {
            for secret in ["db-hunter2", "kafka-hunter2", "web-hunter2"] {
                assert!(!text.contains(secret), "{secret} printed in {text}");
            }
        }
        assert_eq!(
            cli.db.url().expect("a database URL"),
            "postgres://orders:db-hunter2@db.example/orders"
        );
    }
}

#[cfg(test)]
mod prefix_tests {
    use clap::Parser;

    fn serve(args: &[&str]) -> anyhow::Result<crate::app::ServeConfig> {
        let base = [
            "orders",
            "serve",
            "--oidc-issuer",
            "https://login.example.com",
            "--oidc-web-client-id",
            "orders-web",
            "--oidc-web-client-secret",
            "web-secret",
        ];
        let cli = super::Cli::try_parse_from(base.iter().chain(args))?;
        match &cli.command {
            super::Cmd::Serve(serve) => serve.config(),
            _ => anyhow::bail!("not serve"),
        }
    }

    #[test]
    fn the_prefix_is_one_setting_and_public_url_may_only_repeat_it() {
        let none = serve(&[]).expect("no prefix");
        assert!(none.path_prefix.is_empty());
        let coffee = serve(&["--path-prefix", "/coffee/"]).expect("a prefix");
        assert_eq!(coffee.path_prefix.as_str(), "/coffee");
        for (url, origin) in [
            ("https://shop.example", "https://shop.example"),
            ("https://shop.example/coffee", "https://shop.example"),
            (
                "https://shop.example:8443/coffee/",
                "https://shop.example:8443",
            ),
        ] {
            let config = serve(&["--path-prefix", "/coffee", "--public-url", url]).expect(url);
            let web = config.web.expect("the pages' sign-in");
            assert_eq!(web.public_url.as_deref(), Some(origin), "{url}");
        }
        for bad in [
            "https://shop.example/tea",
            "https://shop.example/coffee?x=1",
        ] {
            assert!(
                serve(&["--path-prefix", "/coffee", "--public-url", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(serve(&["--public-url", "https://shop.example/coffee"]).is_err());
        assert!(serve(&["--path-prefix", "coffee"]).is_err());
        assert!(serve(&["--path-prefix", "/../admin"]).is_err());
    }
}
