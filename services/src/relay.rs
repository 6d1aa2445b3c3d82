//! The outbox relay: publishes committed events to Kafka, then deletes their
//! outbox rows. At-least-once: a crash between the broker's acknowledgement
//! and the delete re-sends those events, and consumers absorb the duplicates.
//!
//! - Order: rows are read in position order and every order's events go to one
//!   partition (Kafka's default partitioner on the order id), produced in that
//!   order; a partition whose produce failed keeps its rows, which are read
//!   again, still before any later event of the same order.
//! - One publisher at a time: the relay that holds the topic's lease
//!   ([`projections::infra::lease`]); other relay processes wait as hot standbys and
//!   take over within a second of its death, within the lease's time to live
//!   when it freezes. A relay that wakes after losing its lease deletes
//!   nothing: its delete is fenced, and what it sent meanwhile (at most the
//!   round it had prepared) is counted as re-sent
//!   (docs/adr/0007-relay-leadership.md).
//! - Broker down: the API keeps accepting orders, rows wait in the outbox, the
//!   relay retries with backoff and drains the backlog when the broker returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use domain::StoredEvent;
use futures::future::join_all;
use projections::infra::kafka;
use projections::infra::kafka::KafkaSource;
use projections::infra::lease::{self, Fence, Lease};
use projections::infra::wait::{listen, sleep_or_cancel, wait_for_news, Backoff};
use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use sqlx::{Acquire, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

/// The failpoint between the broker's acknowledgement and the outbox delete.
pub const AFTER_PRODUCE: &str = "relay.after_produce";

#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub brokers: Vec<String>,
    pub topic: String,
    /// How to create the topic if it does not exist.
    pub settings: kafka::TopicSettings,
    /// Outbox rows per round.
    pub batch_size: i64,
    pub poll_interval: Duration,
    /// The largest produce request, in bytes (Kafka's `message.max.bytes`
    /// bounds a record batch, 1 MiB by default). A partition's records are
    /// split into requests below it; a single record too large for it is
    /// dead-lettered (`outbox_dead_letters`) instead of blocking its
    /// partition for ever.
    pub max_request_bytes: usize,
    /// How long the leader's lease lives without renewal.
    pub lease_ttl: Duration,
}

impl RelayOptions {
    /// The relay of `kafka`'s topic, with the defaults: rounds of 3,000 rows
    /// (~1,000 records per partition and produce: Tansu stalls on batches of
    /// about 100, ADR 0007, and a round's fixed costs spread), a poll every
    /// 500 ms when no notification came.
    pub fn new(kafka: &KafkaSource, lease_ttl: Duration) -> RelayOptions {
        RelayOptions {
            brokers: kafka.brokers.clone(),
            topic: kafka.topic.clone(),
            settings: kafka.topic_settings(),
            batch_size: 3000,
            poll_interval: Duration::from_millis(500),
            max_request_bytes: kafka.max_request_bytes,
            lease_ttl,
        }
    }
}

/// What a produce request adds around its records (the record batch
/// header), and around each record (lengths, offsets, timestamps as
/// varints), at most.
const BATCH_OVERHEAD: usize = 128;
const RECORD_OVERHEAD: usize = 40;

/// A record's size as it travels, at most.
fn wire_size(record: &Record) -> usize {
    RECORD_OVERHEAD
        + record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// Splits one partition's records, in order, into requests of at most
/// `limit` bytes each.
fn split_by_bytes(records: Vec<(Record, i64)>, limit: usize) -> Vec<Vec<(Record, i64)>> {
    let mut requests: Vec<Vec<(Record, i64)>> = Vec::new();
    let mut size = 0;
    for (record, position) in records {
        let n = wire_size(&record);
        match requests.last_mut() {
            Some(current) if size + n <= limit => {
                size += n;
                current.push((record, position));
            }
            _ => {
                size = BATCH_OVERHEAD + n;
                requests.push(vec![(record, position)]);
            }
        }
    }
    requests
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    #[error("event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    #[error("topic {topic} has {now} partitions but was published with {recorded}: an order's later events would land on another partition than its earlier ones; the relay does not publish (docs/runbook.md, \"The topic's partition count changed\")")]
    PartitionsChanged {
        topic: String,
        recorded: i32,
        now: i32,
    },
    #[error("lost the lease {lease:?} to another relay: stepped down")]
    Fenced { lease: String },
    #[error(transparent)]
    Projection(Box<projections::ProjectionError>),
}

/// How often a publishing relay checks that the topic's partition count is
/// still the one it publishes with.
const PARTITIONS_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Records the partition count a topic is first published with, and fails
/// when the topic has another count now.
async fn check_partitions(
    conn: &mut PgConnection,
    topic: &str,
    now: i32,
) -> Result<(), RelayError> {
    let recorded: i32 = sqlx::query_scalar(
        "WITH new AS (INSERT INTO kafka_topics (topic, partitions) VALUES ($1, $2)
                      ON CONFLICT (topic) DO NOTHING RETURNING partitions)
         SELECT partitions FROM new UNION ALL SELECT partitions FROM kafka_topics WHERE topic = $1
         LIMIT 1",
    )
    .bind(topic)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if recorded == now {
        metrics::gauge!("relay_partition_count_mismatch").set(0.0);
        return Ok(());
    }
    metrics::gauge!("relay_partition_count_mismatch").set(1.0);
    Err(RelayError::PartitionsChanged {
        topic: topic.to_owned(),
        recorded,
        now,
    })
}

impl From<projections::ProjectionError> for RelayError {
    fn from(e: projections::ProjectionError) -> Self {
        match e {
            projections::ProjectionError::Database(e) => RelayError::Database(e),
            projections::ProjectionError::Fenced { lease } => RelayError::Fenced { lease },
            projections::ProjectionError::Corrupt { position, what } => {
                RelayError::Corrupt { position, what }
            }
            other => RelayError::Projection(Box::new(other)),
        }
    }
}

/// Runs the relay until `shutdown`.
pub async fn run(pool: PgPool, options: RelayOptions, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    let mut delay = Duration::ZERO;
    while !shutdown.is_cancelled() {
        if !delay.is_zero() {
            sleep_or_cancel(delay, &shutdown).await;
        }
        let Some(lease) = Lease::wait_for(
            &pool,
            &lease::relay(&options.topic),
            options.lease_ttl,
            Duration::from_secs(1),
            &shutdown,
            || async {},
        )
        .await
        else {
            break;
        };
        let result = publish(&pool, lease.fence(), &options, &shutdown).await;
        lease.release().await;
        match result {
            Ok(()) => {
                backoff.reset();
                delay = Duration::ZERO;
            }
            Err(RelayError::Fenced { .. }) => {
                delay = Duration::from_secs(1);
            }
            Err(e @ RelayError::PartitionsChanged { .. }) => {
                metrics::counter!("relay_errors_total").increment(1);
                delay = Duration::from_secs(30);
                tracing::error!(error = %e, ?delay, "relay stopped publishing");
            }
            Err(e) => {
                metrics::counter!("relay_errors_total").increment(1);
                delay = backoff.grow();
                tracing::warn!(error = %e, ?delay, "relay failed; retrying");
            }
        }
    }
    tracing::info!("relay stopped");
}

/// While holding the lease: connect, make sure of the topic, then publish
/// rounds until shutdown, an error or the loss of the lease.
async fn publish(
    pool: &PgPool,
    fence: &Fence,
    options: &RelayOptions,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let mut conn = pool.acquire().await?;
    let conn = &mut *conn;
    let client = kafka::connect(&options.brokers, Duration::from_secs(5)).await?;
    let partitions = kafka::ensure_topic(&client, &options.topic, &options.settings).await?;
    let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
    check_partitions(conn, &options.topic, count).await?;
    let mut clients = BTreeMap::new();
    for p in partitions {
        clients.insert(
            p,
            Arc::new(
                client
                    .partition_client(options.topic.clone(), p, UnknownTopicHandling::Retry)
                    .await?,
            ),
        );
    }
    let mut listener = listen(pool, "relay").await;
    tracing::info!(topic = %options.topic, partitions = count, "relay publishing");
    let mut checked = std::time::Instant::now();
    while !shutdown.is_cancelled() {
        if checked.elapsed() >= PARTITIONS_CHECK_EVERY {
            checked = std::time::Instant::now();
            let now = kafka::find_topic(&client, &options.topic)
                .await?
                .map_or(0, |p| i32::try_from(p.len()).unwrap_or(i32::MAX));
            check_partitions(conn, &options.topic, now).await?;
        }
        let published = round(
            conn,
            fence,
            &clients,
            count,
            options.batch_size,
            options.max_request_bytes,
        )
        .await?;
        if published >= options.batch_size {
            continue;
        }
        tokio::select! {
            () = wait_for_news(&mut listener, options.poll_interval, shutdown) => {}
            () = fence.lost() => return Err(fence.fenced().into()),
        }
    }
    Ok(())
}

/// One round: read a batch of outbox rows, produce them per partition, delete
/// the rows the broker acknowledged. Returns the rows published.
async fn round(
    conn: &mut PgConnection,
    fence: &Fence,
    clients: &BTreeMap<i32, Arc<PartitionClient>>,
    partitions: i32,
    batch_size: i64,
    max_request_bytes: usize,
) -> Result<i64, RelayError> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM outbox o JOIN events e USING (position)
          ORDER BY o.position LIMIT $1",
        projections::infra::rows::EVENT_COLUMNS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(batch_size)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut by_partition: BTreeMap<i32, Vec<(Record, i64)>> = BTreeMap::new();
    let mut too_large: Vec<(i64, uuid::Uuid, i64)> = Vec::new();
    let record_limit = max_request_bytes.saturating_sub(BATCH_OVERHEAD);
    for row in &rows {
        let position: i64 = row.try_get("position")?;
        // Moved as stored: the relay never needs to understand a payload, so
        // an event written by a newer build is published like any other and
        // its consumers upcast (or hold it back) themselves.
        let event = projections::infra::rows::stored_event_row(row)?;
        let key = event.stream_id.to_string();
        let partition = kafka::partition_for(key.as_bytes(), partitions);
        let record = record(&event, key)?;
        let size = wire_size(&record);
        if size > record_limit {
            too_large.push((
                position,
                event.stream_id,
                i64::try_from(size).unwrap_or(i64::MAX),
            ));
            continue;
        }
        by_partition
            .entry(partition)
            .or_default()
            .push((record, position));
    }
    dead_letter(conn, fence, &too_large, max_request_bytes).await?;
    // The last moment to notice a lost lease before a side effect the
    // database cannot fence: a leader frozen after this check sends this
    // round once more when it wakes (its delete below is then refused).
    if !fence.held() {
        return Err(fence.fenced().into());
    }
    // Partitions in parallel; within one, requests one after the other (so
    // an order's events stay in order), stopping at the first that fails.
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
                match client.produce(records, Compression::NoCompression).await {
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
    projections::infra::failpoint::hit(AFTER_PRODUCE);
    if !acked.is_empty() {
        // The range lets Postgres walk the primary key over the batch instead
        // of filtering the whole outbox (8 ms against 2 ms for 3,000 of
        // 100,000 rows; the gap grows with the backlog).
        let (low, high) = acked
            .iter()
            .fold((i64::MAX, i64::MIN), |(l, h), p| (l.min(*p), h.max(*p)));
        let mut tx = conn.begin().await?;
        if let Err(e) = fence.check(&mut tx).await {
            // Another relay owns these rows now and publishes them again:
            // what this one sent after losing the lease are duplicates.
            metrics::counter!("relay_resent_after_lease_lost_total").increment(acked.len() as u64);
            tracing::warn!(
                records = acked.len(),
                "sent records after losing the lease: the new leader publishes them again (duplicates consumers absorb); deleted nothing"
            );
            return Err(e.into());
        }
        sqlx::query("DELETE FROM outbox WHERE position BETWEEN $2 AND $3 AND position = ANY($1)")
            .bind(&acked)
            .bind(low)
            .bind(high)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("relay_published_total").increment(acked.len() as u64);
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(i64::try_from(acked.len() + too_large.len()).unwrap_or(i64::MAX)),
    }
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
    sqlx::query(
        "WITH d AS (DELETE FROM outbox WHERE position = ANY($1) RETURNING position, stream_id)
         INSERT INTO outbox_dead_letters (position, stream_id, size_bytes, reason)
         SELECT d.position, d.stream_id, s.size,
                format('the record is %s bytes; KAFKA_MAX_REQUEST_BYTES is %s', s.size, $3::bigint)
           FROM d JOIN UNNEST($1::bigint[], $2::bigint[]) AS s(position, size) USING (position)
         ON CONFLICT (position) DO NOTHING",
    )
    .bind(&positions)
    .bind(&sizes)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("relay_dead_letters_total").increment(too_large.len() as u64);
    Ok(())
}

/// The Kafka record of an event: key = order id, value = the JSON envelope
/// as stored, headers for routing and tracing without parsing the value.
fn record(event: &StoredEvent, key: String) -> Result<Record, RelayError> {
    let value = serde_json::to_vec(event).map_err(|e| RelayError::Corrupt {
        position: event.position.unwrap_or_default(),
        what: e.to_string(),
    })?;
    let mut headers = BTreeMap::new();
    headers.insert(
        "event_type".to_owned(),
        event.event_type.as_bytes().to_vec(),
    );
    headers.insert(
        "schema_version".to_owned(),
        event.schema_version.to_string().into_bytes(),
    );
    headers.insert(
        "event_id".to_owned(),
        event.event_id.to_string().into_bytes(),
    );
    headers.insert("content-type".to_owned(), b"application/json".to_vec());
    if let Some(correlation) = event
        .metadata
        .get("correlation_id")
        .and_then(serde_json::Value::as_str)
    {
        headers.insert("correlation_id".to_owned(), correlation.as_bytes().to_vec());
    }
    let millis =
        i64::try_from(event.recorded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    Ok(Record {
        key: Some(key.into_bytes()),
        value: Some(value),
        headers,
        timestamp: Utc
            .timestamp_millis_opt(millis)
            .single()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(size: usize) -> Record {
        Record {
            key: None,
            value: Some(vec![b'x'; size]),
            headers: BTreeMap::new(),
            timestamp: Utc.timestamp_millis_opt(0).single().unwrap_or_default(),
        }
    }

    #[test]
    fn requests_stay_under_the_byte_limit_and_keep_the_order() {
        let records: Vec<(Record, i64)> = (0..50).map(|i| (record_of(900), i)).collect();
        let requests = split_by_bytes(records, 8 * 1024);
        assert!(requests.len() >= 6, "{} requests", requests.len());
        let mut next = 0;
        for request in &requests {
            let bytes: usize =
                BATCH_OVERHEAD + request.iter().map(|(r, _)| wire_size(r)).sum::<usize>();
            assert!(bytes <= 8 * 1024, "{bytes} bytes");
            for (_, position) in request {
                assert_eq!(*position, next, "in order");
                next += 1;
            }
        }
        assert_eq!(next, 50, "every record once");
    }

    #[test]
    fn a_record_at_the_limit_travels_alone() {
        let limit = 4096;
        let big = limit - BATCH_OVERHEAD - RECORD_OVERHEAD;
        let requests = split_by_bytes(
            vec![(record_of(10), 1), (record_of(big), 2), (record_of(10), 3)],
            limit,
        );
        let shape: Vec<Vec<i64>> = requests
            .iter()
            .map(|r| r.iter().map(|(_, p)| *p).collect())
            .collect();
        assert_eq!(shape, [vec![1], vec![2], vec![3]]);
    }
}
