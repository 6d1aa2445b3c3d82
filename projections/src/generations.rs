//! Rebuilding a projection beside the live one without downtime (ADR 0006):
//! the phases both projections share. Each rebuild
//!
//! 1. **prepares** ([`Rebuild::start`]): takes the rebuild lock (one rebuild
//!    of a projection at a time), forgets whatever a crashed rebuild left
//!    behind and creates the next generation's tables beside the live ones;
//! 2. **catches up** while the live generation serves: its own loop, since
//!    the log-fed projection reads the log (`operate::rebuild`) and the
//!    delivery projection its topic (`delivery::rebuild`), each batch
//!    committed with the new generation's position, so an interrupted
//!    rebuild leaves nothing a re-run trips over;
//! 3. **switches** ([`Rebuild::lock_registry`] then [`Rebuild::activate`]): in
//!    one transaction holding the registry row exclusively (live batches wait
//!    for it), applies what the live generation applied beyond the new one,
//!    makes the new generation active and repoints the readers' view;
//! 4. **drops** the old generation ([`Rebuild::finish`]), which has no
//!    readers left.

use sqlx::{PgConnection, PgPool};

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::held;
use crate::projection::Projection;
use infra::lock::{SessionLock, REBUILD_LOCK};

/// A rebuild in progress: the generations it moves between, under the
/// rebuild lock.
#[derive(Debug)]
pub(crate) struct Rebuild {
    lock: SessionLock,
    pub(crate) name: &'static str,
    /// The live generation, until the switch.
    pub(crate) old: i32,
    /// The generation being built.
    pub(crate) new: i32,
}

impl Rebuild {
    /// Phase 1: the lock, a clean slate and the new generation's tables.
    /// `Busy` when another rebuild of the projection runs.
    pub(crate) async fn start<P: Projection>(
        pool: &PgPool,
        conn: &mut PgConnection,
        projection: &P,
    ) -> Result<Rebuild> {
        let name = projection.name();
        let Some(lock) = SessionLock::try_acquire(pool, REBUILD_LOCK, name).await? else {
            return Err(ProjectionError::Busy {
                name: name.to_owned(),
                what: "rebuilding",
            });
        };
        let old = checkpoint::active_generation(conn, name).await?;
        // Generations a crashed rebuild left behind have checkpoints (the
        // log-fed kind) or at least tables at old + 1 (both kinds).
        let leftovers: Vec<i32> = sqlx::query_scalar!(
            "SELECT generation FROM projection_checkpoints WHERE name = $1 AND generation <> $2",
            name,
            old,
        )
        .fetch_all(&mut *conn)
        .await?;
        let new = leftovers.iter().copied().chain([old]).max().unwrap_or(old) + 1;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for generation in leftovers.iter().copied().chain([new]) {
            forget(&mut tx, projection, generation).await?;
        }
        projection.create_generation(&mut tx, new).await?;
        if projection.reads_log() {
            checkpoint::create_checkpoint(&mut tx, name, new).await?;
        }
        tx.commit().await?;
        tracing::info!(projection = name, old, new, "rebuild started");
        Ok(Rebuild {
            lock,
            name,
            old,
            new,
        })
    }

    /// Phase 3, first step, in the switch's transaction: holds the registry
    /// row exclusively, so live batches wait until the switch commits.
    pub(crate) async fn lock_registry(&self, tx: &mut PgConnection) -> Result<()> {
        sqlx::query!(
            "SELECT name FROM projections WHERE name = $1 FOR UPDATE",
            self.name,
        )
        .fetch_optional(tx)
        .await?;
        Ok(())
    }

    /// Phase 3, last step, in the switch's transaction: the new generation
    /// becomes the one readers see.
    pub(crate) async fn activate<P: Projection>(
        &self,
        tx: &mut PgConnection,
        projection: &P,
    ) -> Result<()> {
        sqlx::query!(
            "UPDATE projections SET active_generation = $2, switched_at = clock_timestamp()
              WHERE name = $1",
            self.name,
            self.new,
        )
        .execute(&mut *tx)
        .await?;
        projection.publish(tx, self.new).await
    }

    /// Phase 4: drops the old generation and gives the lock back.
    pub(crate) async fn finish<P: Projection>(
        self,
        conn: &mut PgConnection,
        projection: &P,
    ) -> Result<()> {
        tracing::info!(
            projection = self.name,
            old = self.old,
            new = self.new,
            "switched to the rebuilt generation"
        );
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        forget(&mut tx, projection, self.old).await?;
        tx.commit().await?;
        Ok(self.lock.release().await?)
    }
}

/// Everything of one generation: its tables (and, for the delivery
/// projection, its offsets: see its `drop_generation`), what it holds back,
/// its checkpoint and its incompleteness record.
async fn forget<P: Projection>(
    tx: &mut PgConnection,
    projection: &P,
    generation: i32,
) -> Result<()> {
    let name = projection.name();
    projection.drop_generation(tx, generation).await?;
    held::drop_generation(tx, name, generation).await?;
    sqlx::query!(
        "DELETE FROM projection_checkpoints WHERE name = $1 AND generation = $2",
        name,
        generation,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM projection_incomplete WHERE projection = $1 AND generation = $2",
        name,
        generation,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Drops one generation's table (for [`Projection::drop_generation`]).
pub(crate) async fn drop_table(conn: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(conn)
        .await?;
    Ok(())
}
