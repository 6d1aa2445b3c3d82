//! The projection workers this binary runs, by name.

use projections::delivery::{self, KafkaSource};
use projections::order_view::{self, OrderReadModel};
use projections::runner::{self, WorkerOptions};
use projections::{Projection, ProjectionError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every projection, by name: the order read model follows the Postgres log,
/// the delivery read model follows the Kafka topic.
pub const KNOWN: &[&str] = &[order_view::NAME, delivery::NAME];

/// The projections fed from the Postgres log alone.
pub const LOG_FED: &[&str] = &[order_view::NAME];

/// The known projections' names and descriptions.
pub fn described() -> Vec<(&'static str, &'static str)> {
    vec![
        (OrderReadModel.name(), OrderReadModel.description()),
        (
            delivery::NAME,
            "the delivery side's order statuses (schema delivery), fed from the Kafka topic",
        ),
    ]
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
/// cancelled. The log-fed ones draw from the workers' budget, the delivery
/// consumer from its own; it needs `kafka`.
pub fn spawn(
    pools: &crate::db::Pools,
    names: &[&'static str],
    options: &WorkerOptions,
    kafka: Option<&KafkaSource>,
    shutdown: &CancellationToken,
) -> JoinSet<Result<(), ProjectionError>> {
    let mut set = JoinSet::new();
    for name in names {
        let (options, shutdown) = (options.clone(), shutdown.clone());
        match (*name, kafka) {
            (order_view::NAME, _) => {
                set.spawn(runner::run_worker(
                    pools.workers.clone(),
                    OrderReadModel,
                    options,
                    shutdown,
                ));
            }
            (delivery::NAME, Some(source)) => {
                set.spawn(delivery::run_consumer(
                    pools.consumer.clone(),
                    source.clone(),
                    options.lease_ttl,
                    shutdown,
                ));
            }
            (other, _) => {
                let other = other.to_owned();
                set.spawn(async move {
                    Err(ProjectionError::Kafka(format!(
                        "projection {other} needs KAFKA_BROKERS"
                    )))
                });
            }
        }
    }
    set
}
