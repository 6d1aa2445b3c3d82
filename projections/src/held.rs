//! Holding orders back: what a projection does with an event it cannot apply.
//!
//! The log is the truth, so a projection never skips an event, and one event
//! never stops a projection (let alone the process). An event this build
//! cannot read (an unknown type, a schema version from a newer build, a
//! malformed payload), or one that would move a read-model row that does not
//! exist, *holds back its order*: that event and every later event of the
//! same order go to the `projection_held` table with their wire form, while
//! every other order goes on. Later:
//!
//! - a build that can read them [`release`]s them (applies them in version
//!   order and removes them from the list), by itself, at start and whenever
//!   the list is looked at again;
//! - an operator may [`park`] one instead: the decision is recorded (who, as
//!   which database role, why) and the projection passes over that event;
//!   the order's later events then apply.
//!
//! Held events are per generation (a rebuild sorts the log out afresh);
//! parking decisions are per projection and outlive rebuilds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use domain::{EventEnvelope, StoredEvent};
use sqlx::{Acquire, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::projection::Projection;

/// Where an event was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The event log, at this global position.
    Log { position: i64 },
    /// A Kafka record.
    Record {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Log { position } => write!(f, "log position {position}"),
            Source::Record {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}/{offset}"),
        }
    }
}

/// An event this build could not read, as its wire form and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub stored: StoredEvent,
    pub reason: String,
}

/// One event as a projection receives it: read, or not readable by this build.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: Source,
    pub event: std::result::Result<EventEnvelope, Unreadable>,
}

impl Incoming {
    /// Decodes `stored` with this build's knowledge.
    pub fn decode(source: Source, stored: StoredEvent) -> Incoming {
        let event = match stored.decode() {
            Ok(envelope) => Ok(envelope),
            Err(e) => Err(Unreadable {
                stored,
                reason: e.to_string(),
            }),
        };
        Incoming { source, event }
    }

    fn stream_id(&self) -> Uuid {
        match &self.event {
            Ok(e) => e.stream_id.as_uuid(),
            Err(u) => u.stored.stream_id,
        }
    }
}

/// What a projection's status says about an event it holds back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEvent {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub source: Source,
    pub event_type: String,
    pub schema_version: u16,
    pub reason: String,
}

impl fmt::Display for UnreadableEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} of order {} ({} v{}, {}) cannot be read by this build: {}",
            self.event_id,
            self.order_id,
            self.event_type,
            self.schema_version,
            self.source,
            self.reason
        )
    }
}

/// An event on a projection's held list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEvent {
    pub projection: String,
    pub stream_id: Uuid,
    pub event_id: Uuid,
    pub version: i64,
    pub source: String,
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
    pub held_at: OffsetDateTime,
}

/// How many orders a projection holds back, and the first event it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSummary {
    pub projection: String,
    pub orders: i64,
    pub events: i64,
    pub first: Option<HeldEvent>,
}

/// An event on the held list, to insert.
struct ToHold {
    stream_id: Uuid,
    event_id: Uuid,
    version: i64,
    source: String,
    event_type: String,
    schema_version: i32,
    envelope: serde_json::Value,
    reason: String,
}

impl ToHold {
    fn new(source: &Source, stored: StoredEvent, reason: String) -> ToHold {
        ToHold::labelled(source.to_string(), stored, reason)
    }

    fn labelled(source: String, stored: StoredEvent, reason: String) -> ToHold {
        ToHold {
            stream_id: stored.stream_id,
            event_id: stored.event_id,
            version: i64::try_from(stored.version).unwrap_or(i64::MAX),
            source,
            event_type: stored.event_type.clone(),
            schema_version: i32::from(stored.schema_version),
            // A struct of ids, strings and JSON values always serialises.
            envelope: serde_json::to_value(&stored).unwrap_or(serde_json::Value::Null),
            reason,
        }
    }
}

/// Sorts a batch out, inside the caller's transaction: events of orders the
/// projection already holds back, and events this build cannot read (unless
/// an operator parked them), go to the held list; the rest are returned, in
/// order, to be applied.
pub async fn sort_out(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
    batch: Vec<Incoming>,
) -> Result<Vec<EventEnvelope>> {
    let streams: Vec<Uuid> = batch.iter().map(Incoming::stream_id).collect();
    let mut held: HashSet<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT stream_id FROM projection_held
          WHERE projection = $1 AND generation = $2 AND stream_id = ANY($3)",
    )
    .bind(projection)
    .bind(generation)
    .bind(&streams)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let unreadable: Vec<Uuid> = batch
        .iter()
        .filter_map(|i| i.event.as_ref().err().map(|u| u.stored.event_id))
        .collect();
    let parked = parked_among(conn, projection, &unreadable).await?;

    let mut ready = Vec::with_capacity(batch.len());
    let mut to_hold = Vec::new();
    for incoming in batch {
        let stream = incoming.stream_id();
        match incoming.event {
            Ok(envelope) if held.contains(&stream) => to_hold.push(ToHold::new(
                &incoming.source,
                StoredEvent::from(envelope),
                "waits behind an earlier event of this order that is held back".into(),
            )),
            Ok(envelope) => ready.push(envelope),
            Err(u) if parked.contains(&u.stored.event_id) => {
                metrics::counter!("projection_events_parked_total", "projection" => projection.to_owned())
                    .increment(1);
                tracing::warn!(projection, event_id = %u.stored.event_id, source = %incoming.source,
                    "passing over an event an operator parked");
            }
            Err(u) => {
                tracing::error!(projection, order_id = %stream, event_id = %u.stored.event_id,
                    source = %incoming.source, event_type = %u.stored.event_type,
                    schema_version = u.stored.schema_version, reason = %u.reason,
                    "cannot read an event: holding its order back, the projection goes on");
                held.insert(stream);
                to_hold.push(ToHold::new(&incoming.source, u.stored, u.reason));
            }
        }
    }
    insert(conn, projection, generation, to_hold).await?;
    Ok(ready)
}

/// Applies `events` to `generation` through `projection`. Moves of orders
/// the read model has no row for are corruption, and events at versions it
/// applied with other event ids are a conflict: those orders are held back
/// (with the reason) and the rest applied. Returns the events applied.
pub async fn apply_or_hold<P: Projection>(
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    mut events: Vec<EventEnvelope>,
    source_of: impl Fn(&EventEnvelope) -> String,
) -> Result<usize> {
    loop {
        let (order_ids, missing_row) = match projection.apply(conn, generation, &events).await {
            Ok(()) => return Ok(events.len()),
            Err(ProjectionError::MissingRows { order_ids }) => (order_ids, true),
            Err(ProjectionError::DifferentEvents { order_ids }) => (order_ids, false),
            Err(e) => return Err(e),
        };
        // Nothing of this call's moves was written (the projection checks
        // before it updates); its placements are idempotent.
        let orphans: HashSet<Uuid> = order_ids.into_iter().collect();
        let (bad, rest): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|e| orphans.contains(&e.stream_id.as_uuid()));
        events = rest;
        let name = projection.name();
        if missing_row && incomplete(conn, name, generation).await? {
            // An operator accepted this generation without the records
            // retention deleted: a move whose placement is gone is expected.
            metrics::counter!("projection_moves_without_placement_total", "projection" => name)
                .increment(bad.len() as u64);
            tracing::warn!(projection = name, generation, events = bad.len(),
                "moves of orders whose placement is gone from the source (an accepted incomplete model): passed over, counted");
            continue;
        }
        let (reason, counter) = if missing_row {
            (
                "corruption: the read model has no row for this order to move",
                "projection_corrupt_moves_total",
            )
        } else {
            (
                "conflict: the read model applied a different event at a version of this order (was the log restored to an earlier point in time?)",
                "projection_conflicting_events_total",
            )
        };
        metrics::counter!(counter, "projection" => name).increment(bad.len() as u64);
        let to_hold = bad
            .into_iter()
            .map(|e| {
                let source = source_of(&e);
                tracing::error!(projection = name, order_id = %e.stream_id, event_id = %e.event_id,
                    %source, reason, "holding the order back");
                ToHold::labelled(source, StoredEvent::from(e), reason.into())
            })
            .collect();
        insert(conn, name, generation, to_hold).await?;
    }
}

/// How many parking decisions `projection` has (they are never deleted).
pub async fn parked_count(conn: &mut PgConnection, projection: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM projection_parked WHERE projection = $1")
            .bind(projection)
            .fetch_one(conn)
            .await?,
    )
}

/// How many events `generation` of `projection` holds back.
pub async fn held_count(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
) -> Result<usize> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_held WHERE projection = $1 AND generation = $2",
    )
    .bind(projection)
    .bind(generation)
    .fetch_one(conn)
    .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether an operator accepted `generation` of `projection` as incomplete.
pub async fn incomplete(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_incomplete WHERE projection = $1 AND generation = $2)",
    )
    .bind(projection)
    .bind(generation)
    .fetch_one(conn)
    .await?)
}

async fn insert(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
    to_hold: Vec<ToHold>,
) -> Result<()> {
    if to_hold.is_empty() {
        return Ok(());
    }
    metrics::counter!("projection_events_held_total", "projection" => projection.to_owned())
        .increment(to_hold.len() as u64);
    let mut streams = Vec::with_capacity(to_hold.len());
    let mut ids = Vec::with_capacity(to_hold.len());
    let mut versions = Vec::with_capacity(to_hold.len());
    let mut sources = Vec::with_capacity(to_hold.len());
    let mut types = Vec::with_capacity(to_hold.len());
    let mut schema_versions = Vec::with_capacity(to_hold.len());
    let mut envelopes = Vec::with_capacity(to_hold.len());
    let mut reasons = Vec::with_capacity(to_hold.len());
    for h in to_hold {
        streams.push(h.stream_id);
        ids.push(h.event_id);
        versions.push(h.version);
        sources.push(h.source);
        types.push(h.event_type);
        schema_versions.push(h.schema_version);
        envelopes.push(h.envelope);
        reasons.push(h.reason);
    }
    // A redelivered record (Kafka) or a batch read again after a rollback
    // holds the same event again: once is enough.
    sqlx::query(
        "INSERT INTO projection_held (projection, generation, stream_id, event_id, version, source,
                                      event_type, schema_version, envelope, reason)
         SELECT $1, $2, * FROM UNNEST($3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[],
                                      $8::int[], $9::jsonb[], $10::text[])
         ON CONFLICT (projection, generation, event_id) DO NOTHING",
    )
    .bind(projection)
    .bind(generation)
    .bind(&streams)
    .bind(&ids)
    .bind(&versions)
    .bind(&sources)
    .bind(&types)
    .bind(&schema_versions)
    .bind(&envelopes)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

async fn parked_among(
    conn: &mut PgConnection,
    projection: &str,
    event_ids: &[Uuid],
) -> Result<HashSet<Uuid>> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT event_id FROM projection_parked WHERE projection = $1 AND event_id = ANY($2)",
    )
    .bind(projection)
    .bind(event_ids)
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect())
}

/// What one [`release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Held events this build could read, now applied.
    pub applied: usize,
    /// Held events an operator parked, now passed over.
    pub parked: usize,
    /// Events still held.
    pub still_held: usize,
}

/// Applies every held event of `generation` that can be applied now, order
/// by order in version order, stopping at each order's first event that
/// still cannot be read; parked events are passed over. One transaction.
pub async fn release<P: Projection>(
    conn: &mut PgConnection,
    fence: &crate::lease::Fence,
    projection: &P,
    generation: i32,
) -> Result<Released> {
    let name = projection.name();
    let mut tx = conn.begin().await?;
    fence.check(&mut tx).await?;
    let rows = sqlx::query(
        "SELECT stream_id, event_id, source, envelope FROM projection_held
          WHERE projection = $1 AND generation = $2
          ORDER BY stream_id, version
          FOR UPDATE",
    )
    .bind(name)
    .bind(generation)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Released::default());
    }
    let ids: Vec<Uuid> = rows
        .iter()
        .map(|r| r.try_get("event_id"))
        .collect::<std::result::Result<_, _>>()?;
    let parked = parked_among(&mut tx, name, &ids).await?;

    let mut done: Vec<Uuid> = Vec::new();
    let mut ready: Vec<EventEnvelope> = Vec::new();
    let mut sources: HashMap<Uuid, String> = HashMap::new();
    let mut parked_count = 0;
    let mut blocked: HashSet<Uuid> = HashSet::new();
    for row in &rows {
        let stream: Uuid = row.try_get("stream_id")?;
        let event_id: Uuid = row.try_get("event_id")?;
        if blocked.contains(&stream) {
            continue;
        }
        if parked.contains(&event_id) {
            parked_count += 1;
            done.push(event_id);
            continue;
        }
        let envelope: serde_json::Value = row.try_get("envelope")?;
        let decoded = serde_json::from_value::<StoredEvent>(envelope)
            .map_err(|e| e.to_string())
            .and_then(|s| s.decode().map_err(|e| e.to_string()));
        match decoded {
            Ok(e) => {
                sources.insert(e.event_id, row.try_get("source")?);
                done.push(event_id);
                ready.push(e);
            }
            Err(_) => {
                blocked.insert(stream);
            }
        }
    }
    if done.is_empty() {
        tx.rollback().await?;
        return Ok(Released {
            still_held: rows.len(),
            ..Released::default()
        });
    }
    // Take the events off the list first: an order found corrupt while
    // applying is held again, with the new reason.
    sqlx::query(
        "DELETE FROM projection_held
          WHERE projection = $1 AND generation = $2 AND event_id = ANY($3)",
    )
    .bind(name)
    .bind(generation)
    .bind(&done)
    .execute(&mut *tx)
    .await?;
    let applied = apply_or_hold(&mut tx, projection, generation, ready, |e| {
        sources.get(&e.event_id).cloned().unwrap_or_default()
    })
    .await?;
    let still_held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_held WHERE projection = $1 AND generation = $2",
    )
    .bind(name)
    .bind(generation)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let released = Released {
        applied,
        parked: parked_count,
        still_held: usize::try_from(still_held).unwrap_or(0),
    };
    tracing::info!(
        projection = name,
        generation,
        applied,
        parked = parked_count,
        still_held = released.still_held,
        "released held events"
    );
    metrics::counter!("projection_events_released_total", "projection" => name)
        .increment(applied as u64);
    Ok(released)
}

const HELD_COLUMNS: &str = "projection, stream_id, event_id, version, source, event_type, \
     schema_version, reason, held_at";

fn held_event(row: &sqlx::postgres::PgRow) -> Result<HeldEvent> {
    Ok(HeldEvent {
        projection: row.try_get("projection")?,
        stream_id: row.try_get("stream_id")?,
        event_id: row.try_get("event_id")?,
        version: row.try_get("version")?,
        source: row.try_get("source")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        reason: row.try_get("reason")?,
        held_at: row.try_get("held_at")?,
    })
}

/// For every projection, what its active generation holds back.
pub async fn summary(conn: &mut PgConnection) -> Result<Vec<HeldSummary>> {
    let rows = sqlx::query(&format!(
        "SELECT p.name,
                (SELECT count(DISTINCT h.stream_id) FROM projection_held h
                  WHERE h.projection = p.name AND h.generation = p.active_generation) AS orders,
                (SELECT count(*) FROM projection_held h
                  WHERE h.projection = p.name AND h.generation = p.active_generation) AS events,
                f.*
           FROM projections p
           LEFT JOIN LATERAL (
                SELECT {HELD_COLUMNS} FROM projection_held h
                 WHERE h.projection = p.name AND h.generation = p.active_generation
                 ORDER BY h.held_at, h.stream_id, h.version LIMIT 1) f ON true
          ORDER BY p.name"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let first = match r.try_get::<Option<Uuid>, _>("event_id")? {
                Some(_) => Some(held_event(r)?),
                None => None,
            };
            Ok(HeldSummary {
                projection: r.try_get("name")?,
                orders: r.try_get("orders")?,
                events: r.try_get("events")?,
                first,
            })
        })
        .collect()
}

/// Every event `projection`'s active generation holds back, by order and version.
pub async fn list(conn: &mut PgConnection, projection: &str) -> Result<Vec<HeldEvent>> {
    let rows = sqlx::query(&format!(
        "SELECT {HELD_COLUMNS} FROM projection_held h
          WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          ORDER BY h.stream_id, h.version"
    ))
    .bind(projection)
    .fetch_all(conn)
    .await?;
    rows.iter().map(held_event).collect()
}

/// The first event of `order_id` that `projection` holds back, if it does.
pub async fn held_order<'e>(
    db: impl sqlx::PgExecutor<'e>,
    projection: &str,
    order_id: Uuid,
) -> Result<Option<HeldEvent>> {
    let row = sqlx::query(&format!(
        "SELECT {HELD_COLUMNS} FROM projection_held h
          WHERE h.projection = $1 AND h.stream_id = $2
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          ORDER BY h.version LIMIT 1"
    ))
    .bind(projection)
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(held_event).transpose()
}

/// Which held event to park.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldRef {
    Event(Uuid),
    /// `TOPIC/PARTITION/OFFSET` (or `log position N`), as `status` shows it.
    Source(String),
}

/// An operator's decision to pass over one held event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub projection: String,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub source: String,
    pub event_type: String,
    pub schema_version: i32,
    pub held_reason: String,
    pub reason: String,
    pub database_role: String,
    pub os_user: String,
    pub parked_at: OffsetDateTime,
}

/// Records that `projection` shall pass over the held event `which`, with
/// the operator's `reason` and who they are. The running worker applies the
/// order's later events at its next look at the list (within seconds).
pub async fn park(
    conn: &mut PgConnection,
    projection: &str,
    which: &HeldRef,
    reason: &str,
    os_user: &str,
) -> Result<Parked> {
    let held = list(conn, projection).await?;
    let found = held.into_iter().find(|h| match which {
        HeldRef::Event(id) => h.event_id == *id,
        HeldRef::Source(s) => h.source == *s,
    });
    let Some(h) = found else {
        return Err(ProjectionError::NotHeld {
            name: projection.to_owned(),
            which: match which {
                HeldRef::Event(id) => format!("event {id}"),
                HeldRef::Source(s) => s.clone(),
            },
        });
    };
    let row = sqlx::query(
        "INSERT INTO projection_parked (projection, event_id, stream_id, source, event_type,
                                        schema_version, held_reason, reason, os_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (projection, event_id) DO UPDATE SET reason = projection_parked.reason
         RETURNING projection, event_id, stream_id, source, event_type, schema_version,
                   held_reason, reason, database_role, os_user, parked_at",
    )
    .bind(projection)
    .bind(h.event_id)
    .bind(h.stream_id)
    .bind(&h.source)
    .bind(&h.event_type)
    .bind(h.schema_version)
    .bind(&h.reason)
    .bind(reason)
    .bind(os_user)
    .fetch_one(&mut *conn)
    .await?;
    let parked = parked_row(&row)?;
    tracing::warn!(projection, event_id = %parked.event_id, order_id = %parked.stream_id,
        reason, os_user, role = %parked.database_role, "an operator parked a held event");
    Ok(parked)
}

fn parked_row(row: &sqlx::postgres::PgRow) -> Result<Parked> {
    Ok(Parked {
        projection: row.try_get("projection")?,
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        source: row.try_get("source")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        held_reason: row.try_get("held_reason")?,
        reason: row.try_get("reason")?,
        database_role: row.try_get("database_role")?,
        os_user: row.try_get("os_user")?,
        parked_at: row.try_get("parked_at")?,
    })
}

/// Every parking decision, oldest first (the audit trail).
pub async fn parked(conn: &mut PgConnection) -> Result<Vec<Parked>> {
    let rows = sqlx::query(
        "SELECT projection, event_id, stream_id, source, event_type, schema_version,
                held_reason, reason, database_role, os_user, parked_at
           FROM projection_parked ORDER BY parked_at, projection",
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(parked_row).collect()
}

/// What `projection` passed over and holds back, as the fold of the log
/// must take it into account (verification).
pub async fn accounted(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<crate::order_view::Accounted> {
    let parked = sqlx::query_scalar("SELECT event_id FROM projection_parked WHERE projection = $1")
        .bind(projection)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let held_from = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT stream_id, min(version) FROM projection_held h
          WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          GROUP BY stream_id",
    )
    .bind(projection)
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect();
    Ok(crate::order_view::Accounted { parked, held_from })
}

/// Asks the current leader of `projection` to hand its lock over: this
/// process can read events it holds back. Returns true when there is
/// something this build can release (and so it asked).
pub async fn request_handover(
    conn: &mut PgConnection,
    projection: &str,
    who: &str,
) -> Result<bool> {
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT h.envelope FROM projection_held h
          WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
            AND h.reason NOT LIKE 'waits behind%'
            AND h.reason NOT LIKE 'corruption:%'
            AND h.reason NOT LIKE 'conflict:%'
          ORDER BY h.held_at LIMIT 100",
    )
    .bind(projection)
    .fetch_all(&mut *conn)
    .await?;
    let readable = rows.into_iter().any(|v| {
        serde_json::from_value::<StoredEvent>(v)
            .ok()
            .is_some_and(|s| s.decode().is_ok())
    });
    if readable {
        sqlx::query(
            "INSERT INTO projection_handover (projection, requested_by) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE
                SET requested_by = EXCLUDED.requested_by, requested_at = clock_timestamp()",
        )
        .bind(projection)
        .bind(who)
        .execute(conn)
        .await?;
    }
    Ok(readable)
}

/// Whether a standby asked for the lock within the last `within` seconds.
pub async fn handover_requested(
    conn: &mut PgConnection,
    projection: &str,
    within: std::time::Duration,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT requested_by FROM projection_handover
          WHERE projection = $1 AND requested_at > clock_timestamp() - make_interval(secs => $2)",
    )
    .bind(projection)
    .bind(within.as_secs_f64())
    .fetch_optional(conn)
    .await?)
}

/// Clears a handover request once the standby has the lock.
pub async fn handover_done(conn: &mut PgConnection, projection: &str) -> Result<()> {
    sqlx::query("DELETE FROM projection_handover WHERE projection = $1")
        .bind(projection)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a dropped generation's held list.
pub async fn drop_generation(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
) -> Result<()> {
    sqlx::query("DELETE FROM projection_held WHERE projection = $1 AND generation = $2")
        .bind(projection)
        .bind(generation)
        .execute(conn)
        .await?;
    Ok(())
}
