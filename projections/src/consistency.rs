//! Read-your-writes: wait, bounded, until a projection has applied a given
//! place in the log.
//!
//! Waiters hold no database connection while they wait: one
//! [`PositionWatch`] per process reads every projection's position (one
//! short query, only while someone waits) and wakes the waiters whose target
//! it reached. A hundred readers waiting behind a long transaction cost one
//! query every few milliseconds, not a hundred pooled connections that the
//! writers then cannot get.

use std::time::Duration;

use sqlx::PgPool;

use crate::checkpoint;
use crate::error::Result;
use crate::log::{self, Cursor};

/// What a reader wants the read model to reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Whatever the model shows now.
    Any,
    /// At least the event at this log position (a write's `X-Log-Position`).
    Position(i64),
    /// Every event committed before the request (`Prefer: consistency=strong`).
    Strong,
}

/// The projections' positions, read for every waiter of this process at once.
#[derive(Debug, Clone)]
pub struct PositionWatch {
    positions:
        std::sync::Arc<tokio::sync::watch::Sender<std::collections::HashMap<String, Cursor>>>,
    waiters: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    someone_waits: std::sync::Arc<tokio::sync::Notify>,
}

impl Default for PositionWatch {
    fn default() -> Self {
        PositionWatch {
            positions: std::sync::Arc::new(tokio::sync::watch::Sender::new(
                std::collections::HashMap::new(),
            )),
            waiters: std::sync::Arc::default(),
            someone_waits: std::sync::Arc::default(),
        }
    }
}

/// How often the watch reads the positions while someone waits.
const WATCH_EVERY: Duration = Duration::from_millis(5);

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a PositionWatch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiters
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl PositionWatch {
    /// Reads the positions every few milliseconds while anyone waits, until
    /// `shutdown`. One per process (the HTTP server runs it).
    pub async fn run(self, pool: PgPool, shutdown: tokio_util::sync::CancellationToken) {
        use std::sync::atomic::Ordering;
        while !shutdown.is_cancelled() {
            if self.waiters.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.someone_waits.notified() => {}
                }
                continue;
            }
            match self.read(&pool).await {
                Ok(positions) => {
                    self.positions.send_if_modified(|now| {
                        let changed = *now != positions;
                        *now = positions;
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the projections' positions"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }

    async fn read(&self, pool: &PgPool) -> Result<std::collections::HashMap<String, Cursor>> {
        let mut conn = pool.acquire().await?;
        Ok(checkpoint::load_all_active(&mut conn)
            .await?
            .into_iter()
            .map(|c| (c.name, c.cursor))
            .collect())
    }

    /// Waits until the active generation of `name` reflects `freshness`, for
    /// at most `timeout`, holding a connection only to find the target.
    /// `Ok(false)` when it did not catch up in time.
    pub async fn wait_until(
        &self,
        pool: &PgPool,
        name: &str,
        freshness: Freshness,
        timeout: Duration,
    ) -> Result<bool> {
        use std::sync::atomic::Ordering;
        let target = {
            let mut conn = pool.acquire().await?;
            match freshness {
                Freshness::Any => return Ok(true),
                Freshness::Position(p) => Some(log::cursor_of(&mut conn, p).await?),
                Freshness::Strong => log::head(&mut conn).await?,
            }
        };
        let Some(target) = target else {
            return Ok(true); // an empty log: nothing to wait for
        };
        let mut positions = self.positions.subscribe();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self);
        self.someone_waits.notify_one();
        let reached = tokio::time::timeout(
            timeout,
            positions.wait_for(|p| p.get(name).is_some_and(|at| *at >= target)),
        )
        .await
        // Timed out, or the watch is gone (the server is stopping): false.
        .is_ok_and(|r| r.is_ok());
        Ok(reached)
    }
}
