//! Connecting to Postgres and applying the embedded migrations.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool whose requests fail fast (instead of queueing forever) when the
/// database is down, so the API can answer 503 within its timeout.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
}

/// Applies pending migrations, then installs the projections (their first
/// generation's tables and the readers' views) that are not installed yet.
/// Safe to run from several processes at once: both steps take advisory locks.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    projections::install_all(pool).await?;
    Ok(())
}
