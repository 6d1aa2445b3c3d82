//! Releasing held events a build can apply now, in version order.

use std::collections::{HashMap, HashSet};

use domain::{EventEnvelope, StoredEvent};
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use crate::error::Result;
use crate::projection::Projection;

use super::hold::apply_or_hold;

pub(super) async fn parked_among(
    conn: &mut PgConnection,
    projection: &str,
    event_ids: &[Uuid],
) -> Result<HashSet<Uuid>> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(sqlx::query_scalar!(
        "SELECT event_id FROM projection_parked WHERE projection = $1 AND event_id = ANY($2)",
        projection,
        event_ids,
    )
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
    fence: &infra::lease::Fence,
    projection: &P,
    generation: i32,
) -> Result<Released> {
    let name = projection.name();
    let mut tx = conn.begin().await?;
    fence.check(&mut tx).await?;
    let rows = sqlx::query_as!(
        HeldRow,
        "SELECT stream_id, event_id, source, envelope FROM projection_held
          WHERE projection = $1 AND generation = $2
          ORDER BY stream_id, version
          FOR UPDATE",
        name,
        generation,
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Released::default());
    }
    let sorted = sort_releasable(&mut tx, name, &rows).await?;
    let Sorted {
        done,
        ready,
        sources,
        parked: parked_count,
    } = sorted;
    if done.is_empty() {
        tx.rollback().await?;
        return Ok(Released {
            still_held: rows.len(),
            ..Released::default()
        });
    }
    // Take the events off the list first: an order found corrupt while
    // applying is held again, with the new reason.
    sqlx::query!(
        "DELETE FROM projection_held
          WHERE projection = $1 AND generation = $2 AND event_id = ANY($3)",
        name,
        generation,
        &done,
    )
    .execute(&mut *tx)
    .await?;
    let applied = apply_or_hold(&mut tx, projection, generation, ready, |e| {
        sources.get(&e.event_id).cloned().unwrap_or_default()
    })
    .await?;
    let still_held: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "held!" FROM projection_held WHERE projection = $1 AND generation = $2"#,
        name,
        generation,
    )
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

/// One held event as release reads it.
struct HeldRow {
    stream_id: Uuid,
    event_id: Uuid,
    source: String,
    envelope: serde_json::Value,
}

/// The held rows sorted out: what leaves the list (parked, or readable now),
/// the events to apply with where each was read, and how many were parked.
struct Sorted {
    done: Vec<Uuid>,
    ready: Vec<EventEnvelope>,
    sources: HashMap<Uuid, String>,
    parked: usize,
}

/// Goes through an order's held events in version order: parked ones leave
/// the list, readable ones are applied, and the first one still unreadable
/// keeps it and every later one of its order on the list.
async fn sort_releasable(tx: &mut PgConnection, name: &str, rows: &[HeldRow]) -> Result<Sorted> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let parked = parked_among(tx, name, &ids).await?;
    let mut sorted = Sorted {
        done: Vec::new(),
        ready: Vec::new(),
        sources: HashMap::new(),
        parked: 0,
    };
    let mut blocked: HashSet<Uuid> = HashSet::new();
    for row in rows {
        let (stream, event_id) = (row.stream_id, row.event_id);
        if blocked.contains(&stream) {
            continue;
        }
        if parked.contains(&event_id) {
            sorted.parked += 1;
            sorted.done.push(event_id);
            continue;
        }
        let decoded = serde_json::from_value::<StoredEvent>(row.envelope.clone())
            .map_err(|e| e.to_string())
            .and_then(|s| s.decode().map_err(|e| e.to_string()));
        match decoded {
            Ok(e) => {
                sorted.sources.insert(e.event_id, row.source.clone());
                sorted.done.push(event_id);
                sorted.ready.push(e);
            }
            Err(_) => {
                blocked.insert(stream);
            }
        }
    }
    Ok(sorted)
}
