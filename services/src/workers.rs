//! The projection workers this binary runs: one per registered projection
//! asked for, each on the budget of its source (the log-fed ones share the
//! workers' pool, a topic-fed one has its own).

use infra::kafka::KafkaSource;
use projections::registry::{Registered, Source, Worker};
use projections::runner::WorkerOptions;
use projections::ProjectionError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::Pools;

/// Starts one worker per projection in `names`; they stop when `shutdown`
/// is cancelled. One fed from the topic needs `kafka` (without it, its task
/// ends at once with an error saying so).
pub fn spawn(
    pools: &Pools,
    names: &[Registered],
    options: &WorkerOptions,
    kafka: Option<&KafkaSource>,
    shutdown: &CancellationToken,
) -> JoinSet<Result<(), ProjectionError>> {
    let mut set = JoinSet::new();
    for projection in names {
        let pool = match projection.source() {
            Source::Log => pools.workers.clone(),
            Source::Topic => pools.consumer.clone(),
        };
        set.spawn(projection.run(Worker {
            pool,
            kafka: kafka.cloned(),
            options: options.clone(),
            shutdown: shutdown.clone(),
        }));
    }
    set
}
