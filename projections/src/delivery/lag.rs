//! Where the delivery projection stands, in the log's terms like the order
//! read model: the last log position it applied, the log's head, and how
//! many events it has not applied yet and how long ago the oldest of them
//! was recorded. Those are the events still in the outbox (not published)
//! plus the records on the topic past its offsets (published, not consumed;
//! read from the brokers when they answer, so a re-sent duplicate counts
//! too: the lag is at most this).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::operate::{ProjectionStatus, TopicProgress};

use super::offsets::offsets;
use super::partition::FetchSize;
use super::{events_applied, KafkaSource, NAME};

/// How long the brokers get to answer before the status does without them.
const BROKERS_WAIT: Duration = Duration::from_secs(3);

/// The delivery projection's status; with `source`, the topic's ends and
/// the records not consumed yet count in the lag.
pub async fn status(
    pool: &PgPool,
    source: Option<&KafkaSource>,
    head: i64,
) -> Result<ProjectionStatus> {
    let mut conn = pool.acquire().await?;
    let generation = checkpoint::active_generation(&mut conn, NAME).await?;
    // The view is the projection's (created at its install, not by a
    // migration): checked at run time.
    let (position, updated_at): (i64, Option<OffsetDateTime>) = sqlx::query_as(
        "SELECT coalesce((SELECT max(last_position) FROM delivery.order_status), 0),
                (SELECT max(updated_at) FROM delivery.offsets WHERE generation = $1)",
    )
    .bind(generation)
    .fetch_one(&mut *conn)
    .await?;
    let outbox =
        sqlx::query!(r#"SELECT count(*) AS "rows!", min(created_at) AS oldest FROM outbox"#)
            .fetch_one(&mut *conn)
            .await?;
    let (outbox_rows, outbox_oldest) = (outbox.rows, outbox.oldest);
    let applied = events_applied(&mut *conn).await?;
    let topic = match source {
        Some(source) => {
            let at = offsets(&mut conn, generation, &source.topic).await?;
            let ends = tokio::time::timeout(BROKERS_WAIT, unconsumed(source, &at))
                .await
                .ok()
                .and_then(std::result::Result::ok);
            Some(TopicProgress {
                topic: source.topic.clone(),
                offsets: at,
                ends: ends.as_ref().map(|(ends, _)| ends.clone()),
                oldest_unconsumed: ends.and_then(|(_, oldest)| oldest),
            })
        }
        None => None,
    };
    let lag_records = topic.as_ref().and_then(TopicProgress::lag_records);
    let oldest = [
        outbox_oldest,
        topic.as_ref().and_then(|t| t.oldest_unconsumed),
    ]
    .into_iter()
    .flatten()
    .min();
    let now = OffsetDateTime::now_utc();
    Ok(ProjectionStatus {
        name: NAME.to_owned(),
        generation,
        position,
        head,
        lag_events: outbox_rows + lag_records.unwrap_or(0),
        lag: oldest.map_or(Duration::ZERO, |t| {
            Duration::try_from(now - t).unwrap_or(Duration::ZERO)
        }),
        events_applied: applied,
        updated_at: updated_at.unwrap_or(now),
        topic,
    })
}

/// Each partition's end (the offset the next record will get), and when the
/// oldest record past `at` was recorded (its timestamp: the event's).
async fn unconsumed(
    source: &KafkaSource,
    at: &BTreeMap<i32, i64>,
) -> Result<(BTreeMap<i32, i64>, Option<OffsetDateTime>)> {
    let failed = |e: rskafka::client::error::Error| ProjectionError::Kafka(e.to_string());
    let client = source
        .broker(BROKERS_WAIT)
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?;
    let mut ends = BTreeMap::new();
    let mut oldest: Option<OffsetDateTime> = None;
    let Some(partitions) = client
        .find_topic(&source.topic)
        .await
        .map_err(|e| ProjectionError::Kafka(e.to_string()))?
    else {
        return Ok((ends, oldest));
    };
    for p in partitions {
        let pc = client.partition(&source.topic, p).await.map_err(failed)?;
        let next = at.get(&p).copied().unwrap_or(0);
        // The fetch's high watermark is the end (ListOffsets(latest) is not
        // reliable on every broker: Tansu's memory engine). Only the first
        // record is looked at: the least a fetch asks for.
        let (records, end) = pc
            .fetch_records(next, 1..FetchSize::LEAST, 0)
            .await
            .map_err(failed)?;
        ends.insert(p, end);
        if next < end {
            let first = records.first().and_then(|r| {
                OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(r.record.timestamp.timestamp_millis()) * 1_000_000,
                )
                .ok()
            });
            oldest = [oldest, first].into_iter().flatten().min();
        }
    }
    Ok((ends, oldest))
}
