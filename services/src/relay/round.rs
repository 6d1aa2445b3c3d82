//! One round of the relay: read a batch of outbox rows, produce them per
//! partition, delete (fenced) the rows the broker acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use projections::infra::broker::Partition;
use projections::infra::kafka;
use projections::infra::lease::Fence;
use rskafka::record::Record;
use sqlx::{Acquire, PgConnection};

use super::records::{record, split_by_bytes, wire_size, BATCH_OVERHEAD};
use super::{RelayError, AFTER_PRODUCE};

/// One round: read a batch of outbox rows, produce them per partition,
/// delete the rows the broker acknowledged. Returns the rows dealt with.
pub(super) async fn round(
    conn: &mut PgConnection,
    fence: &Fence,
    clients: &BTreeMap<i32, Arc<Partition>>,
    partitions: i32,
    batch_size: i64,
    max_request_bytes: usize,
) -> Result<i64, RelayError> {
    let Some(batch) = read(conn, partitions, batch_size, max_request_bytes).await? else {
        return Ok(0);
    };
    dead_letter(conn, fence, &batch.too_large, max_request_bytes).await?;
    // The last moment to notice a lost lease before a side effect the
    // database cannot fence: a leader frozen after this check sends this
    // round once more when it wakes (its delete below is then refused).
    if !fence.held() {
        return Err(fence.fenced().into());
    }
    let attempted: usize = batch.by_partition.values().map(Vec::len).sum();
    let (acked, failure) = produce(clients, batch.by_partition, max_request_bytes).await;
    projections::infra::failpoint::hit(AFTER_PRODUCE);
    if !fence.held() {
        // Frozen or cut off during the produce: the lease may be another's
        // now, and a request whose answer was lost may have landed all the
        // same. Delete nothing; count what was sent as possibly sent again.
        resent_after_lease_lost(attempted);
        return Err(fence.fenced().into());
    }
    delete_acked(conn, fence, &acked, attempted).await?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(i64::try_from(acked.len() + batch.too_large.len()).unwrap_or(i64::MAX)),
    }
}

/// A round's rows as records, per partition in position order, and those
/// too large for any produce request (position, order, size).
struct Batch {
    by_partition: BTreeMap<i32, Vec<(Record, i64)>>,
    too_large: Vec<(i64, uuid::Uuid, i64)>,
}

/// The oldest `batch_size` outbox rows as records (`None`: the outbox is
/// empty). Moved as stored: the relay never needs to understand a payload,
/// so an event written by a newer build is published like any other and its
/// consumers upcast (or hold it back) themselves.
async fn read(
    conn: &mut PgConnection,
    partitions: i32,
    batch_size: i64,
    max_request_bytes: usize,
) -> Result<Option<Batch>, RelayError> {
    let rows = projections::event_rows!(
        "FROM outbox JOIN events USING (position) ORDER BY position LIMIT $1",
        batch_size
    )
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut batch = Batch {
        by_partition: BTreeMap::new(),
        too_large: Vec::new(),
    };
    let record_limit = max_request_bytes.saturating_sub(BATCH_OVERHEAD);
    for row in rows {
        let position = row.position;
        let event = row.stored()?;
        let key = event.stream_id.to_string();
        let partition = kafka::partition_for(key.as_bytes(), partitions);
        let record = record(&event, key)?;
        let size = wire_size(&record);
        if size > record_limit {
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            batch.too_large.push((position, event.stream_id, size));
            continue;
        }
        batch
            .by_partition
            .entry(partition)
            .or_default()
            .push((record, position));
    }
    Ok(Some(batch))
}

/// Produces each partition's records: partitions in parallel; within one,
/// requests one after the other (so an order's events stay in order),
/// stopping at the first that fails. Returns the positions the broker
/// acknowledged and the last failure.
async fn produce(
    clients: &BTreeMap<i32, Arc<Partition>>,
    by_partition: BTreeMap<i32, Vec<(Record, i64)>>,
    max_request_bytes: usize,
) -> (Vec<i64>, Option<rskafka::client::error::Error>) {
    let sends = by_partition.into_iter().map(|(p, records)| {
        let client = clients.get(&p).cloned();
        let requests = split_by_bytes(records, max_request_bytes);
        async move {
            let mut acked = Vec::new();
            let Some(client) = client else {
                let e = rskafka::client::error::Error::InvalidResponse(format!(
                    "no client for partition {p}"
                ));
                return (p, acked, Some(e));
            };
            for request in requests {
                let (records, positions): (Vec<Record>, Vec<i64>) = request.into_iter().unzip();
                match client.produce(records).await {
                    Ok(_) => {
                        metrics::counter!("relay_produce_requests_total").increment(1);
                        acked.extend(positions);
                    }
                    Err(e) => return (p, acked, Some(e)),
                }
            }
            (p, acked, None)
        }
    });
    let mut acked: Vec<i64> = Vec::new();
    let mut failure = None;
    for (partition, positions, result) in join_all(sends).await {
        acked.extend(positions);
        if let Some(e) = result {
            tracing::warn!(partition, error = %e, "produce failed; the rows stay in the outbox");
            failure = Some(e);
        }
    }
    (acked, failure)
}

/// Deletes the acknowledged rows, if this relay still holds the lease;
/// otherwise deletes nothing and counts what it sent after losing it.
async fn delete_acked(
    conn: &mut PgConnection,
    fence: &Fence,
    acked: &[i64],
    attempted: usize,
) -> Result<(), RelayError> {
    if acked.is_empty() {
        return Ok(());
    }
    // The range lets Postgres walk the primary key over the batch instead
    // of filtering the whole outbox (8 ms against 2 ms for 3,000 of
    // 100,000 rows; the gap grows with the backlog).
    let (low, high) = acked
        .iter()
        .fold((i64::MAX, i64::MIN), |(l, h), p| (l.min(*p), h.max(*p)));
    let mut tx = conn.begin().await?;
    if let Err(e) = fence.check(&mut tx).await {
        // Another relay owns these rows now and publishes them again: what
        // this one sent after losing the lease are duplicates.
        resent_after_lease_lost(attempted);
        return Err(e.into());
    }
    let deleted = async {
        sqlx::query!(
            "DELETE FROM outbox WHERE position BETWEEN $2 AND $3 AND position = ANY($1)",
            acked,
            low,
            high,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    };
    if let Err(e) = deleted.await {
        // A leader frozen inside this transaction has its session ended
        // (the lease's idle-in-transaction limit) and the rows stay for the
        // next leader: sent again, if the lease is gone by now.
        if !fence.held() {
            resent_after_lease_lost(attempted);
        }
        return Err(e.into());
    }
    metrics::counter!("relay_published_total").increment(acked.len() as u64);
    Ok(())
}

/// Moves outbox rows whose record is larger than a produce request may be
/// out of the outbox, into `outbox_dead_letters` with the reason: retried
/// they would block their partition for ever. Counted and logged.
async fn dead_letter(
    conn: &mut PgConnection,
    fence: &Fence,
    too_large: &[(i64, uuid::Uuid, i64)],
    limit: usize,
) -> Result<(), RelayError> {
    if too_large.is_empty() {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    fence.check(&mut tx).await?;
    let positions: Vec<i64> = too_large.iter().map(|(p, _, _)| *p).collect();
    let sizes: Vec<i64> = too_large.iter().map(|(_, _, s)| *s).collect();
    for (position, order_id, size) in too_large {
        tracing::error!(position, %order_id, size, limit,
            "an event is larger than a produce request may be: dead-lettered (outbox_dead_letters), not published");
    }
    sqlx::query!(
        "WITH d AS (DELETE FROM outbox WHERE position = ANY($1) RETURNING position, stream_id)
         INSERT INTO outbox_dead_letters (position, stream_id, size_bytes, reason)
         SELECT d.position, d.stream_id, s.size,
                format('the record is %s bytes; KAFKA_MAX_REQUEST_BYTES is %s', s.size, $3::bigint)
           FROM d JOIN UNNEST($1::bigint[], $2::bigint[]) AS s(position, size) USING (position)
         ON CONFLICT (position) DO NOTHING",
        &positions,
        &sizes,
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("relay_dead_letters_total").increment(too_large.len() as u64);
    Ok(())
}

/// Counts records this relay sent (or may have sent: a request whose answer
/// was lost can have landed) after losing its lease: the new leader
/// publishes them again, duplicates the consumers absorb. At most one round.
fn resent_after_lease_lost(records: usize) {
    metrics::counter!("relay_resent_after_lease_lost_total").increment(records as u64);
    tracing::warn!(
        records,
        "sent records after losing the lease: the new leader publishes them again (duplicates consumers absorb); deleted nothing"
    );
}
