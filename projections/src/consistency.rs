//! Read-your-writes: wait, bounded, until a projection has applied a given
//! place in the log.

use std::time::{Duration, Instant};

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

/// Waits until the active generation of `name` reflects `freshness`, for at
/// most `timeout`. `Ok(false)` when it did not catch up in time.
pub async fn wait_until(
    pool: &PgPool,
    name: &str,
    freshness: Freshness,
    timeout: Duration,
) -> Result<bool> {
    let mut conn = pool.acquire().await?;
    let target: Option<Cursor> = match freshness {
        Freshness::Any => return Ok(true),
        Freshness::Position(p) => Some(log::cursor_of(&mut conn, p).await?),
        Freshness::Strong => log::head(&mut conn).await?,
    };
    let Some(target) = target else {
        return Ok(true); // an empty log: nothing to wait for
    };
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if checkpoint::load_active(&mut conn, name).await?.cursor >= target {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
