//! Operators' parking decisions: pass over one held event, with a reason,
//! recorded for good.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};

use super::list::list;

/// How many parking decisions `projection` has (they are never deleted).
pub async fn parked_count(conn: &mut PgConnection, projection: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "parked!" FROM projection_parked WHERE projection = $1"#,
        projection
    )
    .fetch_one(conn)
    .await?)
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
    let parked = sqlx::query_as!(
        Parked,
        "INSERT INTO projection_parked (projection, event_id, stream_id, source, event_type,
                                        schema_version, held_reason, reason, os_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (projection, event_id) DO UPDATE SET reason = projection_parked.reason
         RETURNING projection, event_id, stream_id, source, event_type, schema_version,
                   held_reason, reason, database_role, os_user, parked_at",
        projection,
        h.event_id,
        h.stream_id,
        &h.source,
        &h.event_type,
        h.schema_version,
        &h.reason,
        reason,
        os_user,
    )
    .fetch_one(&mut *conn)
    .await?;
    tracing::warn!(projection, event_id = %parked.event_id, order_id = %parked.stream_id,
        reason, os_user, role = %parked.database_role, "an operator parked a held event");
    Ok(parked)
}

/// Every parking decision, oldest first (the audit trail).
pub async fn parked(conn: &mut PgConnection) -> Result<Vec<Parked>> {
    Ok(sqlx::query_as!(
        Parked,
        "SELECT projection, event_id, stream_id, source, event_type, schema_version,
                held_reason, reason, database_role, os_user, parked_at
           FROM projection_parked ORDER BY parked_at, projection"
    )
    .fetch_all(conn)
    .await?)
}
