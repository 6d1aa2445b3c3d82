//! Asking the leader to hand a projection over to a standby that can read
//! more of what it holds back.

use domain::StoredEvent;
use sqlx::PgConnection;

use crate::error::Result;

/// Asks the current leader of `projection` to hand its lock over: this
/// process can read events it holds back. Returns true when there is
/// something this build can release (and so it asked).
pub async fn request_handover(
    conn: &mut PgConnection,
    projection: &str,
    who: &str,
) -> Result<bool> {
    let rows = sqlx::query_scalar!(
        "SELECT h.envelope FROM projection_held h
          WHERE h.projection = $1
            AND h.generation = (SELECT active_generation FROM projections WHERE name = $1)
            AND h.reason NOT LIKE 'waits behind%'
            AND h.reason NOT LIKE 'corruption:%'
            AND h.reason NOT LIKE 'conflict:%'
          ORDER BY h.held_at LIMIT 100",
        projection,
    )
    .fetch_all(&mut *conn)
    .await?;
    let readable = rows.into_iter().any(|v| {
        serde_json::from_value::<StoredEvent>(v)
            .ok()
            .is_some_and(|s| s.decode().is_ok())
    });
    if readable {
        sqlx::query!(
            "INSERT INTO projection_handover (projection, requested_by) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE
                SET requested_by = EXCLUDED.requested_by, requested_at = clock_timestamp()",
            projection,
            who,
        )
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
    Ok(sqlx::query_scalar!(
        "SELECT requested_by FROM projection_handover
          WHERE projection = $1 AND requested_at > clock_timestamp() - make_interval(secs => $2)",
        projection,
        within.as_secs_f64(),
    )
    .fetch_optional(conn)
    .await?)
}

/// Clears a handover request once the standby has the lock.
pub async fn handover_done(conn: &mut PgConnection, projection: &str) -> Result<()> {
    sqlx::query!(
        "DELETE FROM projection_handover WHERE projection = $1",
        projection
    )
    .execute(conn)
    .await?;
    Ok(())
}
