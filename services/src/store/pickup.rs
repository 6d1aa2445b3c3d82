//! Pickup numbers (migrations/0012): one draw from a sequence per order,
//! counted from the day's base. The base of the current day is asked for
//! once per process and day, then kept. Draws asked for at the same time
//! are made by one query (`generate_series`), handed out in the order they
//! were asked for.

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use time::{Date, OffsetDateTime, UtcOffset};

use super::{Result, StoreError};
use crate::batch::{Collector, Limits};

/// Draw queries in flight at a time, and draws per query at most.
const LIMITS: Limits = Limits {
    name: "pickup_draws",
    in_flight: 2,
    max_batch: 256,
    queue: 4096,
};

/// Draws pickup numbers. Cheap to clone: the day's base is shared.
#[derive(Debug, Clone)]
pub struct PickupNumbers {
    pool: PgPool,
    /// The shop's clock: when its day starts.
    offset: UtcOffset,
    base: Arc<Mutex<Option<(Date, i64)>>>,
    /// Held while a day's base is looked up or written: the requests that
    /// arrive together at the start of a day wait for one lookup, rather
    /// than each insert a base (each such insert draws a number, and the
    /// day's first numbers would start at the number of them).
    finding_base: Arc<tokio::sync::Mutex<()>>,
    draws: Collector<(), i64>,
}

impl PickupNumbers {
    pub fn new(pool: PgPool, offset: UtcOffset) -> Self {
        let draws = Collector::new(LIMITS, {
            let pool = pool.clone();
            move |waiting: Vec<()>| {
                let pool = pool.clone();
                async move { draw(&pool, waiting.len()).await }
            }
        });
        PickupNumbers {
            pool,
            offset,
            base: Arc::default(),
            finding_base: Arc::default(),
            draws,
        }
    }

    /// The next number of today (the shop's today).
    pub async fn next(&self) -> Result<u32> {
        let today = OffsetDateTime::now_utc().to_offset(self.offset).date();
        self.next_on(today).await
    }

    /// The next number of `day`: unique among `day`'s, from 1.
    pub async fn next_on(&self, day: Date) -> Result<u32> {
        let base = self.base_of(day).await?;
        let draw = self.draw().await?;
        Ok(u32::try_from(draw - base).unwrap_or(u32::MAX))
    }

    /// One draw from the sequence, made with whatever others are waiting.
    async fn draw(&self) -> Result<i64> {
        Ok(self.draws.ask(()).await?)
    }

    /// `day`'s base: written by the first process to ask (committed before
    /// any of the day's numbers is drawn, so every draw is above it).
    async fn base_of(&self, day: Date) -> Result<i64> {
        let cached = || {
            let cached = *self.base.lock().unwrap_or_else(|e| e.into_inner());
            cached
                .filter(|(known, _)| *known == day)
                .map(|(_, base)| base)
        };
        if let Some(base) = cached() {
            return Ok(base);
        }
        let _finding = self.finding_base.lock().await;
        // Another request of this process may have found it meanwhile.
        if let Some(base) = cached() {
            return Ok(base);
        }
        let known = || {
            sqlx::query_scalar!("SELECT base FROM pickup_days WHERE day = $1", day)
                .fetch_optional(&self.pool)
        };
        // Looked up first: an insert that loses to another process's still
        // draws a number, a gap in the day's numbers.
        let base = match known().await? {
            Some(base) => base,
            None => {
                sqlx::query!(
                    "INSERT INTO pickup_days (day, base) VALUES ($1, nextval('pickup_numbers'))
                     ON CONFLICT (day) DO NOTHING",
                    day
                )
                .execute(&self.pool)
                .await?;
                // A statement of its own: it sees a base another process
                // committed while the insert waited for it.
                known().await?.ok_or_else(|| StoreError::Corrupt {
                    position: 0,
                    what: format!("no pickup base for {day} right after writing it"),
                })?
            }
        };
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = Some((day, base));
        Ok(base)
    }
}

/// Draws `n` numbers, in order.
async fn draw(pool: &PgPool, n: usize) -> sqlx::Result<Vec<i64>> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    sqlx::query_scalar!(
        r#"SELECT nextval('pickup_numbers') AS "draw!" FROM generate_series(1, $1::int) ORDER BY 1"#,
        n
    )
    .fetch_all(pool)
    .await
}
