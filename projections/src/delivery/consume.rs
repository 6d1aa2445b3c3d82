//! The live consumer: the lease, then one task per partition.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::held;
use infra::broker::{Broker, Partition};
use infra::lease::{self, Fence, Lease};
use infra::wait::{sleep_or_cancel, Backoff};

use super::offsets::next_offset;
use super::partition::check_partition;
use super::partition::{step_partition, FetchSize};
use super::stopped::resume_partition;
use super::stopped::stop_partition;
use super::stopped::PARTITION_RECHECK;
use super::{DeliveryReadModel, KafkaSource, FETCH_WAIT_MS, FIRST_EMPTY_WAIT_MS, NAME};

/// Runs the delivery projection until `shutdown`: waits for its lease,
/// connects to Kafka (retrying while the broker is down), then consumes every
/// partition of the topic, one task each.
pub async fn run_consumer(
    pool: PgPool,
    source: KafkaSource,
    lease_ttl: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let asked = std::sync::atomic::AtomicBool::new(false);
        let Some(lease) = Lease::wait_for(
            &pool,
            &lease::projection(NAME),
            lease_ttl,
            Duration::from_secs(1),
            &shutdown,
            || crate::runner::ask_for_handover(&pool, NAME, &asked),
        )
        .await
        else {
            break;
        };
        let result = consume(&pool, &source, lease.fence(), &shutdown, &mut backoff).await;
        lease.release().await;
        match result {
            Ok(()) | Err(ProjectionError::Fenced { .. }) => {}
            Err(ProjectionError::HandedOver { .. }) => {
                sleep_or_cancel(crate::runner::HANDOVER_PAUSE, &shutdown).await;
            }
            Err(e @ ProjectionError::Unknown(_)) => return Err(e),
            Err(e) => {
                metrics::counter!("projection_retries_total", "projection" => NAME).increment(1);
                let delay = backoff.grow();
                tracing::warn!(projection = NAME, error = %e, ?delay, "delivery consumer failed; retrying");
                sleep_or_cancel(delay, &shutdown).await;
            }
        }
    }
    Ok(())
}

/// Connects to the brokers and finds the topic; a rebuild reads what is
/// there, so a topic that does not exist is an error (creating it would only
/// give an empty model).
pub(super) async fn connect_topic(source: &KafkaSource) -> Result<(Arc<Broker>, Vec<i32>)> {
    let client = source
        .broker(Duration::from_secs(5))
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?;
    let partitions = client
        .find_topic(&source.topic)
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?
        .ok_or_else(|| ProjectionError::Kafka(format!("topic {} does not exist", source.topic)))?;
    Ok((Arc::new(client), partitions))
}

pub(super) async fn consume(
    pool: &PgPool,
    source: &KafkaSource,
    fence: &Fence,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<()> {
    {
        let mut conn = pool.acquire().await?;
        if let Err(e) = held::handover_done(&mut conn, NAME).await {
            tracing::debug!(projection = NAME, error = %e, "cannot clear a handover request");
        }
    }
    let client = Arc::new(
        source
            .broker(Duration::from_secs(5))
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?,
    );
    let Some(partitions) = wait_for_topic(&client, &source.topic, shutdown).await? else {
        return Ok(());
    };
    tracing::info!(projection = NAME, topic = %source.topic, ?partitions, token = fence.token(), "delivery consumer running");
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_held(pool.clone(), fence.clone(), stop.clone()));
    for partition in partitions {
        let pc = client
            .partition(&source.topic, partition)
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?;
        tasks.spawn(consume_partition(
            pool.clone(),
            pc,
            source.topic.clone(),
            fence.clone(),
            stop.clone(),
        ));
    }
    backoff.reset();
    // The first task to fail stops the others; the caller reconnects.
    let mut result = Ok(());
    while let Some(ended) = tasks.join_next().await {
        let ended = ended.unwrap_or_else(|e| Err(ProjectionError::Kafka(format!("task: {e}"))));
        if let Err(e) = ended {
            stop.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// The topic's partitions, once the relay has created it (creating it here
/// too would race the relay, and the losing side's client logs an error);
/// `None` on shutdown.
async fn wait_for_topic(
    client: &Broker,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<i32>>> {
    let mut logged = false;
    loop {
        match client
            .find_topic(topic)
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?
        {
            Some(partitions) => return Ok(Some(partitions)),
            None if shutdown.is_cancelled() => return Ok(None),
            None => {
                if !logged {
                    tracing::info!(
                        projection = NAME,
                        topic,
                        "waiting for the relay to create the topic"
                    );
                    logged = true;
                }
                sleep_or_cancel(Duration::from_millis(200), shutdown).await;
            }
        }
    }
}

/// A connection of the consumer's budget, waiting as long as it takes (a
/// background task has no caller to answer in time); `None` on `stop`. The
/// pool's own timeout only makes each wait a round of the loop.
async fn acquire_patiently(
    pool: &PgPool,
    stop: &CancellationToken,
) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>> {
    loop {
        match pool.acquire().await {
            Ok(conn) => return Ok(Some(conn)),
            Err(sqlx::Error::PoolTimedOut) if !stop.is_cancelled() => {
                metrics::counter!("delivery_connection_waits_total").increment(1);
            }
            Err(sqlx::Error::PoolTimedOut) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The held list, looked at every few seconds: released when this build
/// can, handed over when a standby can read more of it.
async fn watch_held(pool: PgPool, fence: Fence, stop: CancellationToken) -> Result<()> {
    let mut watch = crate::runner::HeldWatch::default();
    while !stop.is_cancelled() {
        let Some(mut conn) = acquire_patiently(&pool, &stop).await? else {
            break;
        };
        crate::runner::look_at_held(&mut conn, &fence, &DeliveryReadModel, &mut watch).await?;
        drop(conn);
        sleep_or_cancel(crate::runner::HELD_CHECK_EVERY, &stop).await;
    }
    Ok(())
}

/// Consumes one partition into the live generation until `stop`, an error
/// or the loss of the lease. It holds a pooled connection only to check the
/// partition and to commit a batch, never across a fetch, so a topic with
/// more partitions than the pool has connections is consumed all the same.
/// Where a partition's consumption starts (again).
enum Start {
    /// The generation and the next offset.
    At((i32, i64)),
    /// The partition is not what the model was built from: stopped, to be
    /// checked again a little later.
    Stopped,
    /// The consumer is stopping.
    Cancelled,
}

/// Reads where to start in a partition: the generation readers see and its
/// next offset, once the partition is checked against what the generation
/// was built from (a lost partition is stopped and waited on).
async fn start_at(
    pool: &PgPool,
    pc: &Partition,
    topic: &str,
    stop: &CancellationToken,
) -> Result<Start> {
    let partition = pc.partition();
    let Some(mut conn) = acquire_patiently(pool, stop).await? else {
        return Ok(Start::Cancelled);
    };
    let generation = checkpoint::active_generation(&mut conn, NAME).await?;
    match check_partition(&mut conn, pc, topic, generation).await {
        Ok(()) => resume_partition(&mut conn, topic, partition).await?,
        Err(ProjectionError::PartitionLost { reason, .. }) => {
            stop_partition(&mut conn, topic, partition, &reason).await?;
            drop(conn);
            sleep_or_cancel(PARTITION_RECHECK, stop).await;
            return Ok(Start::Stopped);
        }
        Err(e) => return Err(e),
    }
    let next = next_offset(&mut conn, generation, topic, partition).await?;
    Ok(Start::At((generation, next)))
}

pub(super) async fn consume_partition(
    pool: PgPool,
    pc: Partition,
    topic: String,
    fence: Fence,
    stop: CancellationToken,
) -> Result<()> {
    let partition = pc.partition();
    let mut wait = FIRST_EMPTY_WAIT_MS;
    let mut size = FetchSize::most();
    // The generation and the next offset, between batches (this task owns
    // the partition under the lease, so only a failed step makes it stale).
    let mut at: Option<(i32, i64)> = None;
    while !stop.is_cancelled() {
        if !fence.held() {
            return Err(fence.fenced().into());
        }
        let (generation, from) = match at {
            Some(at) => at,
            None => match start_at(&pool, &pc, &topic, &stop).await? {
                Start::At(at) => at,
                Start::Stopped => continue,
                Start::Cancelled => break,
            },
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = fence.lost() => return Err(fence.fenced().into()),
            stepped = step_partition(&pool, &pc, &topic, (generation, from), Some(&fence), (size, wait)) => match stepped {
                Ok((0, _)) => {
                    at = Some((generation, from));
                    wait = (wait * 2).clamp(FIRST_EMPTY_WAIT_MS, FETCH_WAIT_MS);
                    size = size.grown();
                }
                Ok((_, next)) => {
                    at = Some((generation, next));
                    wait = 0;
                    size = size.grown();
                    // Let records gather: one transaction for the next few
                    // milliseconds' worth, not one each.
                    infra::wait::linger(&stop).await;
                }
                Err(ProjectionError::CheckpointMoved { .. }) => at = None,
                // Every connection of the consumer's budget was busy (the
                // other partitions' batches, a backlog after an outage):
                // this batch waits its turn. Failing the consumer for it
                // restarted every partition and threw their work away, again
                // and again, while the backlog never drained.
                Err(ProjectionError::Database(sqlx::Error::PoolTimedOut)) => {
                    metrics::counter!("delivery_connection_waits_total").increment(1);
                }
                // Ask for less; a broker that does not answer even the
                // least is left (the consumer restarts on a new connection).
                Err(e @ ProjectionError::FetchTimedOut { .. }) => {
                    size = size.shrunk().ok_or(e)?;
                    metrics::counter!("delivery_fetches_shrunk_total").increment(1);
                    tracing::warn!(projection = NAME, partition, bytes = size.bytes(),
                        "a fetch was not answered in time; asking for fewer records");
                }
                Err(ProjectionError::PartitionLost { reason, .. }) => {
                    let Some(mut conn) = acquire_patiently(&pool, &stop).await? else {
                        break;
                    };
                    stop_partition(&mut conn, &topic, partition, &reason).await?;
                    drop(conn);
                    at = None;
                    sleep_or_cancel(PARTITION_RECHECK, &stop).await;
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(())
}
