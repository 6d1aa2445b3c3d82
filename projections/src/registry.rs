//! Every projection this build knows, in one list ([`ALL`]): adding one is
//! writing its module (a [`Projection`](crate::Projection) for its tables)
//! and one [`Registration`] here. Nothing else names a projection: the
//! workers, `orders projections list|status|replay|rebuild`, `orders verify`
//! and the install at start-up all go through this list.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use infra::kafka::KafkaSource;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::{ProjectionError, Result};
use crate::operate::{Progress, ProjectionStatus, RebuildReport, ReplayReport};
use crate::runner::WorkerOptions;
use crate::verify::Difference;

/// A future a registration hands back.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where a projection's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The event log in PostgreSQL, by the gap-safe reader.
    Log,
    /// The Kafka topic the relay publishes to.
    Topic,
}

/// What a projection's worker runs with.
pub struct Worker {
    /// The budget of its source (the workers' pool, or the consumer's).
    pub pool: PgPool,
    /// The topic, for a projection fed from it.
    pub kafka: Option<KafkaSource>,
    pub options: WorkerOptions,
    pub shutdown: CancellationToken,
}

/// Progress reports of long work, as it goes.
pub type OnProgress<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// What an operator's replay asks for.
pub struct ReplayRequest<'a> {
    /// Re-apply from this log position (the start when `None`).
    pub from: Option<i64>,
    pub batch_size: i64,
    pub progress: OnProgress<'a>,
}

/// What an operator's rebuild asks for.
pub struct RebuildRequest<'a> {
    pub batch_size: i64,
    /// The topic, for a projection fed from it.
    pub kafka: Option<&'a KafkaSource>,
    /// Who accepts a model built from a topic that no longer holds every
    /// record (`--accept-incomplete`); `None`: refuse such a rebuild.
    pub accepted_incomplete_by: Option<&'a str>,
    pub progress: OnProgress<'a>,
}

/// One projection as the rest of the system sees it.
pub trait Registration: Send + Sync {
    /// The stable name: the registry key and the CLI's argument.
    fn name(&self) -> &'static str;
    /// One line for `orders projections list`.
    fn description(&self) -> &'static str;
    fn source(&self) -> Source;
    /// Registers it (generation 1, published) if it is not registered yet.
    fn install<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, ()>;
    /// Runs its worker until shutdown (a standby while another process
    /// holds its lease).
    fn run(&self, worker: Worker) -> Pending<'static, ()>;
    /// Re-applies its source from a position.
    fn replay<'a>(
        &'a self,
        pool: &'a PgPool,
        request: ReplayRequest<'a>,
    ) -> Pending<'a, ReplayReport>;
    /// Builds a new generation beside the live one, then switches readers.
    fn rebuild<'a>(
        &'a self,
        pool: &'a PgPool,
        request: RebuildRequest<'a>,
    ) -> Pending<'a, RebuildReport>;
    /// Its rows against the fold of the log.
    fn verify<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, Vec<Difference>>;
    /// Its position and lag against the log's `head`.
    fn status<'a>(
        &'a self,
        pool: &'a PgPool,
        kafka: Option<&'a KafkaSource>,
        head: i64,
    ) -> Pending<'a, ProjectionStatus>;
}

/// A projection of this build.
pub type Registered = &'static dyn Registration;

/// Every projection this build knows, in the order operators see them.
pub static ALL: [Registered; 2] = [&crate::orders::REGISTRATION, &crate::delivery::REGISTRATION];

/// The projection named `name`.
pub fn find(name: &str) -> Result<Registered> {
    ALL.iter()
        .copied()
        .find(|p| p.name() == name)
        .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
}

/// Every projection in `names`, or all of them when it is empty.
pub fn find_all(names: &[String]) -> Result<Vec<Registered>> {
    if names.is_empty() {
        return Ok(ALL.to_vec());
    }
    names.iter().map(|n| find(n)).collect()
}

/// Registers every projection that is not registered yet. Run after the
/// migrations.
pub async fn install_all(pool: &PgPool) -> Result<()> {
    for projection in ALL {
        projection.install(pool).await?;
    }
    Ok(())
}

/// Every projection's position and lag, against the log's head now.
pub async fn status(pool: &PgPool, kafka: Option<&KafkaSource>) -> Result<Vec<ProjectionStatus>> {
    let head: i64 =
        sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM events"#)
            .fetch_one(pool)
            .await?;
    let mut out = Vec::with_capacity(ALL.len());
    for projection in ALL {
        out.push(projection.status(pool, kafka, head).await?);
    }
    Ok(out)
}

impl fmt::Debug for dyn Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for dyn Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for dyn Registration {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_is_found_by_its_own_name_and_names_are_unique() {
        for p in ALL {
            assert_eq!(find(p.name()).map(|f| f.name()).ok(), Some(p.name()));
        }
        let mut names: Vec<_> = ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(matches!(find("nope"), Err(ProjectionError::Unknown(_))));
        assert_eq!(find_all(&[]).map(|v| v.len()).ok(), Some(ALL.len()));
    }
}
