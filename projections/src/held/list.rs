//! Reading the held list: summaries, an order's held event, what `verify`
//! must account for; and dropping a generation's list.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

use super::{HeldEvent, HeldSummary};

/// A checked query of the held list into [`HeldEvent`]: the select list
/// once, the conditions (on `projection_held h`) and arguments by the caller.
macro_rules! held_events {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            HeldEvent,
            "SELECT projection, stream_id, event_id, version, source, event_type, schema_version,
                    reason, held_at
               FROM projection_held h "
                + $rest
            $(, $arg)*
        )
    };
}

/// For every projection, what its active generation holds back.
pub async fn summary(conn: &mut PgConnection) -> Result<Vec<HeldSummary>> {
    let counts = sqlx::query!(
        r#"SELECT p.name,
                  (SELECT count(DISTINCT h.stream_id) FROM projection_held h
                    WHERE h.projection = p.name AND h.generation = p.active_generation)
                      AS "orders!",
                  (SELECT count(*) FROM projection_held h
                    WHERE h.projection = p.name AND h.generation = p.active_generation)
                      AS "events!"
             FROM projections p
            ORDER BY p.name"#
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut summaries = Vec::with_capacity(counts.len());
    for c in counts {
        let first = match c.events {
            0 => None,
            _ => first_held(&mut *conn, &c.name).await?,
        };
        summaries.push(HeldSummary {
            projection: c.name,
            orders: c.orders,
            events: c.events,
            first,
        });
    }
    Ok(summaries)
}

/// The event `projection`'s active generation has held back the longest.
async fn first_held(conn: &mut PgConnection, projection: &str) -> Result<Option<HeldEvent>> {
    Ok(held_events!(
        "WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          ORDER BY h.held_at, h.stream_id, h.version LIMIT 1",
        projection
    )
    .fetch_optional(conn)
    .await?)
}

/// Every event `projection`'s active generation holds back, by order and version.
pub async fn list(conn: &mut PgConnection, projection: &str) -> Result<Vec<HeldEvent>> {
    Ok(held_events!(
        "WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          ORDER BY h.stream_id, h.version",
        projection
    )
    .fetch_all(conn)
    .await?)
}

/// The first event of `order_id` that `projection` holds back, if it does.
pub async fn held_order<'e>(
    db: impl sqlx::PgExecutor<'e>,
    projection: &str,
    order_id: Uuid,
) -> Result<Option<HeldEvent>> {
    Ok(held_events!(
        "WHERE h.projection = $1 AND h.stream_id = $2
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
          ORDER BY h.version LIMIT 1",
        projection,
        order_id
    )
    .fetch_optional(db)
    .await?)
}

/// What `projection` passed over and holds back, as the fold of the log
/// must take it into account (verification).
pub async fn accounted(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<crate::orders::Accounted> {
    let parked = sqlx::query_scalar!(
        "SELECT event_id FROM projection_parked WHERE projection = $1",
        projection,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let held_from = sqlx::query!(
        r#"SELECT stream_id, min(version) AS "from!" FROM projection_held h
            WHERE h.projection = $1
              AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
            GROUP BY stream_id"#,
        projection
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| (r.stream_id, r.from))
    .collect();
    Ok(crate::orders::Accounted { parked, held_from })
}

/// Removes a dropped generation's held list.
pub async fn drop_generation(
    conn: &mut PgConnection,
    projection: &str,
    generation: i32,
) -> Result<()> {
    sqlx::query!(
        "DELETE FROM projection_held WHERE projection = $1 AND generation = $2",
        projection,
        generation,
    )
    .execute(conn)
    .await?;
    Ok(())
}
