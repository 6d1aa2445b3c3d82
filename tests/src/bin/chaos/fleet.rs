//! What a chaos run stands on ([`Ground`]: its own PostgreSQL, broker,
//! identity provider, the services' environment) and the services under
//! test ([`Fleet`]: two API and two worker processes, supervised).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2e::processes::{free_port, DurableBroker};
use sqlx::postgres::PgPoolOptions;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clients::wait_ready;
use crate::faults::{Supervised, WORKERS};
use crate::infra::{fresh_database, Postgres};

/// What a run stands on: its own PostgreSQL cluster and database, its own
/// broker and topic, its own identity provider, and the services'
/// environment (the database migrated once, before anything races to).
pub(crate) struct Ground {
    pub(crate) postgres: Postgres,
    pub(crate) cluster_url: String,
    pub(crate) url: String,
    pub(crate) pool: sqlx::PgPool,
    pub(crate) broker: DurableBroker,
    pub(crate) topic: String,
    pub(crate) provider: e2e::oidc::Provider,
    pub(crate) env: Vec<(String, String)>,
}

impl Ground {
    pub(crate) async fn prepare(dir: &Path, orders_bin: &Path) -> Result<Ground> {
        // The repository's scripts start and crash the cluster.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let postgres = Postgres::new(&repo, dir);
        let cluster_url = postgres.start().await?;
        let url = fresh_database(&cluster_url, "chaos").await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .context("connect to the chaos database")?;
        let mut broker = DurableBroker::new(&dir.join("kafka"), Some(dir.join("broker.log")))?;
        broker.start().await?;
        let topic = format!("chaos-{}", Uuid::now_v7().simple());
        // As deployed: callers sign in at the local OpenID Connect provider;
        // no rate limit (eight clients share one address and a staff member).
        let provider = e2e::oidc::Provider::start();
        let env = vec![
            ("DATABASE_URL".to_owned(), url.clone()),
            ("KAFKA_BROKERS".to_owned(), broker.address()),
            ("KAFKA_TOPIC".to_owned(), topic.clone()),
            ("KAFKA_PARTITIONS".to_owned(), "3".to_owned()),
            ("OIDC_ISSUER".to_owned(), provider.issuer.clone()),
            ("OIDC_AUDIENCE".to_owned(), e2e::oidc::AUDIENCE.to_owned()),
            ("RATE_LIMIT_PER_SECOND".to_owned(), "0".to_owned()),
            ("RATE_LIMIT_PEER_PER_SECOND".to_owned(), "0".to_owned()),
        ];
        let migrated = Command::new(orders_bin)
            .arg("migrate")
            .envs(env.iter().cloned())
            .output()
            .await?;
        if !migrated.status.success() {
            bail!(
                "orders migrate failed: {}",
                String::from_utf8_lossy(&migrated.stderr)
            );
        }
        Ok(Ground {
            postgres,
            cluster_url,
            url,
            pool,
            broker,
            topic,
            provider,
            env,
        })
    }

    /// The environment of a process named `name` (`application_name`, so
    /// the cancel bursts find the workers).
    fn named(&self, name: &str) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        let sep = if self.url.contains('?') { '&' } else { '?' };
        env[0].1 = format!("{}{sep}application_name={name}", self.url);
        env
    }
}

/// The services under test: two API processes and two worker processes,
/// each restarted by its supervisor when it dies.
pub(crate) struct Fleet {
    pub(crate) stop: CancellationToken,
    pub(crate) serves: Vec<Supervised>,
    pub(crate) works: Vec<Supervised>,
    pub(crate) bases: Arc<Vec<String>>,
}

impl Fleet {
    pub(crate) async fn start(ground: &Ground, orders_bin: &Path, dir: &Path) -> Result<Fleet> {
        let stop = CancellationToken::new();
        let mut serves = Vec::new();
        let mut bases = Vec::new();
        for n in 1..=2 {
            let port = free_port()?;
            serves.push(Supervised::start(
                "serve",
                orders_bin,
                vec![
                    "serve".into(),
                    "--http-addr".into(),
                    format!("127.0.0.1:{port}"),
                ],
                ground.named("orders-serve"),
                dir.join(format!("serve-{n}.log")),
                stop.clone(),
            )?);
            bases.push(format!("http://127.0.0.1:{port}"));
        }
        let mut works = Vec::new();
        for n in 1..=2 {
            works.push(Supervised::start(
                "work",
                orders_bin,
                vec!["work".into()],
                ground.named(WORKERS),
                dir.join(format!("work-{n}.log")),
                stop.clone(),
            )?);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        for base in &bases {
            wait_ready(&http, base).await?;
        }
        Ok(Fleet {
            stop,
            serves,
            works,
            bases: Arc::new(bases),
        })
    }
}
