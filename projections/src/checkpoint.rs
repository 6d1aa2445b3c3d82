//! The registry of projections (which generation readers see) and their
//! checkpoints (how far each generation has read), both in Postgres so they
//! commit with the read model's changes.

use sqlx::{Acquire, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::error::{ProjectionError, Result};
use crate::log::Cursor;
use crate::projection::Projection;
use infra::lock::INSTALL_LOCK;

/// How far one generation of a projection has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub generation: i32,
    pub cursor: Cursor,
    /// Events handed to `apply` since the generation was created (replays
    /// count again).
    pub events_applied: i64,
    pub updated_at: OffsetDateTime,
}

/// Registers `projection` with generation 1 and publishes it, unless it is
/// registered already. Safe to run from several processes at once.
pub async fn install<P: Projection>(pool: &PgPool, projection: &P) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK)
        .execute(&mut *tx)
        .await?;
    let registered = sqlx::query!(
        "SELECT 1 AS one FROM projections WHERE name = $1",
        projection.name()
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !registered {
        projection.create_generation(&mut tx, 1).await?;
        projection.finish_generation(&mut tx, 1).await?;
        sqlx::query!(
            "INSERT INTO projections (name, active_generation) VALUES ($1, 1)",
            projection.name()
        )
        .execute(&mut *tx)
        .await?;
        if projection.reads_log() {
            create_checkpoint(&mut tx, projection.name(), 1).await?;
        }
        projection.publish(&mut tx, 1).await?;
        tracing::info!(projection = projection.name(), "projection installed");
    } else {
        let generation = active_generation(&mut tx, projection.name()).await?;
        if projection.upgrade_generation(&mut tx, generation).await? {
            projection.publish(&mut tx, generation).await?;
            tracing::info!(
                projection = projection.name(),
                generation,
                "projection tables upgraded to this build's shape"
            );
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn create_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    generation: i32,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name, generation) VALUES ($1, $2)
         ON CONFLICT (name, generation) DO UPDATE
            SET transaction_id = '0', position = 0, events_applied = 0,
                updated_at = clock_timestamp()",
        name,
        generation,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The generation readers of `name` see now.
pub async fn active_generation(conn: &mut PgConnection, name: &str) -> Result<i32> {
    sqlx::query_scalar!(
        "SELECT active_generation FROM projections WHERE name = $1",
        name
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
}

/// Like [`active_generation`], holding a share lock on the registry row until
/// the transaction ends: a rebuild cannot switch generations under it.
pub(crate) async fn active_generation_locked(conn: &mut PgConnection, name: &str) -> Result<i32> {
    sqlx::query_scalar!(
        "SELECT active_generation FROM projections WHERE name = $1 FOR SHARE",
        name
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
}

/// A checkpoint row as the queries below read it.
struct CheckpointRow {
    name: String,
    generation: i32,
    tx: i64,
    position: i64,
    events_applied: i64,
    updated_at: OffsetDateTime,
}

impl From<CheckpointRow> for Checkpoint {
    fn from(row: CheckpointRow) -> Checkpoint {
        Checkpoint {
            name: row.name,
            generation: row.generation,
            cursor: Cursor {
                transaction_id: row.tx,
                position: row.position,
            },
            events_applied: row.events_applied,
            updated_at: row.updated_at,
        }
    }
}

/// One generation's checkpoint.
pub async fn load(conn: &mut PgConnection, name: &str, generation: i32) -> Result<Checkpoint> {
    let row = sqlx::query_as!(
        CheckpointRow,
        r#"SELECT name, generation, transaction_id::text::bigint AS "tx!", position,
                  events_applied, updated_at
             FROM projection_checkpoints WHERE name = $1 AND generation = $2"#,
        name,
        generation,
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))?;
    Ok(row.into())
}

/// The checkpoint of the generation readers see: what the read model reflects.
pub async fn load_active(conn: &mut PgConnection, name: &str) -> Result<Checkpoint> {
    let row = sqlx::query_as!(
        CheckpointRow,
        r#"SELECT name, generation, transaction_id::text::bigint AS "tx!", position,
                  events_applied, updated_at
             FROM projection_checkpoints c
            WHERE (c.name, c.generation) =
                  (SELECT name, active_generation FROM projections WHERE name = $1)"#,
        name,
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))?;
    Ok(row.into())
}

/// Every registered projection's active checkpoint, by name.
pub async fn load_all_active(conn: &mut PgConnection) -> Result<Vec<Checkpoint>> {
    let rows = sqlx::query_as!(
        CheckpointRow,
        r#"SELECT name, generation, transaction_id::text::bigint AS "tx!", position,
                  events_applied, updated_at
             FROM projection_checkpoints c
            WHERE (c.name, c.generation) IN (SELECT name, active_generation FROM projections)
            ORDER BY name"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Checkpoint::from).collect())
}

/// Moves a checkpoint from `from` to `to`, counting `applied` events, only if
/// it is still at `from` (compare-and-set): a checkpoint moved by someone
/// else is [`ProjectionError::CheckpointMoved`] and the caller rolls back.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    generation: i32,
    from: Cursor,
    to: Cursor,
    applied: i64,
) -> Result<()> {
    let updated = sqlx::query!(
        "UPDATE projection_checkpoints
            SET transaction_id = $5::bigint::text::xid8, position = $6,
                events_applied = events_applied + $7, updated_at = clock_timestamp()
          WHERE name = $1 AND generation = $2
            AND transaction_id = $3::bigint::text::xid8 AND position = $4",
        name,
        generation,
        from.transaction_id,
        from.position,
        to.transaction_id,
        to.position,
        applied,
    )
    .execute(conn)
    .await?
    .rows_affected();
    compared_and_set(updated, name)
}

/// The outcome of a compare-and-set that touched `updated` rows: one, or
/// [`ProjectionError::CheckpointMoved`] (another writer moved it first).
pub(crate) fn compared_and_set(updated: u64, name: &str) -> Result<()> {
    match updated {
        1 => Ok(()),
        _ => Err(ProjectionError::CheckpointMoved {
            name: name.to_owned(),
        }),
    }
}

/// Sets a checkpoint to `to` unconditionally (an operator's replay).
pub(crate) async fn rewind(
    conn: &mut PgConnection,
    name: &str,
    generation: i32,
    to: Cursor,
) -> Result<()> {
    sqlx::query!(
        "UPDATE projection_checkpoints
            SET transaction_id = $3::bigint::text::xid8, position = $4, updated_at = clock_timestamp()
          WHERE name = $1 AND generation = $2",
        name,
        generation,
        to.transaction_id,
        to.position,
    )
    .execute(conn)
    .await?;
    Ok(())
}
