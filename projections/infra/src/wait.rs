//! Waiting: for news on the log (a notification, or the poll interval), a
//! short linger so one round takes several appends, backoff after errors;
//! every wait ends early on shutdown.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::notify;

/// A listener on the log's channel ([`notify::LOG`]), or `None` (then the
/// caller polls only).
pub async fn listen(pool: &PgPool, who: &str) -> Option<PgListener> {
    match notify::listen(pool, &[notify::LOG]).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(who, error = %e, "cannot LISTEN; polling only");
            None
        }
    }
}

/// Waits for an append notification (then [`LINGER`]), the poll interval, or
/// shutdown.
pub async fn wait_for_news(
    listener: &mut Option<PgListener>,
    poll: Duration,
    shutdown: &CancellationToken,
) {
    let Some(l) = listener else {
        sleep_or_cancel(poll, shutdown).await;
        return;
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(poll) => {}
        received = l.recv() => {
            if let Err(e) = received {
                // PgListener reconnects on the next call; until then, poll.
                tracing::debug!(error = %e, "notification listener failed");
                tokio::time::sleep(poll.min(Duration::from_millis(100))).await;
            }
            linger(shutdown).await;
            // Several appends may have notified; one read takes them all.
            while l.next_buffered().is_some() {}
        }
    }
}

/// How long a woken worker waits before it reads, so that the appends of the
/// next few milliseconds share its round. Without it, under load every
/// worker (relay, projections) ran one round per notification, each a handful
/// of statements for one or two events: three extra database round trips per
/// order placed (strace, bench/place.sh). It adds at most this much latency.
pub const LINGER: Duration = Duration::from_millis(5);

/// Waits [`LINGER`] (or until shutdown).
pub async fn linger(shutdown: &CancellationToken) {
    sleep_or_cancel(LINGER, shutdown).await;
}

pub async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

/// Exponential backoff, doubling from `first` to `longest` (100 ms to 5 s
/// for retries after errors).
#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    first: Duration,
    longest: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Backoff::between(Duration::from_millis(100), Duration::from_secs(5))
    }
    pub fn between(first: Duration, longest: Duration) -> Self {
        Backoff {
            current: Duration::ZERO,
            first,
            longest,
        }
    }
    pub fn grow(&mut self) -> Duration {
        self.current = (self.current * 2).clamp(self.first, self.longest);
        self.current
    }
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}
