//! Connecting to Postgres and applying the embedded migrations.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool whose requests fail fast (instead of queueing forever) when the
/// database is down, so the API can answer 503 within its timeout.
///
/// sqlx pings every connection it hands out by default: one more round trip
/// per query, a quarter of the place-order path (bench/place.sh). Here only a
/// connection that sat idle for a while is pinged; a busy one that the server
/// dropped (a restart) fails its query once, the request answers 503, and the
/// broken connection is discarded.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
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
