//! Waking the relay and the projection workers after commits, without a
//! `NOTIFY` inside every appending transaction.
//!
//! A transaction that has issued `NOTIFY` takes a cluster-wide lock when it
//! commits and holds it until its commit record is flushed: notifying commits
//! are serialised, and group commit is lost exactly when the write load is
//! highest (measured in `bench/place.sh`, see docs/adr/0008). So appends do
//! not notify. Instead every committed append pokes a [`CommitSignal`]; one
//! task per process turns any number of pokes into one `NOTIFY` on its own
//! connection, sent right away, and the next one no sooner than
//! [`LINGER`](infra::wait::LINGER) later. Wake-up latency stays one
//! round trip; the cost is at most 200 `NOTIFY`s a second instead of one per
//! order.
//!
//! A process that dies between its commit and the `NOTIFY` loses nothing:
//! the listeners also poll (the relay's and the workers' poll intervals).

use std::sync::Arc;
use std::time::Duration;

use infra::notify;
use infra::wait::{linger, sleep_or_cancel, Backoff};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A handle that asks for one coalesced `NOTIFY` on the log's channel.
#[derive(Debug, Clone, Default)]
pub struct CommitSignal {
    pending: Arc<Notify>,
}

impl CommitSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Something committed: listeners should look. Never blocks; pokes that
    /// arrive while a `NOTIFY` is on its way are folded into the next one.
    pub fn poke(&self) {
        self.pending.notify_one();
    }

    /// Sends the `NOTIFY`s until `shutdown`. A failure (database down) is
    /// retried with backoff; listeners poll meanwhile, so nothing is lost.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.pending.notified() => {}
            }
            match notify::LOG.announce(&pool).await {
                Ok(_) => {
                    backoff.reset();
                    // At most one NOTIFY per linger: the listeners linger
                    // that long after a wake-up anyway, and each NOTIFY wakes
                    // every listener in every process.
                    linger(&shutdown).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "commit notification not sent; listeners will poll");
                    // Keep the request: the next attempt covers these commits.
                    self.pending.notify_one();
                    sleep_or_cancel(backoff.grow().min(Duration::from_secs(1)), &shutdown).await;
                }
            }
        }
    }
}
