//! Reading the held list: summaries, an order's held event, what `verify`
//! must account for; and dropping a generation's list.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::Result;

use super::{HeldEvent, HeldSummary};

pub(super) const HELD_COLUMNS: &str =
    "projection, stream_id, event_id, version, source, event_type, \
     schema_version, reason, held_at";

pub(super) fn held_event(row: &sqlx::postgres::PgRow) -> Result<HeldEvent> {
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

/// What `projection` passed over and holds back, as the fold of the log
/// must take it into account (verification).
pub async fn accounted(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<crate::orders::Accounted> {
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
    Ok(crate::orders::Accounted { parked, held_from })
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
