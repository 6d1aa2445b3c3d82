//! Operators' work on projections: status (position, head, lag), replay from
//! a position, and rebuild beside the live model with an atomic switch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{Acquire, PgConnection, PgPool};
use time::OffsetDateTime;

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::infra::kafka::KafkaSource;
use crate::infra::wait::Backoff;
use crate::log::{self, Cursor, LogEvent, ReadMode};
use crate::projection::Projection;
use crate::rebuild::Rebuild;
use crate::runner::{self, apply_batch};

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
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
pub async fn status(pool: &PgPool, kafka: Option<&KafkaSource>) -> Result<Vec<ProjectionStatus>> {
    let mut out = log_fed_status(pool).await?;
    let head = out.first().map_or(0, |s| s.head);
    out.push(crate::delivery::status(pool, kafka, head).await?);
    Ok(out)
}

async fn log_fed_status(pool: &PgPool) -> Result<Vec<ProjectionStatus>> {
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
        out.push(ProjectionStatus {
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

/// Rebuilds `projection` from the whole log without downtime, in the phases
/// of [`crate::rebuild`]: the log is applied to a new generation while the
/// live one serves, then readers switch to it in one transaction and see
/// the old model until that commit and the new one, complete, after it.
///
/// Only one rebuild of a projection runs at a time ([`ProjectionError::Busy`]).
pub async fn rebuild<P: Projection>(
    pool: &PgPool,
    projection: &P,
    batch_size: i64,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let rebuild = Rebuild::start(pool, &mut conn, projection).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    let mut counted = Counted {
        done: 0,
        total: u64::try_from(total).unwrap_or(0),
        started,
    };
    // 2. Catch up while the live generation serves.
    let cursor = catch_up(pool, &mut conn, projection, rebuild.new, batch_size, |n| {
        progress(counted.add(Phase::CatchingUp, n));
    })
    .await?;
    // Readers' indexes, built once over the filled tables.
    {
        let mut tx = conn.begin().await?;
        projection.finish_generation(&mut tx, rebuild.new).await?;
        tx.commit().await?;
    }
    // 3. Switch, after applying what the live generation applied beyond it.
    {
        let mut tx = conn.begin().await?;
        rebuild.lock_registry(&mut tx).await?;
        let live = checkpoint::load(&mut tx, rebuild.name, rebuild.old)
            .await?
            .cursor;
        let mut cursor = cursor;
        while cursor < live {
            let events = log::read_range(&mut tx, cursor, live, batch_size).await?;
            let Some(last) = events.last().map(|e| e.cursor) else {
                break;
            };
            let count = events.len();
            apply_batch(&mut tx, projection, rebuild.new, cursor, events).await?;
            cursor = last;
            progress(counted.add(Phase::Switching, count));
        }
        rebuild.activate(&mut tx, projection).await?;
        tx.commit().await?;
    }
    // 4. The old generation has no readers left.
    let report = RebuildReport {
        old_generation: rebuild.old,
        new_generation: rebuild.new,
        events: counted.done,
        elapsed: started.elapsed(),
    };
    rebuild.finish(&mut conn, projection).await?;
    progress(Progress {
        phase: Phase::Done,
        done: counted.done,
        total: counted.done,
        elapsed: report.elapsed,
    });
    Ok(report)
}

/// Events applied so far against the estimate, for progress reports.
struct Counted {
    done: u64,
    total: u64,
    started: Instant,
}

impl Counted {
    fn add(&mut self, phase: Phase, events: usize) -> Progress {
        self.done += events as u64;
        self.total = self.total.max(self.done);
        Progress {
            phase,
            done: self.done,
            total: self.total,
            elapsed: self.started.elapsed(),
        }
    }
}

/// Applies the log up to its head as the rebuild began to `generation`, a
/// batch per transaction, each committed with the generation's checkpoint.
/// A reader on a connection of its own reads the next batch while this one
/// is applied: two backends and both cores at work (one after the other, the
/// rebuild spent half its time waiting on each). Returns where it got.
async fn catch_up<P: Projection>(
    pool: &PgPool,
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    batch_size: i64,
    mut applied: impl FnMut(usize),
) -> Result<Cursor> {
    let head = log::head(conn).await?;
    let (batches, mut ready) = tokio::sync::mpsc::channel::<Result<Vec<LogEvent>>>(2);
    let reader = tokio::spawn(read_ahead(pool.acquire().await?, head, batch_size, batches));
    let mut cursor = Cursor::START;
    while let Some(read) = ready.recv().await {
        let events = read?;
        let (count, last) = (events.len(), events.last().map(|e| e.cursor));
        let mut tx = conn.begin().await?;
        apply_batch(&mut tx, projection, generation, cursor, events).await?;
        tx.commit().await?;
        if let Some(last) = last {
            cursor = last;
        }
        applied(count);
    }
    drop(ready);
    if let Err(e) = reader.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    Ok(cursor)
}

/// Reads the log in batches up to `head` (waiting for a transaction still
/// running elsewhere rather than stopping short) and sends them on.
async fn read_ahead(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    head: Option<Cursor>,
    batch_size: i64,
    batches: tokio::sync::mpsc::Sender<Result<Vec<LogEvent>>>,
) {
    let mut after = Cursor::START;
    let mut wait = HorizonWait::default();
    loop {
        let events = match log::read_after(&mut conn, after, batch_size, ReadMode::GapSafe).await {
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
        if let Err(e) = wait.pause(&mut conn, after, head).await {
            let _ = batches.send(Err(e)).await;
            return;
        }
    }
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

    let Some(lease) =
        runner::try_worker_lease(pool, name, crate::infra::lease::DEFAULT_TTL).await?
    else {
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
