//! Command line and configuration: environment variables (12-factor), with
//! flags to override them.

mod access;
mod kafka;
mod operators;
mod serve;

use clap::{Args, Parser, Subcommand};

pub use access::{check_issuer, AccessArgs};
pub use kafka::{KafkaArgs, KafkaSecurityArgs};
pub use operators::{LogClockCmd, MenuCmd, ProjectionsCmd, SetFile, Show, StoresCmd};
pub use serve::ServeArgs;

use projections::registry::{self, Source};
use projections::runner::WorkerOptions;

use crate::app;
use crate::db::Budgets;
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
        let global = [
            "orders",
            "--database-url",
            "postgres://orders:db-hunter2@db.example/orders",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-256",
            "--kafka-sasl-username",
            "orders",
            "--kafka-sasl-password",
            "kafka-hunter2",
        ];
        let serve = super::serve::serve_with_pages("web-hunter2");
        let cli = super::Cli::try_parse_from(global.iter().chain(serve.iter()))
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
