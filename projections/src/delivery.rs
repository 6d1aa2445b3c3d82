//! The delivery-status read model, fed from Kafka: the delivery side sees only
//! what the topic carries. Its tables live in the `delivery` schema, one set
//! per generation (`delivery.order_status_g{N}`, read through the view
//! `delivery.order_status`); its Kafka offsets (`delivery.offsets`) commit in
//! the same transaction as the read-model changes, so a batch takes effect
//! once however the consumer dies. At-least-once delivery sends duplicates
//! (a relay that crashed between produce and delete re-sends): the per-order
//! version guard absorbs them.
//!
//! rskafka has no consumer groups: one consumer process holds the
//! projection's lease ([`crate::lease`]) and reads every partition, one task
//! each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::{DrinkOptions, EventEnvelope, OptionValue, Status, StoredEvent};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::RecordAndOffset;
use sqlx::{Acquire, PgConnection, PgExecutor, PgPool, Row};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::checkpoint::{self, REBUILD_LOCK};
use crate::error::{ProjectionError, Result};
use crate::held::{self, Incoming, Source};
use crate::kafka;
use crate::lease::{self, Fence, Lease};
use crate::lock::SessionLock;
use crate::order_view::{add_option_columns, apply_moves, options_of, reduce};
use crate::projection::Projection;
use crate::runner::{sleep_or_cancel, Backoff};

/// The projection's registry name.
pub const NAME: &str = "delivery";

/// How long a fetch of an idle partition waits for records (a long poll), at
/// most. Kafka answers as soon as records arrive; Tansu 0.6 always waits the
/// full time, records or not (its fetch loop sleeps out the remainder), and
/// records that arrive meanwhile wait for the next fetch. So the wait adapts:
/// none right after a fetch that brought records, then 5 ms, doubling with
/// every empty fetch up to this. Under load the added latency stays a few
/// milliseconds on either broker; an idle partition costs 40 fetches a second.
const FETCH_WAIT_MS: i32 = 25;
const FIRST_EMPTY_WAIT_MS: i32 = 5;

/// How the consumer reaches Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions to create the topic with if it does not exist yet.
    pub partitions: i32,
    /// The largest produce request the relay sends, in bytes.
    pub max_request_bytes: usize,
    /// Replicas of each partition when the relay creates the topic.
    pub replication_factor: i16,
    /// `retention.ms` when the relay creates the topic (-1: for ever).
    pub retention_ms: i64,
}

impl KafkaSource {
    /// Kafka's own default for `message.max.bytes`.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

    /// How the topic is created when it does not exist.
    pub fn topic_settings(&self) -> kafka::TopicSettings {
        kafka::TopicSettings {
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            retention_ms: self.retention_ms,
        }
    }
}

/// One row of the delivery read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub coffee_name: String,
    pub coffee_qty: i32,
    pub options: DrinkOptions,
    pub status: Status,
    pub ordered_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i32,
    pub last_position: i64,
}

/// The delivery read model as a [`Projection`]: its tables and how events
/// apply to them. (Feeding it, from Kafka, is [`run_consumer`]'s.)
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryReadModel;

impl Projection for DeliveryReadModel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "order statuses fed from Kafka (view delivery.order_status): the delivery view"
    }

    fn reads_log(&self) -> bool {
        false
    }

    async fn create_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        create_generation(conn, generation).await
    }

    async fn upgrade_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<bool> {
        let t = table(generation);
        let options = add_option_columns(conn, &t).await?;
        // Rows applied before event ids were kept have none: nothing to
        // compare for their versions.
        sqlx::query(&format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS event_ids jsonb NOT NULL DEFAULT '{{}}'"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(options)
    }

    async fn finish_generation(&self, _conn: &mut PgConnection, _generation: i32) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        publish(conn, generation).await
    }

    async fn drop_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", table(generation)))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> Result<()> {
        apply(conn, generation, events).await
    }
}

fn table(generation: i32) -> String {
    format!("delivery.order_status_g{generation}")
}

async fn create_generation(conn: &mut PgConnection, generation: i32) -> Result<()> {
    let t = table(generation);
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
            order_id      uuid        PRIMARY KEY,
            user_id       text        NOT NULL,
            coffee_name   text        NOT NULL,
            coffee_qty    integer     NOT NULL,
            status        text        NOT NULL CHECK (status IN
                ('received', 'preparing', 'delivering', 'delivered', 'cancelled')),
            ordered_at    timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL,
            version       integer     NOT NULL,
            last_position bigint      NOT NULL,
            temperature   text        NOT NULL DEFAULT 'hot' CHECK (temperature IN ('hot', 'iced')),
            size          text        NOT NULL DEFAULT 'regular' CHECK (size IN ('regular', 'large')),
            event_ids     jsonb       NOT NULL DEFAULT '{{}}'
        )"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "CREATE INDEX IF NOT EXISTS order_status_g{generation}_status_idx
            ON {t} (status, ordered_at, order_id)"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn publish(conn: &mut PgConnection, generation: i32) -> Result<()> {
    sqlx::query(&format!(
        "CREATE OR REPLACE VIEW delivery.order_status AS
         SELECT order_id, user_id, coffee_name, coffee_qty, status, ordered_at, updated_at,
                version, last_position, temperature, size
           FROM {}",
        table(generation)
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies envelopes (one partition's, in offset order) to `generation`.
///
/// Every row remembers the id of the event it applied at each version
/// (`event_ids`, version → event id). An event at a version the row has seen
/// with another id is not the same event: the log was restored to an earlier
/// point in time and wrote anew what the topic already carried. The version
/// guard alone would pass over it silently; here it is
/// [`ProjectionError::DifferentEvents`], and the order is held back.
async fn apply(conn: &mut PgConnection, generation: i32, events: &[EventEnvelope]) -> Result<()> {
    let t = table(generation);
    let ids_by_order = check_event_ids(conn, &t, events).await?;
    let changes = reduce(events.iter())?;
    let (placed, moved): (Vec<_>, Vec<_>) = changes.iter().partition(|(_, c)| c.placed.is_some());
    if !placed.is_empty() {
        let mut ids = Vec::with_capacity(placed.len());
        let mut users = Vec::with_capacity(placed.len());
        let mut names = Vec::with_capacity(placed.len());
        let mut qtys = Vec::with_capacity(placed.len());
        let mut statuses = Vec::with_capacity(placed.len());
        let mut ordered = Vec::with_capacity(placed.len());
        let mut updated = Vec::with_capacity(placed.len());
        let mut versions = Vec::with_capacity(placed.len());
        let mut positions = Vec::with_capacity(placed.len());
        let mut temperatures = Vec::with_capacity(placed.len());
        let mut sizes = Vec::with_capacity(placed.len());
        for (id, c) in &placed {
            let Some(p) = &c.placed else { continue };
            ids.push(*id);
            temperatures.push(p.options.temperature.code());
            sizes.push(p.options.size.code());
            users.push(p.user_id.as_str());
            names.push(p.coffee_name.as_str());
            qtys.push(i32::try_from(p.coffee_qty.get()).unwrap_or(i32::MAX));
            statuses.push(c.status.code());
            ordered.push(c.ordered_at);
            updated.push(c.updated_at);
            versions.push(c.version);
            positions.push(c.position);
        }
        sqlx::query(&format!(
            "INSERT INTO {t} AS v (order_id, user_id, coffee_name, coffee_qty, status, ordered_at,
                                   updated_at, version, last_position, temperature, size)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[], $8::int[], $9::bigint[],
                                  $10::text[], $11::text[])
             ON CONFLICT (order_id) DO UPDATE
                SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version, last_position = EXCLUDED.last_position
              WHERE v.version < EXCLUDED.version"
        ))
        .bind(&ids)
        .bind(&users)
        .bind(&names)
        .bind(&qtys)
        .bind(&statuses)
        .bind(&ordered)
        .bind(&updated)
        .bind(&versions)
        .bind(&positions)
        .bind(&temperatures)
        .bind(&sizes)
        .execute(&mut *conn)
        .await?;
    }
    apply_moves(conn, &t, &moved).await?;
    let (orders, ids): (Vec<Uuid>, Vec<serde_json::Value>) = ids_by_order.into_iter().unzip();
    sqlx::query(&format!(
        "UPDATE {t} AS v SET event_ids = v.event_ids || u.ids
           FROM UNNEST($1::uuid[], $2::jsonb[]) AS u(order_id, ids)
          WHERE v.order_id = u.order_id"
    ))
    .bind(&orders)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Compares the batch's event ids with those the rows applied at the same
/// versions; returns, per order, the ids to remember (`{"version": id}`).
async fn check_event_ids(
    conn: &mut PgConnection,
    table: &str,
    events: &[EventEnvelope],
) -> Result<std::collections::HashMap<Uuid, serde_json::Value>> {
    use std::collections::HashMap;
    let orders: Vec<Uuid> = events.iter().map(|e| e.stream_id.as_uuid()).collect();
    let known: HashMap<Uuid, serde_json::Value> = sqlx::query_as::<_, (Uuid, serde_json::Value)>(
        &format!("SELECT order_id, event_ids FROM {table} WHERE order_id = ANY($1)"),
    )
    .bind(&orders)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut seen: HashMap<Uuid, serde_json::Map<String, serde_json::Value>> = HashMap::new();
    let mut different = Vec::new();
    for e in events {
        let order = e.stream_id.as_uuid();
        let version = e.version.to_string();
        let id = e.event_id.to_string();
        let batch = seen.entry(order).or_default();
        let before = batch
            .get(&version)
            .or_else(|| known.get(&order).and_then(|ids| ids.get(&version)))
            .and_then(serde_json::Value::as_str);
        match before {
            Some(other) if other != id => {
                tracing::error!(%order, version = e.version, event_id = %e.event_id, applied = other,
                    "a different event at a version already applied: was the log restored to an earlier point in time?");
                different.push(order);
            }
            _ => {
                batch.insert(version, serde_json::Value::String(id));
            }
        }
    }
    if !different.is_empty() {
        different.sort();
        different.dedup();
        return Err(ProjectionError::DifferentEvents {
            order_ids: different,
        });
    }
    Ok(seen
        .into_iter()
        .map(|(order, ids)| (order, serde_json::Value::Object(ids)))
        .collect())
}

/// The next offset to read of each partition, for one generation.
pub async fn offsets(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    let rows = sqlx::query(
        "SELECT partition, next_offset FROM delivery.offsets WHERE generation = $1 AND topic = $2",
    )
    .bind(generation)
    .bind(topic)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Moves one partition's offset from `from` to `to` (compare-and-set), counting
/// the events applied.
///
/// `last` is the event id and offset of a record applied from this batch
/// (its first), if it has one: what [`check_partition`] looks for later.
#[allow(clippy::too_many_arguments)]
async fn advance(
    conn: &mut PgConnection,
    generation: i32,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    applied: i64,
    last: Option<(Uuid, i64)>,
) -> Result<()> {
    let updated = sqlx::query(
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
    )
    .bind(generation)
    .bind(topic)
    .bind(partition)
    .bind(from)
    .bind(to)
    .bind(applied)
    .bind(last.map(|(id, _)| id))
    .bind(last.map(|(_, offset)| offset))
    .execute(conn)
    .await?
    .rows_affected();
    if updated == 1 {
        Ok(())
    } else {
        Err(ProjectionError::CheckpointMoved {
            name: NAME.to_owned(),
        })
    }
}

/// A record that is not an order event at all, kept aside with its bytes.
struct DeadLetter {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    reason: String,
}

/// Reads fetched records. A record that is one of our envelopes is decoded
/// if this build can (otherwise the projection holds its order back); one
/// that is not ours at all (a foreign producer, corrupt bytes) is a dead
/// letter: kept with its bytes, counted, logged, and passed over.
fn read_records(
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

async fn dead_letter(
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
        sqlx::query(
            "INSERT INTO delivery.dead_letters (topic, partition, \"offset\", key, value, reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
        )
        .bind(topic)
        .bind(partition)
        .bind(d.offset)
        .bind(d.key)
        .bind(d.value)
        .bind(d.reason)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Fetches from `offset`. Records gone from the partition before they were
/// applied (deleted by retention: Kafka answers OffsetOutOfRange, Tansu an
/// empty fetch below the high watermark) are
/// [`ProjectionError::PartitionLost`], never passed over.
async fn fetch(
    client: &PartitionClient,
    offset: i64,
    max_wait_ms: i32,
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
        .fetch_records(offset, 1..4_000_000, max_wait_ms)
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
        Err(e) => Err(kafka(e)),
    }
}

/// How many records at the start of a partition are gone (deleted by
/// retention): the offset of the first record it still has.
async fn records_gone(client: &PartitionClient) -> Result<i64> {
    let kafka = |e: KafkaError| ProjectionError::Kafka(e.to_string());
    match client.fetch_records(0, 1..1_000_000, 0).await {
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
async fn check_partition(
    conn: &mut PgConnection,
    client: &PartitionClient,
    topic: &str,
    generation: i32,
) -> Result<()> {
    let partition = client.partition();
    let row: Option<(i64, Option<Uuid>, Option<i64>)> = sqlx::query_as(
        "SELECT next_offset, last_event_id, last_event_offset FROM delivery.offsets
          WHERE generation = $1 AND topic = $2 AND partition = $3",
    )
    .bind(generation)
    .bind(topic)
    .bind(partition)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((next, last_id, last_offset)) = row else {
        return Ok(());
    };
    if next == 0 {
        return Ok(());
    }
    let lost = |reason: String| Err(ProjectionError::PartitionLost { partition, reason });
    let probe = last_offset.unwrap_or(next - 1).max(0);
    // A fetch that may wait: some brokers (Tansu) answer an immediate one
    // with no records even when there are.
    let (records, high_watermark) = match client.fetch_records(probe, 1..4_000_000, 500).await {
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

/// The next offset to read of one partition, for one generation.
async fn next_offset(
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

/// One batch of one partition into `generation` from offset `from`, in one
/// transaction on `db`. Returns the records consumed and the next offset.
///
/// `live` carries the consumer's fence when `generation` is the live one:
/// the batch then also checks that the generation is still active and the
/// lease still the consumer's. The fetch holds no database connection (a
/// long poll of an idle partition would pin one); the offset's
/// compare-and-set catches a `from` gone stale.
async fn step_partition<'c>(
    db: impl Acquire<'c, Database = sqlx::Postgres>,
    client: &PartitionClient,
    topic: &str,
    (generation, from): (i32, i64),
    live: Option<&Fence>,
    max_wait_ms: i32,
) -> Result<(usize, i64)> {
    let partition = client.partition();
    let records = fetch(client, from, max_wait_ms).await?;
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
    let mut ids: Vec<&str> = incoming
        .iter()
        .filter_map(|i| i.event.as_ref().ok())
        .filter_map(|e| e.metadata.correlation_id.as_deref())
        .collect();
    ids.dedup();
    ids.truncate(20);
    let span =
        tracing::info_span!("apply", projection = NAME, partition, request_ids = %ids.join(","));
    let offsets: std::collections::HashMap<uuid::Uuid, i64> = incoming
        .iter()
        .filter_map(|i| match (&i.event, &i.source) {
            (Ok(e), Source::Record { offset, .. }) => Some((e.event_id, *offset)),
            _ => None,
        })
        .collect();
    let count = incoming.len();
    // What `check_partition` looks for later: the batch's first record, at
    // the offset this fetch started from (a broker answers a fetch there
    // whatever it does with offsets inside a batch: Tansu answers nothing).
    let last_ours = incoming.first().and_then(|i| match (&i.event, &i.source) {
        (Ok(e), Source::Record { offset, .. }) if *offset == from => Some((e.event_id, *offset)),
        (Err(u), Source::Record { offset, .. }) if *offset == from => {
            Some((u.stored.event_id, *offset))
        }
        _ => None,
    });
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
    crate::failpoint::hit(crate::failpoint::PROJECTION_BEFORE_COMMIT);
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

/// How often a stopped partition looks again (an operator's rebuild or a
/// new topic may have set things right).
const PARTITION_RECHECK: Duration = Duration::from_secs(5);

/// Stops consuming a partition whose topic no longer holds what was applied
/// from it: loudly (an error line, a gauge, a row `status` shows), never by
/// passing over what came before.
async fn stop_partition(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
    reason: &str,
) -> Result<()> {
    let new: bool = sqlx::query_scalar(
        "INSERT INTO delivery.stopped_partitions (topic, partition, reason) VALUES ($1, $2, $3)
         ON CONFLICT (topic, partition) DO UPDATE SET reason = EXCLUDED.reason
         RETURNING (xmax = 0)",
    )
    .bind(topic)
    .bind(partition)
    .bind(reason)
    .fetch_one(conn)
    .await?;
    metrics::gauge!("delivery_partition_stopped", "partition" => partition.to_string()).set(1.0);
    if new {
        tracing::error!(projection = NAME, topic, partition, reason,
            "delivery partition stopped: the topic lost records it had applied (docs/runbook.md, \"The topic lost records\")");
    }
    Ok(())
}

async fn resume_partition(conn: &mut PgConnection, topic: &str, partition: i32) -> Result<()> {
    let was_stopped =
        sqlx::query("DELETE FROM delivery.stopped_partitions WHERE topic = $1 AND partition = $2")
            .bind(topic)
            .bind(partition)
            .execute(conn)
            .await?
            .rows_affected()
            > 0;
    metrics::gauge!("delivery_partition_stopped", "partition" => partition.to_string()).set(0.0);
    if was_stopped {
        tracing::warn!(
            projection = NAME,
            topic,
            partition,
            "delivery partition resumed"
        );
    }
    Ok(())
}

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
    let mut waiting_logged = false;
    let mut asked = false;
    while !shutdown.is_cancelled() {
        let lease = match Lease::try_acquire(&pool, &lease::projection(NAME), lease_ttl).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if !waiting_logged {
                    tracing::info!(
                        projection = NAME,
                        "another consumer runs this projection; standing by"
                    );
                    waiting_logged = true;
                }
                crate::runner::ask_for_handover(&pool, NAME, &mut asked).await;
                sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
                continue;
            }
            Err(e) => {
                let delay = backoff.grow();
                tracing::warn!(projection = NAME, error = %e, ?delay, "cannot take the consumer's lease; retrying");
                sleep_or_cancel(delay, &shutdown).await;
                continue;
            }
        };
        waiting_logged = false;
        asked = false;
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
async fn connect_topic(source: &KafkaSource) -> Result<(Arc<Client>, Vec<i32>)> {
    let client = kafka::connect(&source.brokers, Duration::from_secs(5))
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?;
    let partitions = kafka::find_topic(&client, &source.topic)
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?
        .ok_or_else(|| ProjectionError::Kafka(format!("topic {} does not exist", source.topic)))?;
    Ok((Arc::new(client), partitions))
}

async fn consume(
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
    // The relay creates the topic; creating it here too would race it (and
    // the losing side's client logs an error). Wait for it instead.
    let client = Arc::new(
        kafka::connect(&source.brokers, Duration::from_secs(5))
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?,
    );
    let mut logged = false;
    let partitions = loop {
        match kafka::find_topic(&client, &source.topic)
            .await
            .map_err(|e| ProjectionError::Kafka(e.to_string()))?
        {
            Some(partitions) => break partitions,
            None if shutdown.is_cancelled() => return Ok(()),
            None => {
                if !logged {
                    tracing::info!(projection = NAME, topic = %source.topic, "waiting for the relay to create the topic");
                    logged = true;
                }
                sleep_or_cancel(Duration::from_millis(200), shutdown).await;
            }
        }
    };
    tracing::info!(projection = NAME, topic = %source.topic, ?partitions, token = fence.token(), "delivery consumer running");
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    // The held list: released when this build can, handed over when a
    // standby can read more of it.
    tasks.spawn({
        let (pool, stop, fence) = (pool.clone(), stop.clone(), fence.clone());
        async move {
            let mut watch = crate::runner::HeldWatch::default();
            while !stop.is_cancelled() {
                let mut conn = pool.acquire().await?;
                crate::runner::look_at_held(&mut conn, &fence, &DeliveryReadModel, &mut watch)
                    .await?;
                drop(conn);
                sleep_or_cancel(crate::runner::HELD_CHECK_EVERY, &stop).await;
            }
            Ok(())
        }
    });
    for partition in partitions {
        let pc = client
            .partition_client(source.topic.clone(), partition, UnknownTopicHandling::Retry)
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

/// Consumes one partition into the live generation until `stop`, an error
/// or the loss of the lease. It holds a pooled connection only to check the
/// partition and to commit a batch, never across a fetch, so a topic with
/// more partitions than the pool has connections is consumed all the same.
async fn consume_partition(
    pool: PgPool,
    pc: PartitionClient,
    topic: String,
    fence: Fence,
    stop: CancellationToken,
) -> Result<()> {
    let partition = pc.partition();
    let mut wait = FIRST_EMPTY_WAIT_MS;
    // The generation and the next offset, between batches (this task owns
    // the partition under the lease, so only a failed step makes it stale).
    let mut at: Option<(i32, i64)> = None;
    while !stop.is_cancelled() {
        if !fence.held() {
            return Err(fence.fenced());
        }
        let (generation, from) = match at {
            Some(at) => at,
            None => {
                let mut conn = pool.acquire().await?;
                let generation = checkpoint::active_generation(&mut conn, NAME).await?;
                match check_partition(&mut conn, &pc, &topic, generation).await {
                    Ok(()) => resume_partition(&mut conn, &topic, partition).await?,
                    Err(ProjectionError::PartitionLost { reason, .. }) => {
                        stop_partition(&mut conn, &topic, partition, &reason).await?;
                        drop(conn);
                        sleep_or_cancel(PARTITION_RECHECK, &stop).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                (
                    generation,
                    next_offset(&mut conn, generation, &topic, partition).await?,
                )
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = fence.lost() => return Err(fence.fenced()),
            stepped = step_partition(&pool, &pc, &topic, (generation, from), Some(&fence), wait) => match stepped {
                Ok((0, _)) => {
                    at = Some((generation, from));
                    wait = (wait * 2).clamp(FIRST_EMPTY_WAIT_MS, FETCH_WAIT_MS);
                }
                Ok((_, next)) => {
                    at = Some((generation, next));
                    wait = 0;
                    // Let records gather: one transaction for the next few
                    // milliseconds' worth, not one each.
                    crate::runner::linger(&stop).await;
                }
                Err(ProjectionError::CheckpointMoved { .. }) => at = None,
                Err(ProjectionError::PartitionLost { reason, .. }) => {
                    let mut conn = pool.acquire().await?;
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

const ROW_COLUMNS: &str = "order_id, user_id, coffee_name, coffee_qty, status, ordered_at, \
     updated_at, version, last_position, temperature, size";

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<DeliveryRow> {
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<Status>()
        .map_err(|e| ProjectionError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(DeliveryRow {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        coffee_name: row.try_get("coffee_name")?,
        coffee_qty: row.try_get("coffee_qty")?,
        options: options_of(row)?,
        status,
        ordered_at: row.try_get("ordered_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        last_position: row.try_get("last_position")?,
    })
}

/// Every order now in `status`, oldest order first.
pub async fn list_by_status<'e>(
    db: impl PgExecutor<'e>,
    status: Status,
) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status WHERE status = $1 ORDER BY ordered_at, order_id"
    ))
    .bind(status.code())
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// One order's delivery status.
pub async fn get<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<Option<DeliveryRow>> {
    let row = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

/// The partitions the live consumer stopped, with why.
pub async fn stopped_partitions<'e>(
    db: impl PgExecutor<'e>,
    topic: &str,
) -> Result<Vec<(i32, String)>> {
    Ok(sqlx::query_as(
        "SELECT partition, reason FROM delivery.stopped_partitions WHERE topic = $1 ORDER BY partition",
    )
    .bind(topic)
    .fetch_all(db)
    .await?)
}

/// Every row, by order id (for verification).
pub async fn all_rows<'e>(db: impl PgExecutor<'e>) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status ORDER BY order_id"
    ))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// Events the delivery projection has applied (sum over partitions).
pub async fn events_applied<'e>(db: impl PgExecutor<'e>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(o.events_applied), 0)::bigint FROM delivery.offsets o
           JOIN projections p ON p.name = 'delivery' AND p.active_generation = o.generation",
    )
    .fetch_one(db)
    .await?)
}

/// The fold of the log as the delivery model must show it (for verification).
pub fn expected_from_orders(orders: &[crate::OrderRow]) -> Vec<DeliveryRow> {
    orders
        .iter()
        .map(|o| DeliveryRow {
            order_id: o.order_id,
            user_id: o.user_id.clone(),
            coffee_name: o.coffee_name.clone(),
            coffee_qty: o.coffee_qty,
            options: o.options,
            status: o.status,
            ordered_at: o.ordered_at,
            updated_at: o.updated_at,
            version: o.version,
            last_position: o.last_position,
        })
        .collect()
}
