//! The projection runner: reads the log in batches and commits each batch's
//! read-model changes together with the checkpoint, so every event takes
//! effect exactly once however the process dies.
//!
//! One worker per projection applies at a time: the one that holds its lease
//! ([`infra::lease`]). A standby takes over within a second when the leader
//! dies, within the lease's time to live when it freezes; a leader that wakes
//! up after losing its lease has its next batch refused (fenced) and stands
//! by.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{Acquire, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint;
use crate::error::{ProjectionError, Result};
use crate::held;
use crate::log::{self, Cursor, LogEvent, ReadMode};
use crate::projection::Projection;
use infra::failpoint;
use infra::lease::{self, Fence, Lease};
use infra::wait::{listen, sleep_or_cancel, wait_for_news, Backoff};

/// How often a leader looks at its held list again (releasing what it can,
/// and stepping down when a standby can read more).
pub const HELD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a leader that handed its lock over stays out of the race for it.
pub const HANDOVER_PAUSE: Duration = Duration::from_secs(10);

/// A handover request older than this is ignored (its standby is gone).
const HANDOVER_FRESH: Duration = Duration::from_secs(10);

pub use infra::process_label;

/// While waiting for a projection's lock: if this build can read events the
/// leader holds back, ask the leader to hand over (logged once).
pub async fn ask_for_handover(pool: &PgPool, name: &str, asked: &AtomicBool) {
    let asking = async {
        let mut conn = pool.acquire().await?;
        held::request_handover(&mut conn, name, &process_label()).await
    };
    match asking.await {
        Ok(true) if !asked.swap(true, Ordering::Relaxed) => {
            tracing::info!(
                projection = name,
                "this build can read events the running worker holds back: asked it to hand over"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(projection = name, error = %e, "cannot ask for a handover"),
    }
}

/// What a leader knows of its held list between two looks.
#[derive(Debug, Default)]
pub struct HeldWatch {
    /// Whether this leader tried its build's knowledge on the list yet.
    released_once: bool,
    /// Parking decisions seen at the last release.
    parked: i64,
}

/// The leader's periodic look at its held list: releases what this build
/// can apply now (every held event, the first time; afterwards only when an
/// operator parked something: the build's knowledge does not change while it
/// runs); steps down with [`ProjectionError::HandedOver`] when some is still
/// held and a standby asked for the lock because it can read it. Returns how
/// many events are still held.
pub async fn look_at_held<P: Projection>(
    conn: &mut PgConnection,
    fence: &Fence,
    projection: &P,
    watch: &mut HeldWatch,
) -> Result<usize> {
    let name = projection.name();
    let generation = checkpoint::active_generation(conn, name).await?;
    let parked = held::parked_count(conn, name).await?;
    let still_held = if !watch.released_once || parked != watch.parked {
        watch.released_once = true;
        watch.parked = parked;
        held::release(conn, fence, projection, generation)
            .await?
            .still_held
    } else {
        held::held_count(conn, name, generation).await?
    };
    if still_held == 0 {
        return Ok(0);
    }
    if let Some(to) = held::handover_requested(conn, name, HANDOVER_FRESH).await? {
        tracing::warn!(projection = name, %to, still_held,
            "a standby can read events this build holds back: handing the projection over");
        return Err(ProjectionError::HandedOver {
            name: name.to_owned(),
            to,
        });
    }
    Ok(still_held)
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Events per transaction.
    pub batch_size: i64,
    /// How often to look at the log when no notification came.
    pub poll_interval: Duration,
    /// How often a standby tries the lease again.
    pub lock_retry: Duration,
    /// How long the leader's lease lives without renewal: a frozen leader
    /// is replaced within this (plus `lock_retry`).
    pub lease_ttl: Duration,
    pub read_mode: ReadMode,
}

impl WorkerOptions {
    pub const DEFAULT_BATCH_SIZE: i64 = 1000;
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            batch_size: Self::DEFAULT_BATCH_SIZE,
            poll_interval: Duration::from_millis(250),
            lock_retry: Duration::from_secs(1),
            lease_ttl: lease::DEFAULT_TTL,
            read_mode: ReadMode::GapSafe,
        }
    }
}

/// Applies `events` to `generation` and moves its checkpoint from `from` to
/// the last event, inside the caller's transaction. Events of orders held
/// back, and events this build cannot read, go to the held list instead
/// (see [`crate::held`]); the checkpoint moves past them all the same.
pub(crate) async fn apply_batch<P: Projection>(
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    from: Cursor,
    events: Vec<LogEvent>,
) -> Result<()> {
    let Some(to) = events.last().map(|e| e.cursor) else {
        return Ok(());
    };
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    apply_events(conn, projection, generation, held::Write::Apply, events).await?;
    checkpoint::advance(conn, projection.name(), generation, from, to, count).await?;
    failpoint::hit(failpoint::PROJECTION_BEFORE_COMMIT);
    Ok(())
}

/// Applies events of the log to `generation`, holding back what cannot be
/// read or applied (with the rest of its order), without moving the
/// checkpoint: [`apply_batch`]'s work, and a rebuild's in stream order
/// (which loads, [`held::Write::Load`]).
pub(crate) async fn apply_events<P: Projection>(
    conn: &mut PgConnection,
    projection: &P,
    generation: i32,
    write: held::Write,
    events: Vec<LogEvent>,
) -> Result<()> {
    let ready = held::sort_out(
        conn,
        projection.name(),
        generation,
        events.into_iter().map(|e| e.incoming).collect(),
    )
    .await?;
    held::write_or_hold(conn, projection, generation, write, ready, |e| {
        held::Source::Log {
            position: e.position.unwrap_or_default(),
        }
        .to_string()
    })
    .await?;
    Ok(())
}

/// One batch for the live (active) generation, in one transaction. Returns
/// how many events it applied; 0 when nothing is safe to read yet.
pub async fn step<P: Projection>(
    conn: &mut PgConnection,
    fence: &Fence,
    projection: &P,
    batch_size: i64,
    mode: ReadMode,
) -> Result<usize> {
    let name = projection.name();
    let mut tx = conn.begin().await?;
    // Read before taking any lock: a transaction that holds a row lock has a
    // transaction id of its own, which would hold the visibility horizon back.
    let generation = checkpoint::active_generation(&mut tx, name).await?;
    let from = checkpoint::load(&mut tx, name, generation).await?.cursor;
    let events = log::read_after(&mut tx, from, batch_size, mode).await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    // A rebuild switches generations under an exclusive lock of this row;
    // hold it shared until commit, and start over if a switch came first.
    if checkpoint::active_generation_locked(&mut tx, name).await? != generation {
        tx.rollback().await?;
        return Err(ProjectionError::CheckpointMoved {
            name: name.to_owned(),
        });
    }
    // Still the leader, and no takeover until this commits.
    fence.check(&mut tx).await?;
    // Every line logged while applying carries the request ids (correlation
    // ids) of the events in the batch.
    let span = tracing::info_span!("apply", projection = name, request_ids = %request_ids(&events));
    let count = events.len();
    let last_position = events.last().map(|e| e.cursor.position);
    let changed: Vec<uuid::Uuid> = events
        .iter()
        .filter_map(|e| e.incoming.event.as_ref().ok())
        .map(|e| e.stream_id.as_uuid())
        .collect();
    apply_batch(&mut tx, projection, generation, from, events)
        .instrument(span.clone())
        .await?;
    if let Some(channel) = projection.changes_channel() {
        channel.announce_orders(&mut *tx, changed).await?;
    }
    tx.commit().await?;
    metrics::counter!("projection_batches_total", "projection" => name).increment(1);
    metrics::counter!("projection_events_applied_total", "projection" => name)
        .increment(count as u64);
    span.in_scope(|| {
        tracing::debug!(
            generation,
            events = count,
            position = last_position,
            "batch applied"
        )
    });
    Ok(count)
}

/// The distinct correlation (request) ids of a batch's events, comma-separated
/// (at most 20, then `…`), for log lines.
pub fn request_ids<'a>(events: impl IntoIterator<Item = &'a LogEvent>) -> String {
    let mut ids: Vec<&str> = Vec::new();
    for e in events {
        let Ok(envelope) = &e.incoming.event else {
            continue;
        };
        if let Some(id) = envelope.metadata.correlation_id.as_deref() {
            if !ids.contains(&id) {
                if ids.len() == 20 {
                    ids.push("…");
                    break;
                }
                ids.push(id);
            }
        }
    }
    ids.join(",")
}

/// Takes the lease of projection `name` if no live leader holds it.
pub(crate) async fn try_worker_lease(
    pool: &PgPool,
    name: &str,
    ttl: Duration,
) -> Result<Option<Lease>> {
    Ok(Lease::try_acquire(pool, &lease::projection(name), ttl).await?)
}

/// Runs one projection until `shutdown`: waits for its lease, then applies
/// batches as the log grows, waking on the append notification and polling
/// as a fallback. Database errors are logged and retried with backoff; a
/// lost lease makes it a standby again; only an unknown projection ends it
/// with an error.
pub async fn run_worker<P: Projection>(
    pool: PgPool,
    projection: P,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let name = projection.name();
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let asked = AtomicBool::new(false);
        let Some(lease) = Lease::wait_for(
            &pool,
            &lease::projection(name),
            options.lease_ttl,
            options.lock_retry,
            &shutdown,
            || ask_for_handover(&pool, name, &asked),
        )
        .await
        else {
            break;
        };
        tracing::info!(
            projection = name,
            token = lease.fence().token(),
            "projection worker running"
        );
        let result = run_leading(
            &pool,
            lease.fence(),
            &projection,
            &options,
            &shutdown,
            &mut backoff,
        )
        .await;
        lease.release().await;
        match result {
            Ok(()) => {}
            Err(ProjectionError::HandedOver { .. }) => {
                sleep_or_cancel(HANDOVER_PAUSE, &shutdown).await;
            }
            Err(ProjectionError::Fenced { .. }) => {}
            Err(e @ ProjectionError::Unknown(_)) => {
                tracing::error!(projection = name, error = %e, "projection stopped");
                return Err(e);
            }
            Err(e) => {
                metrics::counter!("projection_retries_total", "projection" => name).increment(1);
                let delay = backoff.grow();
                tracing::warn!(projection = name, error = %e, ?delay, "projection worker failed; retrying");
                sleep_or_cancel(delay, &shutdown).await;
            }
        }
    }
    tracing::info!(projection = name, "projection worker stopped");
    Ok(())
}

/// The leader's loop, on one pooled connection, until shutdown, an error or
/// the loss of its lease.
async fn run_leading<P: Projection>(
    pool: &PgPool,
    fence: &Fence,
    projection: &P,
    options: &WorkerOptions,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<()> {
    let name = projection.name();
    let mut conn = pool.acquire().await?;
    let mut listener = listen(pool, name).await;
    held::handover_done(&mut conn, name).await?;
    let mut held_checked: Option<std::time::Instant> = None;
    let mut watch = HeldWatch::default();
    let mut still_held = 0;
    while !shutdown.is_cancelled() {
        if !fence.held() {
            return Err(fence.fenced().into());
        }
        if held_checked.is_none_or(|t| t.elapsed() >= HELD_CHECK_EVERY) {
            held_checked = Some(std::time::Instant::now());
            still_held = look_at_held(&mut conn, fence, projection, &mut watch).await?;
        }
        match step(
            &mut conn,
            fence,
            projection,
            options.batch_size,
            options.read_mode,
        )
        .await
        {
            Ok(n) => {
                backoff.reset();
                if i64::try_from(n).unwrap_or(i64::MAX) >= options.batch_size {
                    continue; // more is waiting
                }
            }
            Err(ProjectionError::CheckpointMoved { .. }) => continue,
            Err(e) => return Err(e),
        }
        // While orders are held back, look at the list again in time to
        // notice an operator's decision or a standby of a newer build.
        let poll = if still_held > 0 {
            options.poll_interval.min(HELD_CHECK_EVERY)
        } else {
            options.poll_interval
        };
        tokio::select! {
            () = wait_for_news(&mut listener, poll, shutdown) => {}
            () = fence.lost() => return Err(fence.fenced().into()),
        }
    }
    Ok(())
}
