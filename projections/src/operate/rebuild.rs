//! Rebuilding the log-fed projection from the whole log, beside the live
//! one (the shared phases are in `crate::rebuild`).

use std::time::Instant;

use sqlx::{Acquire, PgConnection, PgPool};

use crate::checkpoint;
use crate::error::Result;
use crate::log::{self, Cursor, LogEvent, ReadMode};
use crate::projection::Projection;
use crate::rebuild::Rebuild;
use crate::runner::apply_batch;

use super::replay::HorizonWait;
use super::{Phase, Progress, RebuildReport};

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
    let total: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "events!" FROM events"#)
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
pub(super) struct Counted {
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
pub(super) async fn catch_up<P: Projection>(
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
pub(super) async fn read_ahead(
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
