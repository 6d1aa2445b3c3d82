//! The relay's rounds: read a batch of outbox rows, produce them per
//! partition, delete (fenced) the rows the broker acknowledged.
//!
//! Two ways to read:
//! - [`round`]: the oldest rows by position, whatever transaction wrote them,
//!   one round at a time (nothing in flight while it reads). Used while the
//!   outbox is short, and after every drain, so that a long transaction
//!   elsewhere in the cluster never holds rows back.
//! - [`drain`], for a backlog: rounds overlap. While one round's records are
//!   produced, the previous round's rows are deleted and the next round is
//!   read (on a second connection), after the last row read, in the log's gap-safe order
//!   `(transaction_id, position)` and only below the horizon (the oldest
//!   transaction still running). Rows still in flight are not read again,
//!   and a row that commits late sorts after the cursor, never behind it
//!   (the reading order of `infra::rows::Cursor`). A partition's records are produced one round
//!   after the other, so an order's events reach the topic in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use infra::broker::Partition;
use infra::kafka;
use infra::lease::Fence;
use infra::rows::Cursor;
use rskafka::record::Record;
use sqlx::{Acquire, PgConnection};

use super::records::{record, split_by_bytes, wire_size, OutboxRow, BATCH_OVERHEAD};
use super::{RelayError, AFTER_PRODUCE};

/// What a round works with.
pub(super) struct Rounds<'a> {
    pub fence: &'a Fence,
    pub clients: &'a BTreeMap<i32, Arc<Partition>>,
    pub partitions: i32,
    pub batch_size: i64,
    pub max_request_bytes: usize,
}

/// One round, nothing else in flight: the oldest `batch_size` rows by
/// position, produced, the acknowledged ones deleted. Returns the rows
/// dealt with.
pub(super) async fn round(conn: &mut PgConnection, r: &Rounds<'_>) -> Result<i64, RelayError> {
    let Some(batch) = read(conn, r, None).await? else {
        return Ok(0);
    };
    dead_letter(conn, r.fence, &batch.too_large, r.max_request_bytes).await?;
    let dealt = batch.rows;
    let (acked, attempted, failure) = send(r, batch.by_partition).await?;
    delete_acked(conn, r.fence, &acked, attempted).await?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(dealt),
    }
}

/// Drains a backlog with rounds in flight, until a read comes back short
/// of a full batch (what remains is left to [`round`]). While a round's
/// records are produced, the next round is read on `reader` and the
/// previous one's rows are deleted on `deleter`. Returns the rows dealt
/// with. On a failure the rows not acknowledged stay in the outbox, and the
/// caller starts again from the oldest row.
pub(super) async fn drain(
    reader: &mut PgConnection,
    deleter: &mut PgConnection,
    r: &Rounds<'_>,
) -> Result<i64, RelayError> {
    let Some(mut current) = read(reader, r, Some(Cursor::START)).await? else {
        return Ok(0);
    };
    dead_letter(reader, r.fence, &current.too_large, r.max_request_bytes).await?;
    let mut dealt = 0;
    // The previous round's acknowledged rows, deleted while this one's
    // records are produced.
    let mut done: (Vec<i64>, usize) = (Vec::new(), 0);
    loop {
        let (full, last, rows) = (current.rows >= r.batch_size, current.last, current.rows);
        let previous = std::mem::take(&mut done);
        let reading = async {
            if !full {
                return Ok(None);
            }
            let next = read(reader, r, Some(last)).await?;
            if let Some(next) = &next {
                dead_letter(reader, r.fence, &next.too_large, r.max_request_bytes).await?;
            }
            Ok::<_, RelayError>(next)
        };
        let (sent, deleted, next) = tokio::join!(
            send(r, current.by_partition),
            delete_acked(deleter, r.fence, &previous.0, previous.1),
            reading
        );
        let (acked, attempted, failure) = sent?;
        deleted?;
        let next = next?;
        dealt += rows;
        if let Some(e) = failure {
            delete_acked(deleter, r.fence, &acked, attempted).await?;
            return Err(e.into());
        }
        match next {
            Some(next) => {
                done = (acked, attempted);
                current = next;
            }
            None => {
                delete_acked(deleter, r.fence, &acked, attempted).await?;
                return Ok(dealt);
            }
        }
    }
}

/// Produces a round's records, checking the lease on both sides: the last
/// moment to notice a lost lease before a side effect the database cannot
/// fence is just before; a leader frozen or cut off during the produce may
/// have lost it meanwhile (its records then count as possibly sent again,
/// and nothing is deleted). Returns the acknowledged positions, how many
/// records were attempted, and the last produce failure.
async fn send(
    r: &Rounds<'_>,
    by_partition: BTreeMap<i32, Vec<(Record, i64)>>,
) -> Result<(Vec<i64>, usize, Option<rskafka::client::error::Error>), RelayError> {
    if !r.fence.held() {
        return Err(r.fence.fenced().into());
    }
    let attempted: usize = by_partition.values().map(Vec::len).sum();
    let (acked, failure) = produce(r.clients, by_partition, r.max_request_bytes).await;
    infra::failpoint::hit(AFTER_PRODUCE);
    if !r.fence.held() {
        resent_after_lease_lost(attempted);
        return Err(r.fence.fenced().into());
    }
    Ok((acked, attempted, failure))
}

/// A round's rows as records, per partition in reading order, and those
/// too large for any produce request (position, order, size).
struct Batch {
    by_partition: BTreeMap<i32, Vec<(Record, i64)>>,
    too_large: Vec<(i64, uuid::Uuid, i64)>,
    /// Rows read (published or dead-lettered).
    rows: i64,
    /// The last row read, in `(transaction_id, position)` order (meaningful
    /// for a gap-safe read, whose rows come in that order).
    last: Cursor,
}

/// The select list of an outbox row with its event, payload and metadata
/// as text (the relay forwards their bytes).
macro_rules! outbox_rows {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            OutboxRow,
            r#"SELECT outbox.transaction_id::text::bigint AS "transaction_id!",
                      events.position, events.stream_id, events.version, events.event_id,
                      events.event_type, events.schema_version,
                      events.payload::text AS "payload!", events.metadata::text AS "metadata!",
                      events.recorded_at
                 FROM outbox JOIN events USING (position) "# + $rest
            $(, $arg)*
        )
    };
}

/// The next `batch_size` outbox rows as records (`None`: none to read):
/// `after: None` the oldest by position; `Some(cursor)` those after the
/// cursor in the log's gap-safe order, below the horizon. Moved as stored:
/// the relay never needs to understand a payload.
async fn read(
    conn: &mut PgConnection,
    r: &Rounds<'_>,
    after: Option<Cursor>,
) -> Result<Option<Batch>, RelayError> {
    let rows = match after {
        None => {
            outbox_rows!("ORDER BY outbox.position LIMIT $1", r.batch_size)
                .fetch_all(&mut *conn)
                .await?
        }
        Some(after) => {
            outbox_rows!(
                "WHERE (outbox.transaction_id, outbox.position) > ($1::bigint::text::xid8, $2)
                   AND outbox.transaction_id < log_horizon()
                 ORDER BY outbox.transaction_id, outbox.position LIMIT $3",
                after.transaction_id,
                after.position,
                r.batch_size
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let Some(last) = rows.last().map(|row| Cursor {
        transaction_id: row.transaction_id,
        position: row.position,
    }) else {
        return Ok(None);
    };
    let mut batch = Batch {
        by_partition: BTreeMap::new(),
        too_large: Vec::new(),
        rows: i64::try_from(rows.len()).unwrap_or(i64::MAX),
        last,
    };
    let record_limit = r.max_request_bytes.saturating_sub(BATCH_OVERHEAD);
    for row in rows {
        let record = record(&row)?;
        let size = wire_size(&record);
        if size > record_limit {
            let size = i64::try_from(size).unwrap_or(i64::MAX);
            batch.too_large.push((row.position, row.stream_id, size));
            continue;
        }
        let key = record.key.as_deref().unwrap_or_default();
        let partition = kafka::partition_for(key, r.partitions);
        batch
            .by_partition
            .entry(partition)
            .or_default()
            .push((record, row.position));
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
