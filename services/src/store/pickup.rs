//! Pickup numbers (migrations/0012): one draw from a sequence per order,
//! counted from the day's base. The base of the current day is asked for
//! once per process and day, then kept.

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use time::{Date, OffsetDateTime, UtcOffset};

use super::{Result, StoreError};

/// Draws pickup numbers. Cheap to clone: the day's base is shared.
#[derive(Debug, Clone)]
pub struct PickupNumbers {
    pool: PgPool,
    /// The shop's clock: when its day starts.
    offset: UtcOffset,
    base: Arc<Mutex<Option<(Date, i64)>>>,
}

impl PickupNumbers {
    pub fn new(pool: PgPool, offset: UtcOffset) -> Self {
        PickupNumbers {
            pool,
            offset,
            base: Arc::default(),
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
        let draw: i64 = sqlx::query_scalar!(r#"SELECT nextval('pickup_numbers') AS "draw!""#)
            .fetch_one(&self.pool)
            .await?;
        Ok(u32::try_from(draw - base).unwrap_or(u32::MAX))
    }

    /// `day`'s base: written by the first process to ask (committed before
    /// any of the day's numbers is drawn, so every draw is above it).
    async fn base_of(&self, day: Date) -> Result<i64> {
        let cached = *self.base.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, base)) = cached {
            if known == day {
                return Ok(base);
            }
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
