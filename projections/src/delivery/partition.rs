//! One partition: fetching (records gone are loud, never passed over),
//! checking that it still holds what was applied, one batch into a
//! generation, and stopping or resuming it.

use std::sync::Arc;

use domain::StoredEvent;
use rskafka::client::error::{Error as KafkaError, ProtocolError, RequestError};
use rskafka::client::partition::OffsetAt;
use rskafka::record::RecordAndOffset;
use sqlx::{Acquire, PgConnection};
use tracing::Instrument;
use uuid::Uuid;

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::held::{self, Incoming, Source};
use infra::broker::Partition;
use infra::lease::Fence;

use super::offsets::advance;
use super::{DeliveryReadModel, NAME};

/// A record that is not an order event at all, kept aside with its bytes.
pub(super) struct DeadLetter {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    reason: String,
}

/// Reads fetched records. A record that is one of our envelopes is decoded
/// if this build can (otherwise the projection holds its order back); one
/// that is not ours at all (a foreign producer, corrupt bytes) is a dead
/// letter: kept with its bytes, counted, logged, and passed over.
pub(super) fn read_records(
    records: &[RecordAndOffset],
    topic: &Arc<str>,
    partition: i32,
) -> (Vec<Incoming>, Vec<DeadLetter>) {
    let mut incoming = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    for r in records {
        let value = r.record.value.as_deref().unwrap_or_default();
        match serde_json::from_slice::<StoredEvent>(value) {
            Ok(stored) => incoming.push(Incoming::decode(
                Source::Record {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset,
                },
                stored,
            )),
            Err(e) => {
                tracing::error!(%topic, partition, offset = r.offset, error = %e,
                    "not an order event envelope: dead-lettered (delivery.dead_letters)");
                dead.push(DeadLetter {
                    offset: r.offset,
                    key: r.record.key.clone(),
                    value: r.record.value.clone(),
                    reason: format!("not an order event envelope: {e}"),
                });
            }
        }
    }
    (incoming, dead)
}

pub(super) async fn dead_letter(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
    dead: Vec<DeadLetter>,
) -> Result<()> {
    if dead.is_empty() {
        return Ok(());
    }
    metrics::counter!("delivery_dead_letters_total").increment(dead.len() as u64);
    for d in dead {
        sqlx::query!(
            "INSERT INTO delivery.dead_letters (topic, partition, \"offset\", key, value, reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
            topic,
            partition,
            d.offset,
            d.key,
            d.value,
            d.reason,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// How many bytes of records a fetch asks for. A fetch too large for the
/// request deadline was retried at the same size for ever: Tansu 0.6 on
/// SQLite spends time on every record it answers with (ADR 0021), so a
/// consumer thousands of records behind timed out, reconnected, asked for
/// the same thousands again, and never caught up while the broker kept
/// serving the abandoned requests. Now a fetch that is not answered in time
/// is asked again for a quarter of the bytes (down to [`FetchSize::LEAST`]),
/// and every answered fetch doubles it back (up to [`FetchSize::MOST`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FetchSize(i32);

impl FetchSize {
    /// One batch's worth: about 1,500 of this product's events.
    pub const MOST: i32 = 1 << 20;
    /// Still a few events. Each is far smaller: Kafka answers a record
    /// larger than the bytes asked for alone, but Tansu 0.6 answers nothing.
    pub const LEAST: i32 = 16 << 10;

    pub fn most() -> FetchSize {
        FetchSize(Self::MOST)
    }

    pub fn bytes(self) -> i32 {
        self.0
    }

    /// After an answered fetch.
    pub fn grown(self) -> FetchSize {
        FetchSize(self.0.saturating_mul(2).min(Self::MOST))
    }

    /// After a fetch the broker did not answer in time; `None` when it was
    /// already the least (the broker is not slow but gone: reconnect).
    pub fn shrunk(self) -> Option<FetchSize> {
        (self.0 > Self::LEAST).then(|| FetchSize((self.0 / 4).max(Self::LEAST)))
    }
}

/// Fetches from `offset`. Records gone from the partition before they were
/// applied (deleted by retention: Kafka answers OffsetOutOfRange, Tansu an
/// empty fetch below the high watermark) are
/// [`ProjectionError::PartitionLost`], never passed over.
pub(super) async fn fetch(
    client: &Partition,
    offset: i64,
    (size, max_wait_ms): (FetchSize, i32),
) -> Result<Vec<RecordAndOffset>> {
    let kafka = |e: KafkaError| ProjectionError::Kafka(e.to_string());
    let gone = |earliest: i64| {
        ProjectionError::PartitionLost {
        partition: client.partition(),
        reason: format!(
            "records {offset}..{earliest} were deleted from the partition (retention?) before they were applied"
        ),
    }
    };
    match client
        .fetch_records(offset, 1..size.bytes(), max_wait_ms)
        .await
    {
        Ok((records, high_watermark)) if records.is_empty() && high_watermark < offset => {
            Err(ProjectionError::PartitionLost {
                partition: client.partition(),
                reason: format!(
                    "the partition ends at offset {high_watermark}, below the {offset} records already applied from it: the topic was deleted and recreated, or lost records (an unclean leader election)"
                ),
            })
        }
        Ok((records, high_watermark)) if records.is_empty() && high_watermark > offset => {
            let earliest = client.get_offset(OffsetAt::Earliest).await.map_err(kafka)?;
            if earliest > offset {
                return Err(gone(earliest));
            }
            Ok(records)
        }
        // Tansu answers a fetch below the records retention left with the
        // next ones it still has, without an error.
        Ok((records, _)) if records.first().is_some_and(|r| r.offset > offset) => {
            let first = records.first().map_or(offset, |r| r.offset);
            Err(gone(first))
        }
        Ok((records, _)) => Ok(records),
        Err(KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        }) => {
            let earliest = client.get_offset(OffsetAt::Earliest).await.map_err(kafka)?;
            if earliest <= offset {
                // Past the end: nothing there yet.
                return Ok(Vec::new());
            }
            Err(gone(earliest))
        }
        Err(KafkaError::Request(RequestError::IO(e))) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(ProjectionError::FetchTimedOut {
                partition: client.partition(),
                bytes: size.bytes(),
                detail: e.to_string(),
            })
        }
        Err(e) => Err(kafka(e)),
    }
}

/// How many records at the start of a partition are gone (deleted by
/// retention): the offset of the first record it still has.
pub(super) async fn records_gone(client: &Partition) -> Result<i64> {
    let kafka = |e: KafkaError| ProjectionError::Kafka(e.to_string());
    match client.fetch_records(0, 1..FetchSize::LEAST, 0).await {
        Ok((records, high_watermark)) => Ok(match records.first() {
            Some(first) => first.offset,
            // Nothing left of what was written.
            None => high_watermark,
        }),
        Err(KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        }) => client.get_offset(OffsetAt::Earliest).await.map_err(kafka),
        Err(e) => Err(kafka(e)),
    }
}

/// Checks that the partition still holds what the stored offsets say was
/// applied from it: its end is not below them, and the record at the offset
/// remembered from the last batch is the event applied from it (a topic
/// deleted and recreated can have grown past the stored offset with other
/// records).
pub(super) async fn check_partition(
    conn: &mut PgConnection,
    client: &Partition,
    topic: &str,
    generation: i32,
) -> Result<()> {
    let partition = client.partition();
    let row = sqlx::query!(
        "SELECT next_offset, last_event_id, last_event_offset FROM delivery.offsets
          WHERE generation = $1 AND topic = $2 AND partition = $3",
        generation,
        topic,
        partition
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let (next, last_id, last_offset) = (row.next_offset, row.last_event_id, row.last_event_offset);
    if next == 0 {
        return Ok(());
    }
    let lost = |reason: String| Err(ProjectionError::PartitionLost { partition, reason });
    let probe = last_offset.unwrap_or(next - 1).max(0);
    // A fetch that may wait: some brokers (Tansu) answer an immediate one
    // with no records even when there are. Only the record at `probe` (the
    // first) is looked at.
    let (records, high_watermark) =
        match client.fetch_records(probe, 1..FetchSize::LEAST, 500).await {
            Ok(fetched) => fetched,
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            }) => (Vec::new(), 0),
            Err(e) => return Err(ProjectionError::Kafka(e.to_string())),
        };
    if high_watermark < next {
        return lost(format!(
            "the partition ends at offset {high_watermark}, below the {next} records already applied from it: the topic was deleted and recreated, or lost records (an unclean leader election)"
        ));
    }
    if let (Some(expected), Some(at)) = (last_id, last_offset) {
        let found = records
            .iter()
            .find(|r| r.offset == at)
            .and_then(|r| serde_json::from_slice::<StoredEvent>(r.record.value.as_deref()?).ok())
            .map(|e| e.event_id);
        if found != Some(expected) {
            return lost(format!(
                "the record at offset {at} is not event {expected}, which was applied from it: the topic was deleted and recreated"
            ));
        }
    }
    Ok(())
}

/// One batch of one partition into `generation` from offset `from`, in one
/// transaction on `db`. Returns the records consumed and the next offset.
///
/// `live` carries the consumer's fence when `generation` is the live one:
/// the batch then also checks that the generation is still active and the
/// lease still the consumer's. The fetch holds no database connection (a
/// long poll of an idle partition would pin one); the offset's
/// compare-and-set catches a `from` gone stale.
pub(super) async fn step_partition<'c>(
    db: impl Acquire<'c, Database = sqlx::Postgres>,
    client: &Partition,
    topic: &str,
    (generation, from): (i32, i64),
    live: Option<&Fence>,
    fetching: (FetchSize, i32),
) -> Result<(usize, i64)> {
    let partition = client.partition();
    let records = fetch(client, from, fetching).await?;
    let Some(last) = records.last() else {
        return Ok((0, from));
    };
    let next = last.offset + 1;
    let topic_name: Arc<str> = Arc::from(topic);
    let (incoming, dead) = read_records(&records, &topic_name, partition);
    let mut tx = db.begin().await?;
    if let Some(fence) = live {
        if checkpoint::active_generation_locked(&mut tx, NAME).await? != generation {
            tx.rollback().await?;
            return Err(ProjectionError::CheckpointMoved {
                name: NAME.to_owned(),
            });
        }
        fence.check(&mut tx).await?;
    }
    let span = tracing::info_span!("apply", projection = NAME, partition,
        request_ids = %request_ids(&incoming));
    let offsets = record_offsets(&incoming);
    let count = incoming.len();
    let last_ours = first_at(&incoming, from);
    let changed: Vec<uuid::Uuid> = incoming
        .iter()
        .filter_map(|e| e.event.as_ref().ok())
        .map(|e| e.stream_id.as_uuid())
        .collect();
    dead_letter(&mut tx, topic, partition, dead).await?;
    let ready = held::sort_out(&mut tx, NAME, generation, incoming).await?;
    held::apply_or_hold(&mut tx, &DeliveryReadModel, generation, ready, |e| {
        format!(
            "{topic}/{partition}/{}",
            offsets.get(&e.event_id).copied().unwrap_or_default()
        )
    })
    .instrument(span.clone())
    .await?;
    advance(
        &mut tx,
        generation,
        topic,
        partition,
        from,
        next,
        i64::try_from(count).unwrap_or(i64::MAX),
        last_ours,
    )
    .await?;
    if live.is_some() {
        infra::notify::DELIVERY
            .announce_orders(&mut *tx, changed)
            .await?;
    }
    infra::failpoint::hit(infra::failpoint::PROJECTION_BEFORE_COMMIT);
    tx.commit().await?;
    metrics::counter!("projection_batches_total", "projection" => NAME).increment(1);
    metrics::counter!("projection_events_applied_total", "projection" => NAME)
        .increment(count as u64);
    tracing::debug!(
        partition,
        events = count,
        next_offset = next,
        "delivery batch applied"
    );
    Ok((records.len(), next))
}

/// The distinct correlation (request) ids of a batch, at most 20, for its
/// log lines.
fn request_ids(incoming: &[Incoming]) -> String {
    let mut ids: Vec<&str> = incoming
        .iter()
        .filter_map(|i| i.event.as_ref().ok())
        .filter_map(|e| e.metadata.correlation_id.as_deref())
        .collect();
    ids.dedup();
    ids.truncate(20);
    ids.join(",")
}

/// Each readable event's record offset, for the held list's sources.
fn record_offsets(incoming: &[Incoming]) -> std::collections::HashMap<Uuid, i64> {
    incoming
        .iter()
        .filter_map(|i| match (&i.event, &i.source) {
            (Ok(e), Source::Record { offset, .. }) => Some((e.event_id, *offset)),
            _ => None,
        })
        .collect()
}

/// What `check_partition` looks for later: the batch's first record, at
/// the offset this fetch started from (a broker answers a fetch there
/// whatever it does with offsets inside a batch: Tansu answers nothing).
fn first_at(incoming: &[Incoming], from: i64) -> Option<(Uuid, i64)> {
    incoming.first().and_then(|i| match (&i.event, &i.source) {
        (Ok(e), Source::Record { offset, .. }) if *offset == from => Some((e.event_id, *offset)),
        (Err(u), Source::Record { offset, .. }) if *offset == from => {
            Some((u.stored.event_id, *offset))
        }
        _ => None,
    })
}
