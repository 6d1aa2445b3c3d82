//! The log's clock: the transaction ids that order the log (see [`crate::log`])
//! are the cluster's transaction ids plus a shift stored in `log_clock`.
//!
//! A database restored into another cluster (`pg_dump`/`pg_restore`, a
//! logical-replication cutover) keeps its stored ids but not the transaction
//! counter. When the new counter is behind the stored ids, new events sort
//! before old ones: gap-safe readers, whose checkpoints sit at the old ids,
//! never see them, while `status` reports lag 0. [`status`] detects it,
//! every service refuses to start with it ([`ensure_in_order`]), and
//! [`advance`] repairs it by raising the shift: in the schema, so it works
//! where `pg_resetwal` cannot run (a managed PostgreSQL).

use sqlx::{Acquire, PgConnection};
use time::OffsetDateTime;

use crate::error::{ProjectionError, Result};

/// Where the log's clock stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockStatus {
    /// The largest transaction id stored in the log (`None`: empty log).
    pub stored_max: Option<i64>,
    /// The id the next transaction will get, shifted.
    pub next: i64,
    pub shift: i64,
    pub changed_at: OffsetDateTime,
    pub changed_by: Option<String>,
    pub reason: Option<String>,
}

impl ClockStatus {
    /// By how much the stored ids are ahead of the clock (then new events
    /// would sort before old ones), `None` when the clock is ahead of them.
    pub fn ahead_by(&self) -> Option<i64> {
        self.stored_max
            .filter(|max| *max >= self.next)
            .map(|max| max - self.next + 1)
    }
}

/// Reads the clock and the log's largest stored id.
pub async fn status(conn: &mut PgConnection) -> Result<ClockStatus> {
    let row = sqlx::query!(
        r#"SELECT (SELECT max(transaction_id)::text::bigint FROM events) AS stored_max,
                  log_next_xact_id()::text::bigint AS "next!", shift, changed_at, changed_by, reason
             FROM log_clock"#
    )
    .fetch_one(conn)
    .await?;
    Ok(ClockStatus {
        stored_max: row.stored_max,
        next: row.next,
        shift: row.shift,
        changed_at: row.changed_at,
        changed_by: row.changed_by,
        reason: row.reason,
    })
}

/// Fails with [`ProjectionError::ClockBehind`] when new events would sort
/// before stored ones. Every part that writes or reads the log runs it at
/// start.
pub async fn ensure_in_order(conn: &mut PgConnection) -> Result<()> {
    let status = status(conn).await?;
    match (status.ahead_by(), status.stored_max) {
        (Some(_), Some(stored)) => Err(ProjectionError::ClockBehind {
            stored,
            next: status.next,
        }),
        _ => Ok(()),
    }
}

/// Raises the shift so that every new transaction id sorts after every
/// stored one, holding writers off the log meanwhile (an exclusive lock on
/// `events`: appends wait, reads go on). Returns the shift before and after;
/// both equal when nothing needed changing. Never lowers the shift.
pub async fn advance(conn: &mut PgConnection, who: &str, reason: &str) -> Result<(i64, i64)> {
    let mut tx = conn.begin().await?;
    sqlx::query!("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let before = status(&mut tx).await?;
    let Some(ahead) = before.ahead_by() else {
        tx.rollback().await?;
        return Ok((before.shift, before.shift));
    };
    let shift = before.shift + ahead;
    sqlx::query!(
        "UPDATE log_clock SET shift = $1, changed_at = clock_timestamp(), changed_by = $2,
                reason = $3",
        shift,
        who,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::warn!(
        old_shift = before.shift,
        shift,
        stored_max = before.stored_max,
        who,
        reason,
        "the log's clock was advanced past the stored transaction ids"
    );
    Ok((before.shift, shift))
}
