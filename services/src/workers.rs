//! The projection workers this binary runs, by name.

use projections::delivery::{self, KafkaSource};
use projections::runner::{self, WorkerOptions};
pub use projections::ProjectionName;
use projections::{OrdersReadModel, ProjectionError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::Pools;

/// Starts one worker per named projection; they stop when `shutdown` is
/// cancelled. The log-fed ones draw from the workers' budget, the delivery
/// consumer from its own; it needs `kafka` (without it, its task ends at once
/// with an error saying so).
pub fn spawn(
    pools: &Pools,
    names: &[ProjectionName],
    options: &WorkerOptions,
    kafka: Option<&KafkaSource>,
    shutdown: &CancellationToken,
) -> JoinSet<Result<(), ProjectionError>> {
    let mut set = JoinSet::new();
    for name in names {
        let (options, shutdown) = (options.clone(), shutdown.clone());
        match (name, kafka) {
            (ProjectionName::Orders, _) => {
                set.spawn(runner::run_worker(
                    pools.workers.clone(),
                    OrdersReadModel,
                    options,
                    shutdown,
                ));
            }
            (ProjectionName::Delivery, Some(source)) => {
                set.spawn(delivery::run_consumer(
                    pools.consumer.clone(),
                    source.clone(),
                    options.lease_ttl,
                    shutdown,
                ));
            }
            (ProjectionName::Delivery, None) => {
                set.spawn(async {
                    Err(ProjectionError::Kafka(
                        "projection delivery needs KAFKA_BROKERS".to_owned(),
                    ))
                });
            }
        }
    }
    set
}
