//! Pickup numbers (migrations/0016): per store per day, from 1. Each
//! store's day has a counter row; the draws asked for at the same time are
//! made by one upsert that adds, per store and day, how many were asked and
//! returns the new last number, and are handed out in the order they were
//! asked for.

use std::collections::HashMap;

use domain::StoreId;
use sqlx::PgPool;
use time::{Date, OffsetDateTime, UtcOffset};

use super::Result;
use crate::batch::{Collector, Limits};

/// Draw queries in flight at a time, and draws per query at most.
const LIMITS: Limits = Limits {
    name: "pickup_draws",
    in_flight: 2,
    max_batch: 256,
    queue: 4096,
};

/// Draws pickup numbers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PickupNumbers {
    /// The shop's clock: when its day starts.
    offset: UtcOffset,
    draws: Collector<(StoreId, Date), i64>,
}

impl PickupNumbers {
    pub fn new(pool: PgPool, offset: UtcOffset) -> Self {
        let draws = Collector::new(LIMITS, move |asked: Vec<(StoreId, Date)>| {
            let pool = pool.clone();
            async move { draw(&pool, &asked).await }
        });
        PickupNumbers { offset, draws }
    }

    /// The next number of `store`'s today (the shop's today).
    pub async fn next(&self, store: &StoreId) -> Result<u32> {
        let today = OffsetDateTime::now_utc().to_offset(self.offset).date();
        self.next_on(store, today).await
    }

    /// The next number of `store`'s `day`: unique among them, from 1.
    pub async fn next_on(&self, store: &StoreId, day: Date) -> Result<u32> {
        let number = self.draws.ask((store.clone(), day)).await?;
        Ok(u32::try_from(number).unwrap_or(u32::MAX))
    }
}

/// Draws one number per ask, in the order asked: one statement for all of
/// them, a counter row per store and day.
async fn draw(pool: &PgPool, asked: &[(StoreId, Date)]) -> sqlx::Result<Vec<i64>> {
    // How many each store's day was asked for, in first-asked order.
    let mut counts: Vec<((&StoreId, Date), i32)> = Vec::new();
    let mut slot: HashMap<(&StoreId, Date), usize> = HashMap::new();
    for (store, day) in asked {
        let key = (store, *day);
        let at = *slot.entry(key).or_insert_with(|| {
            counts.push((key, 0));
            counts.len() - 1
        });
        counts[at].1 += 1;
    }
    let stores: Vec<&str> = counts.iter().map(|((s, _), _)| s.as_str()).collect();
    let days: Vec<Date> = counts.iter().map(|((_, d), _)| *d).collect();
    let ns: Vec<i32> = counts.iter().map(|(_, n)| *n).collect();
    let rows = sqlx::query!(
        r#"INSERT INTO pickup_counters AS c (store_id, day, last)
           SELECT * FROM UNNEST($1::text[], $2::date[], $3::int[])
           ON CONFLICT (store_id, day) DO UPDATE SET last = c.last + EXCLUDED.last
           RETURNING store_id, day, last"#,
        &stores as &[&str],
        &days,
        &ns,
    )
    .fetch_all(pool)
    .await?;
    // The next number to hand out per store's day: the first of its run.
    let mut next: HashMap<(String, Date), i64> = rows
        .into_iter()
        .map(|r| {
            let n = counts
                .iter()
                .find(|((s, d), _)| s.as_str() == r.store_id && *d == r.day)
                .map_or(0, |(_, n)| *n);
            ((r.store_id, r.day), i64::from(r.last) - i64::from(n) + 1)
        })
        .collect();
    asked
        .iter()
        .map(|(store, day)| {
            let number = next
                .get_mut(&(store.as_str().to_owned(), *day))
                .ok_or_else(|| sqlx::Error::Protocol("a pickup draw returned no row".into()))?;
            let drawn = *number;
            *number += 1;
            Ok(drawn)
        })
        .collect()
}
