//! Rebuilding the log-fed projection from the whole log, beside the live
//! one (the shared phases are in `crate::rebuild`).

use std::time::Instant;

use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

use crate::checkpoint;
use crate::error::Result;
use crate::generations::Rebuild;
use crate::held;
use crate::log::{self, Cursor, LogEvent, StreamKey};
use crate::projection::Projection;
use crate::runner::{apply_batch, apply_events};

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

/// Applies the log up to its head as the rebuild began to `generation`, in
/// stream order: each order's events arrive together, so an order becomes
/// one row written once, where reading order (all placements of an hour,
/// then their moves) wrote it once and updated it up to three times. Only
/// the order within a stream matters to a log-fed projection (each row is
/// one order's fold), and the switch applies what came after the head in
/// reading order.
///
/// The streams are cut into [`LANES`] ranges ([`log::stream_splits`]), and
/// each lane reads its range in batches of whole streams on a connection of
/// its own while another writes them ([`Projection::load`]), each batch in
/// a transaction of its own: no two batches share an order, so they
/// commute. Batches carry no checkpoint: a rebuild that stops half way is
/// forgotten by the next (`Rebuild::start`), never resumed. The
/// generation's checkpoint is set to the head at the end. Returns the head.
pub(super) async fn catch_up<P: Projection>(
    pool: &PgPool,
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    batch_size: i64,
    mut applied: impl FnMut(usize),
) -> Result<Cursor> {
    let Some(head) = log::head(conn).await? else {
        return Ok(Cursor::START);
    };
    // A transaction still running below the head can commit events there:
    // wait for it rather than build without them.
    let mut wait = HorizonWait::default();
    while !log::settled(conn, head).await? {
        wait.pause(conn, Cursor::START, head).await?;
    }
    // The first lane's writer is `conn`; it needs one more connection for
    // its reader, each further lane two.
    let free = usize::try_from(pool.options().get_max_connections())
        .unwrap_or(usize::MAX)
        .saturating_sub(pool.size() as usize)
        + pool.num_idle();
    let lanes = LANES.min(1 + free.saturating_sub(1) / 2);
    let lanes = Lane::cut(log::stream_splits(conn, lanes).await?);
    let (done, mut counts) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut own = Some(&mut *conn);
    let mut work = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let (queue, batches) = tokio::sync::mpsc::channel::<Vec<LogEvent>>(1);
        let writer = match own.take() {
            Some(conn) => Writer::Borrowed(conn),
            None => Writer::Own(pool.acquire().await?),
        };
        let reader = pool.acquire().await?;
        let done = done.clone();
        work.push(async move {
            let (read, written) = tokio::join!(
                read_lane(reader, lane, head, batch_size, queue),
                write(writer, projection, generation, batches, done),
            );
            read.and(written)
        });
    }
    drop(done);
    let report = async {
        while let Some(n) = counts.recv().await {
            applied(n);
        }
    };
    let (written, ()) = tokio::join!(futures::future::join_all(work), report);
    let total = written.into_iter().sum::<Result<i64>>()?;
    let mut tx = conn.begin().await?;
    checkpoint::advance(
        &mut tx,
        projection.name(),
        generation,
        Cursor::START,
        head,
        total,
    )
    .await?;
    tx.commit().await?;
    Ok(head)
}

/// How many lanes (a reader and a writer each) a rebuild's catch-up runs,
/// when the pool has the connections for them:
/// PostgreSQL reading and writing the rows is most of a rebuild's work, and
/// with one lane the reader waited on the fold and the writer on both
/// (docs/adr/0006).
const LANES: usize = 2;

/// The streams one lane reads: those after `after`, up to `through`.
#[derive(Debug, Clone, Copy)]
struct Lane {
    after: StreamKey,
    through: Uuid,
}

impl Lane {
    /// The lanes between ascending `splits` (each the last stream of its
    /// lane), the last one up to the greatest stream id.
    fn cut(splits: Vec<Uuid>) -> Vec<Lane> {
        let mut lanes = Vec::with_capacity(splits.len() + 1);
        let mut after = StreamKey::START;
        for through in splits.into_iter().chain([Uuid::max()]) {
            lanes.push(Lane { after, through });
            after = StreamKey {
                stream_id: through,
                version: i32::MAX,
            };
        }
        lanes
    }
}

/// A writer's connection: the rebuild's own, or one more from the pool.
enum Writer<'c> {
    Borrowed(&'c mut PgConnection),
    Own(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Loads the batches it is handed, each in a transaction of its own, and
/// says how many events each had. Returns how many it loaded in all; on an
/// error it stops taking batches, which stops its reader.
async fn write<P: Projection>(
    mut conn: Writer<'_>,
    projection: &P,
    generation: i32,
    mut batches: tokio::sync::mpsc::Receiver<Vec<LogEvent>>,
    done: tokio::sync::mpsc::UnboundedSender<usize>,
) -> Result<i64> {
    let conn: &mut PgConnection = match &mut conn {
        Writer::Borrowed(conn) => conn,
        Writer::Own(conn) => conn,
    };
    let mut total = 0_i64;
    while let Some(events) = batches.recv().await {
        let count = events.len();
        let mut tx = conn.begin().await?;
        apply_events(&mut tx, projection, generation, held::Write::Load, events).await?;
        tx.commit().await?;
        total += i64::try_from(count).unwrap_or(i64::MAX);
        let _ = done.send(count);
    }
    Ok(total)
}

/// Reads a lane's streams up to `head` in batches of whole streams, reading
/// the next while its writer writes the last. Stops early when the writer
/// stopped (its error is the rebuild's).
async fn read_lane(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    lane: Lane,
    head: Cursor,
    batch_size: i64,
    writer: tokio::sync::mpsc::Sender<Vec<LogEvent>>,
) -> Result<()> {
    let mut after = lane.after;
    loop {
        let (events, next) =
            log::read_streams(&mut conn, after, lane.through, head, batch_size).await?;
        if !events.is_empty() && writer.send(events).await.is_err() {
            return Ok(());
        }
        match next {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_cover_every_stream_once() {
        let (a, b) = (Uuid::from_u128(10), Uuid::from_u128(20));
        let lanes = Lane::cut(vec![a, b]);
        assert_eq!(lanes.len(), 3);
        assert_eq!(lanes[0].after, StreamKey::START);
        assert_eq!(lanes[0].through, a);
        // A lane starts past every version of the stream the last one ended on.
        assert_eq!((lanes[1].after.stream_id, lanes[1].through), (a, b));
        assert_eq!(lanes[1].after.version, i32::MAX);
        assert_eq!(
            (lanes[2].after.stream_id, lanes[2].through),
            (b, Uuid::max())
        );
        let one = Lane::cut(Vec::new());
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].after, one[0].through),
            (StreamKey::START, Uuid::max())
        );
    }
}
