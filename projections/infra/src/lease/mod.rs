//! Leadership by lease, with fencing: one relay per topic, one worker per
//! projection (ADR 0007).
//!
//! A session advisory lock was the leadership before, and it fails one way:
//! a leader that is frozen (SIGSTOP, a paused VM, a network partition to
//! PostgreSQL) keeps its session and its lock, the kernel even answers TCP
//! keepalives for a stopped process, and nothing takes over. A lease
//! (`leader_leases`) must be renewed instead:
//!
//! - **Liveness.** The leader renews its lease every third of its time to
//!   live over a connection of its own, outside the pool. A standby takes a
//!   lease whose expiry passed (a frozen or cut-off leader: takeover within
//!   the time to live plus the standby's retry), or at once when the
//!   leader's lease connection is gone (a dead leader; PostgreSQL ends the
//!   backend as soon as the socket closes).
//! - **Fencing.** Every takeover raises the lease's token. A leader's writes
//!   call [`Fence::check`] in their own transaction: it refuses unless the
//!   token is still theirs, and holds the lease row shared until commit, so
//!   a takeover waits for a write in flight and every later write of the old
//!   leader is refused ([`Error::Fenced`]); it steps down. Those
//!   transactions also end the session if it sits idle inside them longer
//!   than the time to live (a leader frozen mid-transaction would otherwise
//!   hold the row, and the takeover, for ever).
//! - **Before side effects the database cannot fence** (a Kafka produce),
//!   [`Fence::held`] says whether the last renewal is recent enough that the
//!   lease cannot have expired, without a round trip. A leader frozen between
//!   that check and its produce sends once more when it wakes; its delete is
//!   then fenced, and the duplicate is counted.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::wait::{sleep_or_cancel, Backoff};

mod fence;

pub use fence::Fence;

/// How long a lease lives without renewal: the bound on a takeover after a
/// leader freezes (plus the standby's retry, a second).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// How long a standby waits for a lease row a leader holds in a
/// transaction before it tries again later.
const TAKEOVER_LOCK_TIMEOUT: &str = "1s";

/// The lease of a projection's worker.
pub fn projection(name: &str) -> String {
    format!("projection {name}")
}

/// The lease of a topic's relay.
pub fn relay(topic: &str) -> String {
    format!("relay {topic}")
}

#[derive(Debug)]
struct Shared {
    name: String,
    token: i64,
    ttl: Duration,
    /// When the last renewal that succeeded was sent (the lease lives at
    /// least `ttl` from then).
    renewed: Mutex<Instant>,
    lost: CancellationToken,
}

impl Shared {
    /// Marks the lease lost, counted and logged once, whichever of the
    /// renewer, a fenced write or the local clock noticed first.
    fn lose(&self, why: &str) {
        if self.lost.is_cancelled() {
            return;
        }
        self.lost.cancel();
        metrics::counter!("leader_leases_lost_total", "lease" => self.name.clone()).increment(1);
        tracing::warn!(lease = %self.name, token = self.token, why, "lease lost: stepping down");
    }

    fn renewed(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lease this process holds, renewed in the background until released or
/// dropped. Dropped without [`Lease::release`], it closes its connection, and
/// a standby takes over at once.
#[derive(Debug)]
pub struct Lease {
    fence: Fence,
    stop: CancellationToken,
    renewer: Option<JoinHandle<Option<PgConnection>>>,
}

impl Lease {
    /// Takes the lease `name` if nobody holds it, its holder's lease
    /// connection is gone, or it expired; `None` while a live leader holds
    /// it.
    pub async fn try_acquire(pool: &PgPool, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        // A cheap look first, on a pooled connection: usually the leader is
        // alive, and a standby should not open a connection every second.
        let takeable = sqlx::query_scalar!(
            r#"SELECT l.expires_at < clock_timestamp()
                 OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid)
                 AS "takeable!"
               FROM leader_leases l WHERE l.name = $1"#,
            name,
        )
        .fetch_optional(pool)
        .await?;
        if takeable == Some(false) {
            return Ok(None);
        }
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let token = match take(&mut conn, name, ttl).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                let _ = conn.close().await;
                return Ok(None);
            }
            // A leader's write holds the row: it is alive after all, or
            // frozen mid-transaction (its session ends after the time to
            // live); try again later.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            token,
            ttl,
            renewed: Mutex::new(Instant::now()),
            lost: CancellationToken::new(),
        });
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(conn, Arc::clone(&shared), stop.clone()));
        Ok(Some(Lease {
            fence: Fence(shared),
            stop,
            renewer: Some(renewer),
        }))
    }

    /// Waits until this process holds the lease `name`: tries every
    /// `retry`, backs off after errors, logs once that it stands by, and runs
    /// `between` after each try that found a live leader (a projection's
    /// standby asks for a handover there). `None` once `shutdown` is
    /// cancelled.
    pub async fn wait_for<F>(
        pool: &PgPool,
        name: &str,
        ttl: Duration,
        retry: Duration,
        shutdown: &CancellationToken,
        mut between: impl FnMut() -> F,
    ) -> Option<Lease>
    where
        F: std::future::Future<Output = ()>,
    {
        let mut backoff = Backoff::new();
        let mut standing_by = false;
        while !shutdown.is_cancelled() {
            match Lease::try_acquire(pool, name, ttl).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {
                    if !standing_by {
                        tracing::info!(lease = name, "another process leads; standing by");
                        standing_by = true;
                    }
                    between().await;
                    sleep_or_cancel(retry, shutdown).await;
                }
                Err(e) => {
                    let delay = backoff.grow();
                    tracing::warn!(lease = name, error = %e, ?delay, "cannot take the lease; retrying");
                    sleep_or_cancel(delay, shutdown).await;
                }
            }
        }
        None
    }

    /// What this leader's writes check.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives the lease up at once (a standby need not wait for its expiry).
    pub async fn release(mut self) {
        // A leader that gives up a lease it no longer certainly holds (it
        // stepped down after an error, say a session ended while it was
        // frozen) says that it lost it, whichever way it noticed.
        if !self.fence.held() {
            self.fence
                .0
                .lose("its last renewal is older than its time to live (this process was frozen or cut off)");
        }
        self.stop.cancel();
        let Some(renewer) = self.renewer.take() else {
            return;
        };
        let Ok(Some(mut conn)) = renewer.await else {
            return;
        };
        let given_up = sqlx::query!(
            "UPDATE leader_leases SET expires_at = '-infinity' WHERE name = $1 AND token = $2",
            self.fence.0.name,
            self.fence.0.token,
        )
        .execute(&mut conn)
        .await;
        if let Err(e) = given_up {
            tracing::debug!(lease = %self.fence.0.name, error = %e, "cannot give the lease up; it expires");
        }
        let _ = conn.close().await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            // Dropping the task drops its connection: the backend ends, and a
            // standby sees the holder gone.
            renewer.abort();
        }
    }
}

/// Takes the lease on `conn` (whose backend becomes the holder) in one
/// transaction; the token, or `None` when a live leader holds it.
async fn take(conn: &mut PgConnection, name: &str, ttl: Duration) -> sqlx::Result<Option<i64>> {
    let holder = crate::process_label();
    let mut tx = conn.begin().await?;
    sqlx::query!(
        "SELECT set_config('lock_timeout', $1, true)",
        TAKEOVER_LOCK_TIMEOUT
    )
    .fetch_one(&mut *tx)
    .await?;
    let current = sqlx::query!(
        r#"SELECT l.holder, l.expires_at = '-infinity' AS "released!",
                l.expires_at < clock_timestamp() AS "expired!",
                EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid) AS "alive!"
           FROM leader_leases l WHERE l.name = $1
            FOR UPDATE"#,
        name,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let token: Option<i64> = match current {
        None => {
            sqlx::query_scalar!(
                "INSERT INTO leader_leases (name, token, holder, holder_pid, expires_at)
                 VALUES ($1, 1, $2, pg_backend_pid(), clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (name) DO NOTHING
                 RETURNING token",
                name,
                holder,
                ttl.as_secs_f64(),
            )
            .fetch_optional(&mut *tx)
            .await?
        }
        Some(row) => {
            let previous = row.holder;
            let released = row.released;
            let (expired, alive) = (row.expired, row.alive);
            if alive && !expired {
                None
            } else {
                let token = sqlx::query_scalar!(
                    "UPDATE leader_leases
                        SET token = token + 1, holder = $2, holder_pid = pg_backend_pid(),
                            acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),
                            expires_at = clock_timestamp() + make_interval(secs => $3)
                      WHERE name = $1
                  RETURNING token",
                    name,
                    holder,
                    ttl.as_secs_f64(),
                )
                .fetch_one(&mut *tx)
                .await?;
                let why = if released {
                    "released"
                } else if !alive {
                    "holder gone"
                } else {
                    "expired"
                };
                metrics::counter!("leader_takeovers_total", "lease" => name.to_owned(), "why" => why)
                    .increment(1);
                if why == "expired" {
                    tracing::warn!(lease = name, %previous, token,
                        "took the lease over from a leader that stopped renewing it (frozen or cut off); its writes are fenced");
                } else {
                    tracing::info!(lease = name, %previous, token, why, "took the lease over");
                }
                Some(token)
            }
        }
    };
    tx.commit().await?;
    Ok(token)
}

/// Renews the lease every third of its time to live until `stop` (then
/// hands the connection back for the release) or until a renewal fails or
/// finds the lease taken (then marks it lost and closes the connection).
async fn renew(
    mut conn: PgConnection,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Option<PgConnection> {
    let every = shared.ttl / 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Some(conn),
            () = tokio::time::sleep(every) => {}
        }
        let sent = Instant::now();
        let renewal = sqlx::query!(
            "UPDATE leader_leases
                SET renewed_at = clock_timestamp(),
                    expires_at = clock_timestamp() + make_interval(secs => $3)
              WHERE name = $1 AND token = $2",
            shared.name,
            shared.token,
            shared.ttl.as_secs_f64(),
        )
        .execute(&mut conn);
        let failure = match tokio::time::timeout(shared.ttl, renewal).await {
            Ok(Ok(done)) if done.rows_affected() == 1 => {
                *shared
                    .renewed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = sent;
                continue;
            }
            Ok(Ok(_)) => "another process took it over".to_owned(),
            Ok(Err(e)) => format!("cannot renew it: {e}"),
            Err(_) => "renewing it took longer than its time to live".to_owned(),
        };
        shared.lose(&failure);
        return None;
    }
}
