//! Operators' work on projections: status (position, head, lag), replay from
//! a position, and rebuild beside the live model with an atomic switch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{Acquire, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::checkpoint::{self, REBUILD_LOCK};
use crate::delivery::KafkaSource;
use crate::error::{ProjectionError, Result};
use crate::lock::SessionLock;
use crate::log::{self, Cursor, LogEvent, ReadMode};
use crate::projection::Projection;
use crate::runner::{self, apply_batch, Backoff};

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub generation: i32,
    /// The log position of the last event applied (0: none yet).
    pub position: i64,
    /// The highest position in the log.
    pub head: i64,
    /// Committed events not applied yet.
    pub lag_events: i64,
    /// How long ago the oldest event not applied yet was recorded.
    pub lag: Duration,
    pub events_applied: i64,
    pub updated_at: OffsetDateTime,
    /// For a projection fed from a Kafka topic: where it stands on the topic.
    pub topic: Option<TopicProgress>,
}

/// Where a Kafka-fed projection stands on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProgress {
    pub topic: String,
    /// The next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Each partition's end, when the brokers answered.
    pub ends: Option<BTreeMap<i32, i64>>,
    /// When the oldest record not consumed yet was recorded, if any.
    pub oldest_unconsumed: Option<OffsetDateTime>,
}

impl TopicProgress {
    /// Records on the topic past the offsets (`None`: the brokers did not
    /// answer).
    pub fn lag_records(&self) -> Option<i64> {
        let ends = self.ends.as_ref()?;
        Some(
            ends.iter()
                .map(|(p, end)| (end - self.offsets.get(p).copied().unwrap_or(0)).max(0))
                .sum(),
        )
    }
}

/// The status of every projection, in the log's terms. The delivery
/// projection's counts the records it has not consumed when `kafka` says
/// where its topic is and the brokers answer.
pub async fn status(pool: &PgPool, kafka: Option<&KafkaSource>) -> Result<Vec<Status>> {
    let mut out = log_fed_status(pool).await?;
    let head = out.first().map_or(0, |s| s.head);
    out.push(crate::delivery::status(pool, kafka, head).await?);
    Ok(out)
}

async fn log_fed_status(pool: &PgPool) -> Result<Vec<Status>> {
    let mut conn = pool.acquire().await?;
    let checkpoints = checkpoint::load_all_active(&mut conn).await?;
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(checkpoints.len());
    for c in checkpoints {
        let (lag_events, oldest) = log::lag(&mut conn, c.cursor).await?;
        let lag = oldest.map_or(Duration::ZERO, |t| {
            Duration::try_from(now - t).unwrap_or(Duration::ZERO)
        });
        out.push(Status {
            name: c.name,
            generation: c.generation,
            position: c.cursor.position,
            head,
            lag_events,
            lag,
            events_applied: c.events_applied,
            updated_at: c.updated_at,
            topic: None,
        });
    }
    Ok(out)
}

/// Progress of long work, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Events applied so far.
    pub done: u64,
    /// Events to apply in all, as estimated when the work started (grows if
    /// the log does).
    pub total: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Applying the log to the new generation while the live one serves.
    CatchingUp,
    /// Applying the last events and switching, under the registry lock.
    Switching,
    /// Re-applying the log from the replay position.
    Replaying,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub old_generation: i32,
    pub new_generation: i32,
    pub events: u64,
    pub elapsed: Duration,
}

/// Rebuilds `projection` from the whole log without downtime:
///
/// 1. creates the next generation's tables beside the live ones;
/// 2. applies the log to it in batches, each committed with the new
///    generation's checkpoint (so an interrupted rebuild can be re-run);
/// 3. in one transaction holding the registry row exclusively (live batches
///    wait for it): applies what the live generation had applied beyond the
///    new one, makes the new generation active and repoints the readers'
///    view. Readers see the old model until that commit and the new one,
///    complete, after it;
/// 4. drops the old generation.
///
/// Only one rebuild of a projection runs at a time ([`ProjectionError::Busy`]).
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    projection: &P,
    batch_size: i64,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport> {
    let name = projection.name();
    let started = Instant::now();
    let Some(rebuilding) = SessionLock::try_acquire(pool, REBUILD_LOCK, name).await? else {
        return Err(ProjectionError::Busy {
            name: name.to_owned(),
            what: "rebuilding",
        });
    };

    // 1. The new generation, after any a crashed rebuild left behind.
    let mut conn = pool.acquire().await?;
    let old = checkpoint::active_generation(&mut conn, name).await?;
    let leftovers: Vec<i32> = sqlx::query_scalar(
        "SELECT generation FROM projection_checkpoints WHERE name = $1 AND generation <> $2",
    )
    .bind(name)
    .bind(old)
    .fetch_all(&mut *conn)
    .await?;
    let new = leftovers.iter().copied().chain([old]).max().unwrap_or(old) + 1;
    {
        let mut tx = conn.begin().await?;
        for g in &leftovers {
            projection.drop_generation(&mut tx, *g).await?;
            crate::held::drop_generation(&mut tx, name, *g).await?;
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 AND generation = $2")
                .bind(name)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        projection.create_generation(&mut tx, new).await?;
        checkpoint::create_checkpoint(&mut tx, name, new).await?;
        tx.commit().await?;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    let mut total = u64::try_from(total).unwrap_or(0);
    let mut done = 0u64;
    tracing::info!(
        projection = name,
        old,
        new,
        events = total,
        "rebuild started"
    );

    // 2. Catch up while the live generation serves. A reader on its own
    //    connection reads the next batch while this one is applied: two
    //    backends and both cores at work (one after the other, the rebuild
    //    spent half its time waiting on each).
    //    It reads up to the head as the rebuild began, waiting for a
    //    transaction still running elsewhere rather than stopping short.
    let head = log::head(&mut conn).await?;
    let (batches, mut ready) = tokio::sync::mpsc::channel::<Result<Vec<LogEvent>>>(2);
    let reader = tokio::spawn({
        let mut read_conn = pool.acquire().await?;
        async move {
            let mut after = Cursor::START;
            let mut wait = HorizonWait::default();
            loop {
                let events =
                    match log::read_after(&mut read_conn, after, batch_size, ReadMode::GapSafe)
                        .await
                    {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = batches.send(Err(e)).await;
                            return;
                        }
                    };
                let full = i64::try_from(events.len()).unwrap_or(0) >= batch_size;
                if let Some(last) = events.last() {
                    after = last.cursor;
                    wait.progressed();
                    if batches.send(Ok(events)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                let Some(head) = head else { return };
                if after >= head {
                    return;
                }
                if let Err(e) = wait.pause(&mut read_conn, after, head).await {
                    let _ = batches.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let mut cursor = Cursor::START;
    while let Some(read) = ready.recv().await {
        let events = read?;
        let (count, last) = (events.len(), events.last().map(|e| e.cursor));
        let mut tx = conn.begin().await?;
        apply_batch(&mut tx, projection, new, cursor, events).await?;
        tx.commit().await?;
        if let Some(last) = last {
            cursor = last;
        }
        done += count as u64;
        total = total.max(done);
        progress(Progress {
            phase: Phase::CatchingUp,
            done,
            total,
            elapsed: started.elapsed(),
        });
    }
    drop(ready);
    if let Err(e) = reader.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    // 3. Readers' indexes, built once over the filled tables; then switch.
    {
        let mut tx = conn.begin().await?;
        projection.finish_generation(&mut tx, new).await?;
        tx.commit().await?;
    }
    {
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT 1 FROM projections WHERE name = $1 FOR UPDATE")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let live = checkpoint::load(&mut tx, name, old).await?.cursor;
        loop {
            if cursor >= live {
                break;
            }
            let events = log::read_range(&mut tx, cursor, live, batch_size).await?;
            let Some(last) = events.last() else { break };
            let (last, count) = (last.cursor, events.len());
            apply_batch(&mut tx, projection, new, cursor, events).await?;
            cursor = last;
            done += count as u64;
            total = total.max(done);
            progress(Progress {
                phase: Phase::Switching,
                done,
                total,
                elapsed: started.elapsed(),
            });
        }
        sqlx::query(
            "UPDATE projections SET active_generation = $2, switched_at = clock_timestamp()
              WHERE name = $1",
        )
        .bind(name)
        .bind(new)
        .execute(&mut *tx)
        .await?;
        projection.publish(&mut tx, new).await?;
        tx.commit().await?;
    }
    tracing::info!(
        projection = name,
        old,
        new,
        "switched to the rebuilt generation"
    );

    // 4. The old generation has no readers left.
    {
        let mut tx = conn.begin().await?;
        projection.drop_generation(&mut tx, old).await?;
        crate::held::drop_generation(&mut tx, name, old).await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 AND generation = $2")
            .bind(name)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    rebuilding.release().await?;
    let report = RebuildReport {
        old_generation: old,
        new_generation: new,
        events: done,
        elapsed: started.elapsed(),
    };
    progress(Progress {
        phase: Phase::Done,
        done,
        total: done,
        elapsed: report.elapsed,
    });
    Ok(report)
}

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

    let Some(lease) = runner::try_worker_lease(pool, name, crate::lease::DEFAULT_TTL).await? else {
        return Ok(ReplayReport {
            from_position: previous.position,
            events: 0,
            handed_to_worker: true,
        });
    };
    let mut done = 0u64;
    let mut wait = HorizonWait::default();
    loop {
        let n = match runner::step(
            &mut conn,
            lease.fence(),
            projection,
            batch_size,
            ReadMode::GapSafe,
        )
        .await
        {
            Ok(n) => n,
            Err(ProjectionError::CheckpointMoved { .. }) => continue,
            Err(e) => return Err(e),
        };
        done += n as u64;
        progress(Progress {
            phase: Phase::Replaying,
            done,
            total: total.max(done),
            elapsed: started.elapsed(),
        });
        if n > 0 {
            wait.progressed();
        }
        if i64::try_from(n).unwrap_or(0) >= batch_size {
            continue;
        }
        let Some(head) = head else { break };
        let generation = checkpoint::active_generation(&mut conn, name).await?;
        let at = checkpoint::load(&mut conn, name, generation).await?.cursor;
        if at >= head {
            break;
        }
        wait.pause(&mut conn, at, head).await?;
    }
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

/// Pauses of an operator's command that must read up to a known head while
/// the horizon is held back by a transaction still running (anywhere in the
/// cluster): it waits for that transaction to end rather than stop short of
/// events committed before the command began. Pauses grow from 10 ms to
/// 200 ms; every 5 s of waiting it logs who holds the horizon.
#[derive(Debug)]
struct HorizonWait {
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
    fn progressed(&mut self) {
        *self = HorizonWait::default();
    }

    /// Waits once before the next read, still short of `head`.
    async fn pause(&mut self, conn: &mut PgConnection, at: Cursor, head: Cursor) -> Result<()> {
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
