//! Re-applying the log to the live generation from a position.

use std::time::{Duration, Instant};

use sqlx::{Acquire, PgConnection, PgPool};

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::log::{self, Cursor, ReadMode};
use crate::projection::Projection;
use crate::runner;
use infra::lease::Fence;
use infra::wait::Backoff;

use super::{Phase, Progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// The checkpoint's position before the replay.
    pub from_position: i64,
    /// Events re-applied by this command (0 when a running worker does it).
    pub events: u64,
    /// True when a running worker holds the projection and re-applies the
    /// events itself.
    pub handed_to_worker: bool,
}

/// Re-applies the log to the live generation from the event at `from` (from
/// the start when `None`), in reading order. The read model's version guards
/// make events it already reflects no-ops, so a replay is always safe; it
/// brings forward rows restored from an older backup, for instance.
///
/// The checkpoint is rewound at once; if a worker runs the projection it
/// carries on from there, otherwise this call applies the events itself.
pub async fn replay<P: Projection>(
    pool: &PgPool,
    projection: &P,
    from: Option<i64>,
    batch_size: i64,
    mut progress: impl FnMut(Progress),
) -> Result<ReplayReport> {
    let name = projection.name();
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let target = match from {
        None | Some(..=1) => Cursor::START,
        Some(position) => log::before_positions_from(&mut conn, position).await?,
    };
    // Everything committed before this command is replayed: a transaction
    // still running elsewhere makes the replay wait for it, not stop short.
    let head = log::head(&mut conn).await?;
    let (previous, generation) = {
        let mut tx = conn.begin().await?;
        let generation = checkpoint::active_generation_locked(&mut tx, name).await?;
        let previous = checkpoint::load(&mut tx, name, generation).await?.cursor;
        // A replay only ever goes back: moving a lagging checkpoint forward
        // would pass over the events in between for good.
        checkpoint::rewind(&mut tx, name, generation, target.min(previous)).await?;
        tx.commit().await?;
        (previous, generation)
    };
    tracing::info!(projection = name, generation, from = ?from, "checkpoint rewound for replay");
    let (total, _) = log::lag(&mut conn, target.min(previous)).await?;
    let total = u64::try_from(total).unwrap_or(0);

    let Some(lease) = runner::try_worker_lease(pool, name, infra::lease::DEFAULT_TTL).await? else {
        return Ok(ReplayReport {
            from_position: previous.position,
            events: 0,
            handed_to_worker: true,
        });
    };
    let done = apply_up_to(
        &mut conn,
        lease.fence(),
        projection,
        batch_size,
        head,
        |done| {
            progress(Progress {
                phase: Phase::Replaying,
                done,
                total: total.max(done),
                elapsed: started.elapsed(),
            })
        },
    )
    .await?;
    lease.release().await;
    progress(Progress {
        phase: Phase::Done,
        done,
        total: done,
        elapsed: started.elapsed(),
    });
    Ok(ReplayReport {
        from_position: previous.position,
        events: done,
        handed_to_worker: false,
    })
}

/// Applies the log to the live generation, batch by batch under the
/// worker's lease, until its checkpoint reaches `head` (waiting for a
/// transaction still running elsewhere rather than stopping short).
/// Returns the events applied.
async fn apply_up_to<P: Projection>(
    conn: &mut PgConnection,
    fence: &Fence,
    projection: &P,
    batch_size: i64,
    head: Option<Cursor>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let name = projection.name();
    let mut done = 0u64;
    let mut wait = HorizonWait::default();
    loop {
        let n = match runner::step(conn, fence, projection, batch_size, ReadMode::GapSafe).await {
            Ok(n) => n,
            Err(ProjectionError::CheckpointMoved { .. }) => continue,
            Err(e) => return Err(e),
        };
        done += n as u64;
        progress(done);
        if n > 0 {
            wait.progressed();
        }
        if i64::try_from(n).unwrap_or(0) >= batch_size {
            continue;
        }
        let Some(head) = head else { break };
        let generation = checkpoint::active_generation(conn, name).await?;
        let at = checkpoint::load(conn, name, generation).await?.cursor;
        if at >= head {
            break;
        }
        wait.pause(conn, at, head).await?;
    }
    Ok(done)
}

/// Pauses of an operator's command that must read up to a known head while
/// the horizon is held back by a transaction still running (anywhere in the
/// cluster): it waits for that transaction to end rather than stop short of
/// events committed before the command began. Pauses grow from 10 ms to
/// 200 ms; every 5 s of waiting it logs who holds the horizon.
#[derive(Debug)]
pub(super) struct HorizonWait {
    pauses: Backoff,
    waiting_since: Option<Instant>,
    warned_at: Option<Instant>,
}

impl Default for HorizonWait {
    fn default() -> Self {
        HorizonWait {
            pauses: Backoff::between(Duration::from_millis(10), Duration::from_millis(200)),
            waiting_since: None,
            warned_at: None,
        }
    }
}

impl HorizonWait {
    const WARN_EVERY: Duration = Duration::from_secs(5);

    /// The reader moved: the next wait starts short again.
    pub(super) fn progressed(&mut self) {
        *self = HorizonWait::default();
    }

    /// Waits once before the next read, still short of `head`.
    pub(super) async fn pause(
        &mut self,
        conn: &mut PgConnection,
        at: Cursor,
        head: Cursor,
    ) -> Result<()> {
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        if now - self.warned_at.unwrap_or(since) >= Self::WARN_EVERY {
            self.warned_at = Some(now);
            let holder = log::horizon_holder(conn).await?;
            tracing::warn!(
                position = at.position,
                head = head.position,
                waited_s = (now - since).as_secs(),
                holder = holder.map_or_else(|| "a prepared transaction".to_owned(), |h| h.to_string()),
                "waiting for a running transaction to end before reading further: events below it may still commit"
            );
        }
        tokio::time::sleep(self.pauses.grow()).await;
        Ok(())
    }
}
