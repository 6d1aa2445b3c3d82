//! Where each generation stands on each partition (`delivery.offsets`),
//! moved by compare-and-set in the batch's own transaction.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

use super::NAME;

/// The next offset to read of each partition, for one generation.
pub async fn offsets(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    let rows = sqlx::query!(
        "SELECT partition, next_offset FROM delivery.offsets WHERE generation = $1 AND topic = $2",
        generation,
        topic,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.partition, r.next_offset))
        .collect())
}

/// Moves one partition's offset from `from` to `to` (compare-and-set), counting
/// the events applied.
///
/// `last` is the event id and offset of a record applied from this batch
/// (its first), if it has one: what [`check_partition`] looks for later.
#[allow(clippy::too_many_arguments)]
pub(super) async fn advance(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    applied: i64,
    last: Option<(Uuid, i64)>,
) -> Result<()> {
    let updated = sqlx::query!(
        "INSERT INTO delivery.offsets AS o (generation, topic, partition, next_offset, events_applied,
                                            last_event_id, last_event_offset)
         VALUES ($1, $2, $3, $5, $6, $7, $8)
         ON CONFLICT (generation, topic, partition) DO UPDATE
            SET next_offset = EXCLUDED.next_offset,
                events_applied = o.events_applied + EXCLUDED.events_applied,
                last_event_id = coalesce(EXCLUDED.last_event_id, o.last_event_id),
                last_event_offset = coalesce(EXCLUDED.last_event_offset, o.last_event_offset),
                updated_at = clock_timestamp()
          WHERE o.next_offset = $4",
        generation,
        topic,
        partition,
        from,
        to,
        applied,
        last.map(|(id, _)| id),
        last.map(|(_, offset)| offset),
    )
    .execute(conn)
    .await?
    .rows_affected();
    crate::checkpoint::compared_and_set(updated, NAME)
}

/// The next offset to read of one partition, for one generation.
pub(super) async fn next_offset(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
    partition: i32,
) -> Result<i64> {
    Ok(offsets(conn, generation, topic)
        .await?
        .get(&partition)
        .copied()
        .unwrap_or(0))
}
