//! Rebuilding the delivery model from the topic, beside the live one.

use rskafka::client::partition::UnknownTopicHandling;
use sqlx::{Acquire, PgPool};

use crate::checkpoint::{self, REBUILD_LOCK};
use crate::error::{ProjectionError, Result};
use crate::held;
use crate::lock::SessionLock;
use crate::projection::Projection;

use super::consume::connect_topic;
use super::model::{create_generation, publish};
use super::offsets::next_offset;
use super::offsets::offsets;
use super::partition::records_gone;
use super::partition::step_partition;
use super::{DeliveryReadModel, KafkaSource, NAME};

/// Rebuilds the delivery read model by replaying the topic from its earliest
/// offset into a new generation, then switching atomically, as
/// [`crate::operate::rebuild`] does for the log-fed model. Returns the old
/// and the new generation and the records replayed.
///
/// A topic whose partitions no longer start at offset 0 (records deleted by
/// retention) would give an incomplete model: the rebuild refuses, saying how
/// many records are gone per partition ([`ProjectionError::IncompleteTopic`]),
/// unless `accept_incomplete` names who accepts it; the generation is then
/// recorded as incomplete (`projection_incomplete`), and later moves of
/// orders whose placement is gone are counted as such, not held as
/// corruption.
pub async fn rebuild(
    pool: &PgPool,
    source: &KafkaSource,
    accept_incomplete: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<(i32, i32, u64)> {
    let Some(rebuilding) = SessionLock::try_acquire(pool, REBUILD_LOCK, NAME).await? else {
        return Err(ProjectionError::Busy {
            name: NAME.to_owned(),
            what: "rebuilding",
        });
    };
    let (client, partitions) = connect_topic(source).await?;
    let mut clients = Vec::new();
    for partition in &partitions {
        clients.push(
            client
                .partition_client(
                    source.topic.clone(),
                    *partition,
                    UnknownTopicHandling::Retry,
                )
                .await
                .map_err(|e| ProjectionError::Kafka(e.to_string()))?,
        );
    }
    let mut gone = Vec::new();
    for pc in &clients {
        let missing = records_gone(pc).await?;
        if missing > 0 {
            gone.push((pc.partition(), missing));
        }
    }
    if !gone.is_empty() && accept_incomplete.is_none() {
        return Err(ProjectionError::IncompleteTopic { gone });
    }
    let mut conn = pool.acquire().await?;
    let old = checkpoint::active_generation(&mut conn, NAME).await?;
    let new = old + 1;
    {
        let mut tx = conn.begin().await?;
        DeliveryReadModel.drop_generation(&mut tx, new).await?;
        held::drop_generation(&mut tx, NAME, new).await?;
        sqlx::query("DELETE FROM delivery.offsets WHERE generation = $1")
            .bind(new)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM projection_incomplete WHERE projection = $1 AND generation = $2")
            .bind(NAME)
            .bind(new)
            .execute(&mut *tx)
            .await?;
        create_generation(&mut tx, new).await?;
        if let (Some(who), false) = (accept_incomplete, gone.is_empty()) {
            let detail = gone
                .iter()
                .map(|(p, n)| format!("partition {p}: {n} records gone"))
                .collect::<Vec<_>>()
                .join(", ");
            sqlx::query(
                "INSERT INTO projection_incomplete (projection, generation, detail, accepted_by)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(NAME)
            .bind(new)
            .bind(&detail)
            .bind(who)
            .execute(&mut *tx)
            .await?;
            // Start each partition at the first record it still has.
            for (partition, first) in &gone {
                sqlx::query(
                    "INSERT INTO delivery.offsets (generation, topic, partition, next_offset)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(new)
                .bind(&source.topic)
                .bind(partition)
                .bind(first)
                .execute(&mut *tx)
                .await?;
            }
            tracing::warn!(projection = NAME, generation = new, %detail, who, "rebuilding an incomplete model, as accepted");
        }
        tx.commit().await?;
    }
    // 1. Replay every partition to its end while the live generation serves.
    let mut done = 0u64;
    for pc in &clients {
        loop {
            let from = next_offset(&mut conn, new, &source.topic, pc.partition()).await?;
            let (n, _) =
                step_partition(&mut *conn, pc, &source.topic, (new, from), None, 100).await?;
            done += n as u64;
            progress(done);
            if n == 0 {
                break;
            }
        }
    }
    // 2. Switch under the registry lock (live batches wait for it), after
    //    catching up to wherever the live generation got meanwhile.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT 1 FROM projections WHERE name = $1 FOR UPDATE")
        .bind(NAME)
        .execute(&mut *tx)
        .await?;
    let live = offsets(&mut tx, old, &source.topic).await?;
    for pc in &clients {
        let target = live.get(&pc.partition()).copied().unwrap_or(0);
        loop {
            let at = offsets(&mut tx, new, &source.topic)
                .await?
                .get(&pc.partition())
                .copied()
                .unwrap_or(0);
            if at >= target {
                break;
            }
            let (n, _) = step_partition(&mut *tx, pc, &source.topic, (new, at), None, 100).await?;
            done += n as u64;
            progress(done);
            if n == 0 {
                break;
            }
        }
    }
    sqlx::query(
        "UPDATE projections SET active_generation = $2, switched_at = clock_timestamp() WHERE name = $1",
    )
    .bind(NAME)
    .bind(new)
    .execute(&mut *tx)
    .await?;
    publish(&mut tx, new).await?;
    tx.commit().await?;
    // 3. The old generation has no readers left.
    {
        let mut tx = conn.begin().await?;
        DeliveryReadModel.drop_generation(&mut tx, old).await?;
        held::drop_generation(&mut tx, NAME, old).await?;
        sqlx::query("DELETE FROM delivery.offsets WHERE generation = $1")
            .bind(old)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    rebuilding.release().await?;
    Ok((old, new, done))
}
