//! The write side of the event store: load a stream, and append to it with an
//! expected version. An append writes the events, their outbox rows and the
//! request's idempotency record in one transaction: all of it or none.

mod error;
mod group;
mod signal;

use domain::{Event, EventEnvelope, Metadata, OrderId, StoreId};
use sqlx::PgPool;
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

pub use error::{Result, StoreError};
pub use group::GroupCommit;
pub use signal::CommitSignal;

tokio::task_local! {
    /// Set by the HTTP layer around each request: the store marks it the
    /// moment an append is sent, so that a request cut off by its deadline
    /// knows whether its outcome is unknown.
    pub static WRITE_SENT: WriteSent;
}

/// Whether a request's append has been sent to the database.
#[derive(Debug, Clone, Default)]
pub struct WriteSent(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl WriteSent {
    /// The flag of the request this task serves, if it has one.
    fn current() -> Option<WriteSent> {
        WRITE_SENT.try_with(WriteSent::clone).ok()
    }

    /// Called once the append's connection is in hand, just before its
    /// statement goes: until then nothing was sent (a database that does not
    /// answer is "unavailable", not "outcome unknown").
    fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// True once an append of this request was sent (it may have committed).
    pub fn was_sent(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The most an event's metadata may take, as JSON. What a request puts there
/// is bounded (a request id of at most 128 plain characters, the actor), so
/// this is far above anything a request produces: a guard, not a budget.
pub const METADATA_MAX_BYTES: usize = 1024;

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

/// Each inserted event's position, version and time, in version order.
/// Each inserted event's position, version, time, and the pickup number the
/// append drew into it (a placement's first event).
type Inserted = Vec<(i64, i32, OffsetDateTime, Option<i32>)>;

#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    committed: Option<CommitSignal>,
    group: Option<GroupCommit>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            pool,
            committed: None,
            group: None,
        }
    }

    /// Appends that start a stream are committed together with the others
    /// that arrive at the same time (see [`GroupCommit`]).
    pub fn with_group_commit(mut self) -> Self {
        self.group = Some(GroupCommit::new(self.pool.clone()));
        self
    }

    /// Pokes `signal` after every append that committed, so the relay and the
    /// projection workers wake at once (see [`CommitSignal`]).
    pub fn with_commit_signal(mut self, signal: CommitSignal) -> Self {
        self.committed = Some(signal);
        self
    }

    /// The pool appends go through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every event of one stream, oldest first.
    #[instrument(skip_all, fields(order_id = %stream), err)]
    pub async fn load(&self, stream: OrderId) -> Result<Vec<EventEnvelope>> {
        self.load_rows(stream)
            .await?
            .into_iter()
            .map(|row| row.decode().map_err(StoreError::from))
            .collect()
    }

    /// Every row of one stream, oldest first, not yet decoded: for a reader
    /// that must judge who may see the stream before it says anything about
    /// the stream's events (one it cannot read included).
    pub async fn load_rows(&self, stream: OrderId) -> Result<Vec<infra::rows::EventRow>> {
        Ok(infra::event_rows!(
            "FROM events WHERE stream_id = $1 ORDER BY version",
            stream.as_uuid()
        )
        .fetch_all(&self.pool)
        .await?)
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
        let columns = Columns::of(stream, expected, events, metadata)?;
        self.append_columns(columns, events, metadata, idempotency)
            .await
    }

    /// Starts a new stream with `events` (a placement) on condition that the
    /// menu's generation is still `menu_generation`, the one the order was
    /// checked against: if it moved, nothing is written and the answer is
    /// [`StoreError::MenuChanged`] (check the order again, and place it
    /// again). The placement's pickup number is drawn from `pickup` (its
    /// store's day) in the same statement, and written into its first
    /// event: it commits with the order or not at all, so a refused or
    /// failed placement leaves no gap in the day's numbers.
    pub async fn place(
        &self,
        stream: OrderId,
        events: &[Event],
        metadata: &Metadata,
        idempotency: Option<&IdempotencyKey>,
        (menu_generation, pickup): (i64, (&StoreId, time::Date)),
    ) -> Result<Appended> {
        let mut columns = Columns::of(stream, 0, events, metadata)?;
        columns.menu_generation = Some(menu_generation);
        columns.draw = Some((pickup.0.to_string(), pickup.1));
        self.append_columns(columns, events, metadata, idempotency)
            .await
    }

    async fn append_columns(
        &self,
        columns: Columns,
        events: &[Event],
        metadata: &Metadata,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Appended> {
        let (stream, expected) = (columns.stream, columns.expected);
        let event_ids = columns.event_ids.clone();
        let guard = columns.menu_generation;
        let stored = match &self.group {
            Some(group) if expected == 0 => group.append(columns, idempotency.cloned()).await,
            _ => insert_one(&self.pool, &columns, idempotency).await,
        };
        // A placement that wrote nothing: its menu may have changed (or its
        // key was taken, or, for no new stream, never).
        let stored = match stored {
            Ok(rows) if rows.is_empty() && self.menu_moved_from(guard).await? => {
                return Err(StoreError::MenuChanged)
            }
            Err(StoreError::IdempotencyKeyTaken) if self.menu_moved_from(guard).await? => {
                return Err(StoreError::MenuChanged)
            }
            stored => stored?,
        };
        if stored.len() != events.len() {
            metrics::counter!("event_store_append_conflicts_total").increment(1);
            return Err(StoreError::Conflict { stream, expected });
        }
        let last_position = stored
            .iter()
            .map(|(p, _, _, _)| *p)
            .max()
            .unwrap_or_default();
        if let Some(signal) = &self.committed {
            signal.poke();
        }
        metrics::counter!("event_store_appends_total").increment(1);
        let events = events
            .iter()
            .cloned()
            .zip(stored)
            .zip(event_ids)
            .map(
                |((event, (position, version, recorded_at, pickup)), event_id)| EventEnvelope {
                    event_id,
                    stream_id: stream,
                    version: u64::try_from(version).unwrap_or_default(),
                    position: Some(position),
                    event: with_pickup_number(event, pickup),
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

    /// Whether the menu's generation is no longer `guard` (never, for an
    /// append without one).
    async fn menu_moved_from(&self, guard: Option<i64>) -> Result<bool> {
        let Some(guard) = guard else {
            return Ok(false);
        };
        Ok(crate::menu::generation(&self.pool).await? != guard)
    }

    /// What the request that first used this idempotency key did, if any.
    pub async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let row = sqlx::query!(
            "SELECT fingerprint, stream_id, version, log_position
               FROM idempotency_keys WHERE scope = $1 AND key = $2",
            scope,
            key,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| IdempotencyRecord {
            fingerprint: r.fingerprint,
            stream_id: r.stream_id,
            version: u64::try_from(r.version).unwrap_or_default(),
            log_position: r.log_position,
        }))
    }
}

/// The one statement of an append, so one round trip and no explicit
/// transaction: the events, their outbox rows and the idempotency record
/// commit together or not at all (a statement is atomic).
/// - The version check is part of the insert: if the stream is not at
///   `expected`, nothing is inserted. A concurrent writer of the same
///   version blocks on the unique index until the first commits, then
///   fails with a unique violation, mapped to `Conflict`.
/// - A key another request committed first violates the key's primary
///   key, mapped to `IdempotencyKeyTaken`: ours never happened.
///
/// Returns each inserted event's position, version and time.
async fn insert_one(
    pool: &PgPool,
    columns: &Columns,
    idempotency: Option<&IdempotencyKey>,
) -> Result<Inserted> {
    let (scope, key, fingerprint) = match idempotency {
        Some(k) => (Some(&k.scope), Some(&k.key), Some(&k.fingerprint)),
        None => (None, None, None),
    };
    let (stream, expected) = (columns.stream, columns.expected);
    // Acquired first: a failure to get a connection sent nothing; one of
    // the statement may have committed (`StoreError::from_append`).
    let mut conn = pool.acquire().await?;
    if let Some(sent) = &columns.sent {
        sent.mark();
    }
    let (draw_store, draw_day) = columns.draw.as_ref().map(|(s, d)| (s.as_str(), *d)).unzip();
    let rows = sqlx::query!(
        r#"WITH go AS (
             SELECT (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $8
                AND ($12::bigint IS NULL OR $12 = (SELECT generation FROM menu_generation)) AS ok),
         drawn AS (
             INSERT INTO pickup_counters AS c (store_id, day, last)
             SELECT $13::text, $14::date, 1 FROM go WHERE go.ok AND $13::text IS NOT NULL
             ON CONFLICT (store_id, day) DO UPDATE SET last = c.last + 1
             RETURNING last),
         appended AS (
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata)
             SELECT $1, v.version, v.event_id, v.event_type, v.schema_version,
                    CASE WHEN d.last IS NULL OR v.version <> 1 THEN v.payload
                         ELSE jsonb_set(v.payload, '{pickup_number}', to_jsonb(d.last)) END,
                    $7
               FROM UNNEST($2::int[], $3::uuid[], $4::text[], $5::smallint[], $6::jsonb[])
                    AS v(version, event_id, event_type, schema_version, payload)
                    LEFT JOIN drawn d ON true
              WHERE (SELECT ok FROM go)
             RETURNING position, version, recorded_at, transaction_id,
                       (payload->>'pickup_number')::int AS pickup_number),
         outboxed AS (
             INSERT INTO outbox (position, stream_id, transaction_id)
             SELECT position, $1, transaction_id FROM appended),
         keyed AS (
             INSERT INTO idempotency_keys (scope, key, fingerprint, stream_id, version, log_position)
             SELECT $9, $10, $11, $1, max(version), max(position) FROM appended
              WHERE $9::text IS NOT NULL
             HAVING count(*) > 0)
         SELECT position AS "position!", version AS "version!", recorded_at AS "recorded_at!",
                pickup_number
           FROM appended ORDER BY version"#,
        stream.as_uuid(),
        &columns.versions,
        &columns.event_ids,
        &columns.types as &[&str],
        &columns.schema_versions,
        &columns.payloads,
        &columns.metadata,
        columns.expected_i32,
        scope as Option<&String>,
        key as Option<&String>,
        fingerprint as Option<&String>,
        columns.menu_generation,
        draw_store as Option<&str>,
        draw_day,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| StoreError::from_append(e, stream, expected))
    .inspect_err(|e| {
        if matches!(e, StoreError::Conflict { .. }) {
            metrics::counter!("event_store_append_conflicts_total").increment(1);
        }
    })?;
    Ok(rows
        .into_iter()
        .map(|r| (r.position, r.version, r.recorded_at, r.pickup_number))
        .collect())
}

/// `event` with the pickup number its append drew into it (a placement's).
fn with_pickup_number(event: Event, drawn: Option<i32>) -> Event {
    match (event, drawn.and_then(|n| u32::try_from(n).ok())) {
        (Event::OrderPlaced(mut placed), Some(number)) => {
            placed.pickup_number = Some(number);
            Event::OrderPlaced(placed)
        }
        (event, _) => event,
    }
}

/// An append's events as the columns of its statement, checked: versions
/// that fit, metadata within its bound.
struct Columns {
    stream: OrderId,
    expected: u64,
    expected_i32: i32,
    versions: Vec<i32>,
    event_ids: Vec<Uuid>,
    types: Vec<&'static str>,
    schema_versions: Vec<i16>,
    payloads: Vec<serde_json::Value>,
    metadata: serde_json::Value,
    /// Appended only while the menu's generation is this one (a placement
    /// checked against the catalog read at it); `None`: unconditionally.
    menu_generation: Option<i64>,
    /// A placement's pickup number, drawn in the append's statement from
    /// this store's day (so it commits or rolls back with the order).
    draw: Option<(String, time::Date)>,
    /// The request's "write sent" flag, set when its statement goes.
    sent: Option<WriteSent>,
}

impl Columns {
    fn of(
        stream: OrderId,
        expected: u64,
        events: &[Event],
        metadata: &Metadata,
    ) -> Result<Columns> {
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let first_version = expected + 1;
        let versions: Vec<i32> = (first_version..first_version + count)
            .map(|v| i32::try_from(v).map_err(|_| StoreError::VersionOverflow { stream }))
            .collect::<Result<_>>()?;
        let expected_i32 =
            i32::try_from(expected).map_err(|_| StoreError::VersionOverflow { stream })?;
        let metadata = serde_json::to_value(metadata).map_err(StoreError::Encode)?;
        let metadata_size = metadata.to_string().len();
        if metadata_size > METADATA_MAX_BYTES {
            return Err(StoreError::MetadataTooLarge {
                size: metadata_size,
                limit: METADATA_MAX_BYTES,
            });
        }
        Ok(Columns {
            stream,
            expected,
            expected_i32,
            versions,
            event_ids: events.iter().map(|_| Uuid::now_v7()).collect(),
            types: events.iter().map(Event::event_type).collect(),
            schema_versions: events
                .iter()
                .map(|e| i16::try_from(e.schema_version()).unwrap_or(i16::MAX))
                .collect(),
            payloads: events.iter().map(Event::payload).collect(),
            metadata,
            menu_generation: None,
            draw: None,
            sent: WriteSent::current(),
        })
    }
}
