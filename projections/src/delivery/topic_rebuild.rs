//! Rebuilding the delivery model from the topic, beside the live one.

use infra::broker::Partition;
use sqlx::{Acquire, PgConnection, PgPool};

use crate::error::{ProjectionError, Result};
use crate::generations::Rebuild;

use super::consume::connect_topic;
use super::offsets::{next_offset, offsets};
use super::partition::{records_gone, step_partition, FetchSize};
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
    let (clients, gone) = partitions_and_gaps(source).await?;
    if !gone.is_empty() && accept_incomplete.is_none() {
        return Err(ProjectionError::IncompleteTopic { gone });
    }
    let mut conn = pool.acquire().await?;
    let rebuild = Rebuild::start(pool, &mut conn, &DeliveryReadModel).await?;
    if let (Some(who), false) = (accept_incomplete, gone.is_empty()) {
        record_incomplete(&mut conn, rebuild.new, &source.topic, &gone, who).await?;
    }
    let topic = source.topic.as_str();
    let mut done = 0u64;
    let mut report = |n: usize| {
        done += n as u64;
        progress(done);
    };
    // 2. Every partition to its end while the live generation serves.
    for pc in &clients {
        replay_partition(&mut conn, pc, topic, rebuild.new, None, &mut report).await?;
    }
    // 3. Switch, after catching up to wherever the live generation got.
    let mut tx = conn.begin().await?;
    rebuild.lock_registry(&mut tx).await?;
    let live = offsets(&mut tx, rebuild.old, topic).await?;
    for pc in &clients {
        let until = live.get(&pc.partition()).copied().unwrap_or(0);
        replay_partition(&mut tx, pc, topic, rebuild.new, Some(until), &mut report).await?;
    }
    rebuild.activate(&mut tx, &DeliveryReadModel).await?;
    tx.commit().await?;
    // 4. The old generation has no readers left.
    let (old, new) = (rebuild.old, rebuild.new);
    rebuild.finish(&mut conn, &DeliveryReadModel).await?;
    Ok((old, new, done))
}

/// A client per partition of the topic, and the partitions whose first
/// records are gone (deleted by retention): how many each.
async fn partitions_and_gaps(source: &KafkaSource) -> Result<(Vec<Partition>, Vec<(i32, i64)>)> {
    let (client, partitions) = connect_topic(source).await?;
    let mut clients = Vec::new();
    let mut gone = Vec::new();
    for partition in partitions {
        let pc = client
            .partition(&source.topic, partition)
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?;
        let missing = records_gone(&pc).await?;
        if missing > 0 {
            gone.push((partition, missing));
        }
        clients.push(pc);
    }
    Ok((clients, gone))
}

/// Records who accepted building `generation` from a topic that lost
/// records, and starts each such partition at the first record it still has.
async fn record_incomplete(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
    gone: &[(i32, i64)],
    who: &str,
) -> Result<()> {
    let detail = gone
        .iter()
        .map(|(p, n)| format!("partition {p}: {n} records gone"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut tx = conn.begin().await?;
    sqlx::query!(
        "INSERT INTO projection_incomplete (projection, generation, detail, accepted_by)
         VALUES ($1, $2, $3, $4)",
        NAME,
        generation,
        &detail,
        who,
    )
    .execute(&mut *tx)
    .await?;
    for (partition, first) in gone {
        sqlx::query!(
            "INSERT INTO delivery.offsets (generation, topic, partition, next_offset)
             VALUES ($1, $2, $3, $4)",
            generation,
            topic,
            partition,
            first,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::warn!(projection = NAME, generation, %detail, who, "rebuilding an incomplete model, as accepted");
    Ok(())
}

/// Applies one partition's records to `generation`, batch by batch, until
/// the partition's end or the offset `until`.
async fn replay_partition(
    conn: &mut PgConnection,
    pc: &Partition,
    topic: &str,
    generation: i32,
    until: Option<i64>,
    report: &mut impl FnMut(usize),
) -> Result<()> {
    let mut size = FetchSize::most();
    loop {
        let at = next_offset(conn, generation, topic, pc.partition()).await?;
        if until.is_some_and(|until| at >= until) {
            return Ok(());
        }
        let stepped = step_partition(&mut *conn, pc, topic, (generation, at), None, (size, 100));
        let n = match stepped.await {
            Ok((n, _)) => n,
            Err(e @ ProjectionError::FetchTimedOut { .. }) => {
                size = size.shrunk().ok_or(e)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        size = size.grown();
        report(n);
        if n == 0 {
            return Ok(());
        }
    }
}
