//! Sorting a batch out: what applies now, and what is held back (with the
//! rest of its order) because it cannot be read or applied.

use std::collections::HashSet;

use domain::{EventEnvelope, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::projection::Projection;

use super::release::parked_among;
use super::{Incoming, Source};

/// An event on the held list, to insert.
pub(super) struct ToHold {
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
    let mut held: HashSet<Uuid> = sqlx::query_scalar!(
        "SELECT DISTINCT stream_id FROM projection_held
          WHERE projection = $1 AND generation = $2 AND stream_id = ANY($3)",
        projection,
        generation,
        &streams,
    )
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
    events: Vec<EventEnvelope>,
    source_of: impl Fn(&EventEnvelope) -> String,
) -> Result<usize> {
    write_or_hold(
        conn,
        projection,
        generation,
        Write::Apply,
        events,
        source_of,
    )
    .await
}

/// How a batch is written: [`Projection::apply`], or [`Projection::load`]
/// for whole streams the tables hold nothing of yet (a rebuild's catch-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Apply,
    Load,
}

/// [`apply_or_hold`], writing the batch as `write` says.
pub(crate) async fn write_or_hold<P: Projection>(
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    write: Write,
    mut events: Vec<EventEnvelope>,
    source_of: impl Fn(&EventEnvelope) -> String,
) -> Result<usize> {
    loop {
        let written = match write {
            Write::Apply => projection.apply(conn, generation, &events).await,
            Write::Load => projection.load(conn, generation, &events).await,
        };
        let (order_ids, missing_row) = match written {
            Ok(()) => return Ok(events.len()),
            Err(ProjectionError::MissingRows { order_ids }) => (order_ids, true),
            Err(ProjectionError::DifferentEvents { order_ids }) => (order_ids, false),
            Err(e) => return Err(e),
        };
        // Nothing of this call's moves was written (the projection checks
        // before it updates); its placements are idempotent (`apply`), or
        // were not written either (`load`).
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

/// How many events `generation` of `projection` holds back.
pub async fn held_count(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
) -> Result<usize> {
    let n: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "held!" FROM projection_held WHERE projection = $1 AND generation = $2"#,
        projection,
        generation,
    )
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
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM projection_incomplete WHERE projection = $1 AND generation = $2) AS "incomplete!""#,
        projection,
        generation,
    )
    .fetch_one(conn)
    .await?)
}

pub(super) async fn insert(
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
    sqlx::query!(
        "INSERT INTO projection_held (projection, generation, stream_id, event_id, version, source,
                                      event_type, schema_version, envelope, reason)
         SELECT $1, $2, * FROM UNNEST($3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[],
                                      $8::int[], $9::jsonb[], $10::text[])
         ON CONFLICT (projection, generation, event_id) DO NOTHING",
        projection,
        generation,
        &streams,
        &ids,
        &versions,
        &sources,
        &types,
        &schema_versions,
        &envelopes,
        &reasons,
    )
    .execute(conn)
    .await?;
    Ok(())
}
