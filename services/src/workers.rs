//! The projection workers this binary runs, by name.

use projections::order_view::{self, OrderReadModel};
use projections::runner::{self, WorkerOptions};
use projections::{Projection, ProjectionError};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every projection fed from the Postgres log, by name.
pub const KNOWN: &[&str] = &[order_view::NAME];

/// The known projections' names and descriptions.
pub fn described() -> Vec<(&'static str, &'static str)> {
    vec![(OrderReadModel.name(), OrderReadModel.description())]
}

/// Checks `names` (empty: all) against [`KNOWN`].
pub fn select(names: &[String]) -> Result<Vec<&'static str>, ProjectionError> {
    if names.is_empty() {
        return Ok(KNOWN.to_vec());
    }
    names
        .iter()
        .map(|n| {
            KNOWN
                .iter()
                .copied()
                .find(|k| k == n)
                .ok_or_else(|| ProjectionError::Unknown(n.clone()))
        })
        .collect()
}

/// Starts one worker per named projection; they stop when `shutdown` is
/// cancelled.
pub fn spawn(
    pool: &PgPool,
    names: &[&'static str],
    options: &WorkerOptions,
    shutdown: &CancellationToken,
) -> JoinSet<Result<(), ProjectionError>> {
    let mut set = JoinSet::new();
    for name in names {
        let (pool, options, shutdown) = (pool.clone(), options.clone(), shutdown.clone());
        match *name {
            order_view::NAME => {
                set.spawn(runner::run_worker(pool, OrderReadModel, options, shutdown));
            }
            other => tracing::error!(projection = other, "no worker for this projection"),
        }
    }
    set
}
