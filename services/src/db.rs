//! Connecting to Postgres and applying the embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool whose requests fail fast (instead of queueing forever) when the
/// database is down, so the API can answer 503 within its timeout, and that
/// hands out no connection made before a sign of a failover
/// (`infra::pg::stale`).
///
/// sqlx pings every connection it hands out by default: one more round trip
/// per query, a quarter of the place-order path (bench/place.sh). Here only a
/// connection that sat idle for a while is pinged; a busy one that the server
/// dropped (a restart) fails its query once, the request answers 503, and the
/// broken connection is discarded.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections).connect(url).await
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                // Made before the last sign of a failover (a read-only
                // answer, a broken connection): it may lead to the old
                // primary. Closed; the pool connects afresh.
                if infra::pg::stale(meta.age) {
                    return Ok(false);
                }
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// A process's connection budgets: one pool each, so that no part can take
/// another's connections (readers waiting, a slow consumer, a busy worker
/// never leave the writers without one). Connections that carry session
/// state are outside every pool: each leader's lease connection and each
/// `LISTEN` connection is its own.
#[derive(Debug, Clone)]
pub struct Pools {
    /// The API's writes: appends, idempotency records, commit notifications.
    pub writes: PgPool,
    /// The API's reads: order lists and views, the delivery view, the
    /// read-your-writes position watcher, `/readyz`, `/metrics`.
    pub reads: PgPool,
    /// The relay and the log-fed projection workers (a leader holds one
    /// while it leads; standbys borrow one now and then).
    pub workers: PgPool,
    /// The delivery consumer: one per batch commit, never across a fetch,
    /// so it serves any number of partitions.
    pub consumer: PgPool,
}

/// The size of each pool (README, "Configuration").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub writes: u32,
    pub reads: u32,
    pub workers: u32,
    pub consumer: u32,
}

impl Budgets {
    pub const DEFAULT_WRITES: u32 = 20;
    pub const DEFAULT_READS: u32 = 10;
    pub const DEFAULT_WORKERS: u32 = 4;
    pub const DEFAULT_CONSUMER: u32 = 2;
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            writes: Self::DEFAULT_WRITES,
            reads: Self::DEFAULT_READS,
            workers: Self::DEFAULT_WORKERS,
            consumer: Self::DEFAULT_CONSUMER,
        }
    }
}

impl Pools {
    /// Every budget of a service; only the write pool connects at once (so
    /// a database that is down fails the start), the others on first use.
    pub async fn connect(url: &str, budgets: Budgets) -> Result<Pools, anyhow::Error> {
        Pools::connect_as(url, budgets, false).await
    }

    /// [`Pools::connect`] for an operator's one-shot command (a rebuild, a
    /// replay, a migration): it works through the write budget in batches,
    /// on tables that start empty (a new generation), so its writes are
    /// [`planned_per_batch`] too.
    pub async fn connect_for_command(url: &str, budgets: Budgets) -> Result<Pools, anyhow::Error> {
        Pools::connect_as(url, budgets, true).await
    }

    async fn connect_as(
        url: &str,
        budgets: Budgets,
        command: bool,
    ) -> Result<Pools, anyhow::Error> {
        let options: PgConnectOptions = url.parse()?;
        // Each pool's connections name it (`pg_stat_activity`), so an
        // operator sees which part of the service holds a connection or
        // spends the database's time.
        let named = |part: &str| options.clone().application_name(&format!("orders {part}"));
        let writes = if command {
            planned_per_batch(named("command"))
        } else {
            named("writes")
        };
        let writes = pool_options(budgets.writes).connect_with(writes).await?;
        let lazy = |n: u32, options: PgConnectOptions| pool_options(n).connect_lazy_with(options);
        Ok(Pools {
            writes,
            reads: lazy(budgets.reads, named("reads")),
            workers: lazy(budgets.workers, planned_per_batch(named("workers"))),
            consumer: lazy(budgets.consumer, planned_per_batch(named("consumer"))),
        })
    }

    /// One pool for every budget (tests that size a single pool themselves).
    pub fn single(pool: PgPool) -> Pools {
        Pools {
            writes: pool.clone(),
            reads: pool.clone(),
            workers: pool.clone(),
            consumer: pool,
        }
    }

    pub async fn close(&self) {
        for pool in [&self.writes, &self.reads, &self.workers, &self.consumer] {
            pool.close().await;
        }
    }
}

/// Connections whose every statement is planned for the tables as they
/// are now, never from a plan cached earlier.
///
/// PostgreSQL keeps a prepared statement's generic plan once it has run it
/// five times, and plans it again only when the tables' statistics change
/// (an `ANALYZE`). The workers' tables swing in size: the outbox is empty,
/// then holds a broker outage's backlog; a new generation's tables start
/// empty and fill up during a rebuild; the log grows from nothing. A plan
/// made while a table was small scans it whole: measured on a fresh
/// database under `orders all`, the relay's read went through 6,967 pages
/// per round and the delivery model's id check through 908 (for 11 rows)
/// after a few minutes, growing with the log, until autovacuum analyzed
/// the tables. A worker's statement carries a batch, so planning it each
/// time costs little beside what it does.
pub fn planned_per_batch(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("plan_cache_mode", "force_custom_plan")])
}

/// A connection idle longer than this is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Applies pending migrations, then installs the projections (their first
/// generation's tables and the readers' views) that are not installed yet.
/// Safe to run from several processes at once: both steps take advisory locks.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    projections::install_all(pool).await?;
    Ok(())
}
