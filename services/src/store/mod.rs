//! The write side of the event store: load a stream, and append to it with an
//! expected version. An append writes the events, their outbox rows and the
//! request's idempotency record in one transaction: all of it or none.

mod error;

use domain::{Event, EventEnvelope, Metadata, OrderId};
use projections::{decode_event_row, EVENT_COLUMNS};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

pub use error::{is_unavailable, Result, StoreError};

/// A request's idempotency key, scoped (per user) and with the normalised
/// request it stands for.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
}

/// What an earlier request with the same idempotency key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub stream_id: Uuid,
    /// The stream's version right after that request.
    pub version: u64,
    pub log_position: i64,
}

/// The result of a successful append.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The new events, as stored (positions and timestamps filled in).
    pub events: Vec<EventEnvelope>,
    /// The global position of the last event written.
    pub last_position: i64,
}

#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every event of one stream, oldest first.
    #[instrument(skip_all, fields(order_id = %stream), err)]
    pub async fn load(&self, stream: OrderId) -> Result<Vec<EventEnvelope>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version"
        ))
        .bind(stream.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| decode_event_row(row).map_err(StoreError::from))
            .collect()
    }

    /// Appends `events` to `stream`, which must be at exactly `expected`
    /// (0 = the stream must not exist yet). Fails with
    /// [`StoreError::Conflict`] if another writer got there first, and with
    /// [`StoreError::IdempotencyKeyTaken`] if the key was used by a request
    /// that committed first; in both cases nothing is written.
    #[instrument(skip_all, fields(order_id = %stream, expected), err(level = "debug"))]
    pub async fn append(
        &self,
        stream: OrderId,
        expected: u64,
        events: &[Event],
        metadata: &Metadata,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Appended> {
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let first_version = expected + 1;
        let versions: Vec<i32> = (first_version..first_version + count)
            .map(|v| i32::try_from(v).map_err(|_| StoreError::VersionOverflow { stream }))
            .collect::<Result<_>>()?;
        let expected_i32 =
            i32::try_from(expected).map_err(|_| StoreError::VersionOverflow { stream })?;
        let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
        let types: Vec<&str> = events.iter().map(Event::event_type).collect();
        let schema_versions: Vec<i16> = events
            .iter()
            .map(|e| i16::try_from(e.schema_version()).unwrap_or(i16::MAX))
            .collect();
        let payloads: Vec<serde_json::Value> = events.iter().map(Event::payload).collect();
        let metadata_json = serde_json::to_value(metadata).map_err(StoreError::Encode)?;

        let mut tx = self.pool.begin().await?;

        // The version check and the insert are one statement: if the stream is
        // not at `expected`, nothing is inserted. A concurrent writer of the
        // same version blocks on the unique index until the first commits,
        // then fails with a unique violation, mapped to `Conflict`.
        let rows = sqlx::query(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata)
             SELECT $1, v.version, v.event_id, v.event_type, v.schema_version, v.payload, $7
               FROM UNNEST($2::int[], $3::uuid[], $4::text[], $5::smallint[], $6::jsonb[])
                    AS v(version, event_id, event_type, schema_version, payload)
              WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $8
             RETURNING position, version, recorded_at",
        )
        .bind(stream.as_uuid())
        .bind(&versions)
        .bind(&event_ids)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&metadata_json)
        .bind(expected_i32)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| StoreError::from_append(e, stream, expected))
        .inspect_err(|e| {
            if matches!(e, StoreError::Conflict { .. }) {
                metrics::counter!("event_store_append_conflicts_total").increment(1);
            }
        })?;

        if rows.len() != events.len() {
            metrics::counter!("event_store_append_conflicts_total").increment(1);
            return Err(StoreError::Conflict { stream, expected });
        }

        let mut stored: Vec<(i64, i32, OffsetDateTime)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        stored.sort_by_key(|(_, version, _)| *version);
        let positions: Vec<i64> = stored.iter().map(|(p, _, _)| *p).collect();
        let last_position = positions.last().copied().unwrap_or_default();

        sqlx::query("INSERT INTO outbox (position, stream_id) SELECT UNNEST($1::bigint[]), $2")
            .bind(&positions)
            .bind(stream.as_uuid())
            .execute(&mut *tx)
            .await?;

        if let Some(key) = idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, stream_id, version, log_position)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (scope, key) DO NOTHING",
            )
            .bind(&key.scope)
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(stream.as_uuid())
            .bind(versions.last().copied().unwrap_or(expected_i32))
            .bind(last_position)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Another request with this key committed first; ours never happened.
                return Err(StoreError::IdempotencyKeyTaken);
            }
        }

        tx.commit().await?;
        metrics::counter!("event_store_appends_total").increment(1);

        let events = events
            .iter()
            .cloned()
            .zip(stored)
            .zip(event_ids)
            .map(
                |((event, (position, version, recorded_at)), event_id)| EventEnvelope {
                    event_id,
                    stream_id: stream,
                    version: u64::try_from(version).unwrap_or_default(),
                    position: Some(position),
                    event,
                    metadata: metadata.clone(),
                    recorded_at,
                },
            )
            .collect();
        Ok(Appended {
            events,
            last_position,
        })
    }

    /// What the request that first used this idempotency key did, if any.
    pub async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT fingerprint, stream_id, version, log_position
               FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(IdempotencyRecord {
                fingerprint: r.try_get(0)?,
                stream_id: r.try_get(1)?,
                version: u64::try_from(r.try_get::<i32, _>(2)?).unwrap_or_default(),
                log_position: r.try_get(3)?,
            })
        })
        .transpose()
    }
}
