//! The faults: `kill -9` of worker processes (kept running as a service
//! manager would), leaders frozen with SIGSTOP and woken with SIGCONT, bursts
//! of `pg_cancel_backend` on the workers' statements, and long transactions
//! that hold the log's horizon while clients read their own writes.

mod supervised;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::{Connection, PgPool};
use tokio::sync::mpsc;

use crate::say;
pub(crate) use supervised::{Signals, Supervised};

#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) kills: AtomicU32,
    pub(crate) last: Mutex<Option<Instant>>,
    pub(crate) freezes: Mutex<Vec<Freeze>>,
    /// While a leader is frozen the kill loop holds off: a kill would end
    /// the freeze early (a dead leader is replaced at once), and the point
    /// is a leader that is alive, stopped, and wakes up.
    pub(crate) freezing: std::sync::atomic::AtomicBool,
    pub(crate) cancel_bursts: AtomicU32,
    pub(crate) statements_cancelled: AtomicU32,
    pub(crate) long_transactions: AtomicU32,
}

/// One leader frozen: which lease it was chosen for, the process, and how
/// long until a standby held that lease (`None`: not within the freeze).
#[derive(Debug, Clone)]
pub(crate) struct Freeze {
    pub(crate) lease: String,
    pub(crate) pid: u32,
    pub(crate) takeover: Option<Duration>,
}

impl Faults {
    /// A fault was injected now.
    pub(crate) fn mark(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }

    pub(crate) fn last(&self) -> Instant {
        self.last
            .lock()
            .ok()
            .and_then(|l| *l)
            .unwrap_or_else(Instant::now)
    }
}

/// `kill -9` of one of the worker processes, at random moments until
/// `until`, and on until at least `min` kills.
pub(crate) async fn kill_loop(
    kill: Vec<mpsc::Sender<()>>,
    faults: Arc<Faults>,
    min: u32,
    until: Instant,
) {
    while Instant::now() < until || faults.kills.load(Ordering::Relaxed) < min {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..4000))).await;
        if faults.freezing.load(Ordering::SeqCst) {
            continue;
        }
        let Some(victim) = kill.get(fastrand::usize(..kill.len().max(1))) else {
            return;
        };
        if victim.send(()).await.is_err() {
            return;
        }
        faults.kills.fetch_add(1, Ordering::Relaxed);
        faults.mark();
    }
}

/// The leases as the database has them: (name, token, OS pid of the holder)
/// for those held now.
async fn leaders(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, u32)>> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT name, token, holder FROM leader_leases WHERE expires_at > clock_timestamp()",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, token, holder)| {
            let pid = holder
                .split("pid ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((name, token, pid))
        })
        .collect())
}

/// How long a freeze waits for a leader to freeze: the kill loop holds off
/// meanwhile, and a worker killed just before (or PostgreSQL restarting)
/// leaves no lease held for a few seconds.
const LEADER_WITHIN: Duration = Duration::from_secs(20);

/// The leaders now that are processes of `ours`, once there is one
/// (`None` after [`LEADER_WITHIN`]). A lease names its holder's pid, which
/// may be a killed process's (its lease not yet taken over), reused by
/// the kernel since for another process: never one to signal.
async fn some_leaders(pool: &PgPool, ours: &[Signals]) -> Option<Vec<(String, i64, u32)>> {
    let since = Instant::now();
    loop {
        let running: Vec<u32> = ours.iter().map(|p| p.pid.load(Ordering::SeqCst)).collect();
        match leaders(pool).await {
            Ok(mut held) => {
                held.retain(|(_, _, pid)| running.contains(pid));
                if !held.is_empty() {
                    return Some(held);
                }
            }
            Err(e) => say(format!("cannot read the leases yet: {e}")),
        }
        if since.elapsed() > LEADER_WITHIN {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Freezes (SIGSTOP) the process that leads a lease chosen at random, for
/// `length`, measuring how long until a standby holds that lease; then wakes
/// it (SIGCONT). Returns what happened (`None`: no leader to freeze).
pub(crate) async fn freeze_a_leader(
    pool: &PgPool,
    ours: &[Signals],
    length: Duration,
) -> Option<Freeze> {
    let held = some_leaders(pool, ours).await?;
    let (lease, token, pid) = held.get(fastrand::usize(..held.len()))?.clone();
    let owner = ours.iter().find(|s| s.pid.load(Ordering::SeqCst) == pid)?;
    if !owner.send_if(pid, "STOP").await {
        return None;
    }
    let frozen = Instant::now();
    say(format!("froze pid {pid}, the leader of {lease} (SIGSTOP)"));
    let mut takeover = None;
    while frozen.elapsed() < length {
        if takeover.is_none()
            && leaders(pool)
                .await
                .unwrap_or_default()
                .iter()
                .any(|(name, t, _)| *name == lease && *t > token)
        {
            takeover = Some(frozen.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    owner.send_if(pid, "CONT").await;
    say(format!(
        "woke pid {pid} (SIGCONT); {lease} taken over after {}",
        takeover.map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()))
    ));
    Some(Freeze {
        lease,
        pid,
        takeover,
    })
}

/// Cancels the workers' running statements (`pg_cancel_backend`) 20 times
/// over 200 ms, so that some land mid-batch; how many were cancelled.
pub(crate) async fn cancel_burst(pool: &PgPool, application_name: &str) -> u32 {
    let mut cancelled = 0;
    for _ in 0..20 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                SELECT pg_cancel_backend(pid) AS done FROM pg_stat_activity
                 WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()
             ) c WHERE done",
        )
        .bind(application_name)
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        cancelled += u32::try_from(n).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancelled
}

/// A transaction that takes a transaction id and stays open for `length`:
/// the log's horizon stays behind it, so no projection reads past it, and
/// strong reads wait (or answer 503 and are retried).
pub(crate) async fn hold_horizon(url: &str, length: Duration) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await?;
    say(format!(
        "holding a transaction open for {} s (the log's horizon)",
        length.as_secs()
    ));
    tokio::time::sleep(length).await;
    tx.rollback().await?;
    conn.close().await?;
    Ok(())
}

/// The `application_name` of the worker processes' connections.
pub(crate) const WORKERS: &str = "orders-work";

/// How many leadership and database faults, and how long each lasts.
pub(crate) struct LeadershipFaults {
    pub(crate) freezes: u32,
    pub(crate) freeze: Duration,
    /// Zero: no cancel bursts.
    pub(crate) cancel_every: Duration,
    pub(crate) long_transactions: u32,
    pub(crate) long: Duration,
    /// The processes a freeze may stop: the workers this run supervises.
    pub(crate) ours: Vec<Signals>,
}

/// Spreads the leadership and database faults over the traffic: freezes
/// between a quarter and two thirds of it (clear of the PostgreSQL crash at
/// seven tenths), long transactions near its start and its end, cancel
/// bursts all along.
pub(crate) async fn leadership_faults(
    pool: PgPool,
    url: String,
    faults: Arc<Faults>,
    plan: LeadershipFaults,
    started: Instant,
    traffic: Duration,
) {
    let until = started + traffic;
    let bursts = (!plan.cancel_every.is_zero()).then(|| {
        let (pool, faults) = (pool.clone(), faults.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(plan.cancel_every).await;
                if Instant::now() >= until {
                    return;
                }
                let n = cancel_burst(&pool, WORKERS).await;
                faults.cancel_bursts.fetch_add(1, Ordering::Relaxed);
                faults.statements_cancelled.fetch_add(n, Ordering::Relaxed);
                faults.mark();
            }
        })
    });
    let mut longs = Vec::new();
    for k in 0..plan.long_transactions {
        let at = if plan.long_transactions > 1 {
            0.12 + 0.73 * f64::from(k) / f64::from(plan.long_transactions - 1)
        } else {
            0.12
        };
        let (url, faults, length) = (url.clone(), faults.clone(), plan.long);
        longs.push(tokio::spawn(async move {
            crate::infra::sleep_until(started + traffic.mul_f64(at)).await;
            faults.mark();
            if let Err(e) = hold_horizon(&url, length).await {
                say(format!("the long transaction ended early: {e:#}"));
            }
            faults.long_transactions.fetch_add(1, Ordering::Relaxed);
            faults.mark();
        }));
    }
    for k in 0..plan.freezes {
        let at = 0.25 + 0.4 * f64::from(k) / f64::from(plan.freezes.max(1));
        crate::infra::sleep_until(started + traffic.mul_f64(at)).await;
        faults.mark();
        faults.freezing.store(true, Ordering::SeqCst);
        let frozen = freeze_a_leader(&pool, &plan.ours, plan.freeze).await;
        faults.freezing.store(false, Ordering::SeqCst);
        match frozen {
            Some(freeze) => {
                if let Ok(mut all) = faults.freezes.lock() {
                    all.push(freeze);
                }
            }
            None => say(format!("no leader to freeze within {LEADER_WITHIN:?}")),
        }
        faults.mark();
    }
    for long in longs {
        let _ = long.await;
    }
    if let Some(bursts) = bursts {
        let _ = bursts.await;
    }
}
