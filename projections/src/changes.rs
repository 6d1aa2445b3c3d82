//! Which orders a live batch changed, announced with PostgreSQL `NOTIFY` in
//! the batch's own transaction: delivered to every listening process when,
//! and only when, the batch commits. The pages' live streams listen (any
//! `orders serve` process, sharing nothing but the database) and re-read the
//! named rows. A rebuild's batches announce nothing: no reader sees a
//! generation before it is published.

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// Orders whose row in the order read model changed: ids, comma-separated.
pub const ORDERS_CHANNEL: &str = "orders_changed";
/// Orders whose row in the delivery read model changed.
pub const DELIVERY_CHANNEL: &str = "delivery_changed";

/// PostgreSQL refuses a payload of 8000 bytes or more; a batch's ids are
/// spread over as many notifications as they need.
const PAYLOAD_MAX: usize = 7900;

/// Announces `orders` on `channel`, each once, inside the caller's
/// transaction.
pub async fn announce(
    conn: &mut PgConnection,
    channel: &str,
    orders: impl IntoIterator<Item = Uuid>,
) -> Result<()> {
    let payloads = payloads(orders);
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(channel)
        .bind(&payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// The ids, deduplicated, in payloads under [`PAYLOAD_MAX`] bytes.
fn payloads(orders: impl IntoIterator<Item = Uuid>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut payloads = Vec::new();
    let mut current = String::new();
    for id in orders.into_iter().filter(|id| seen.insert(*id)) {
        let id = id.to_string();
        if !current.is_empty() && current.len() + 1 + id.len() > PAYLOAD_MAX {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&id);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Reads a payload [`announce`] wrote; anything else yields nothing.
pub fn parse(payload: &str) -> Vec<Uuid> {
    payload
        .split(',')
        .filter_map(|id| Uuid::parse_str(id.trim()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_split_under_the_limit_and_every_id_comes_back_once() {
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        let twice = ids.iter().chain(ids.iter()).copied();
        let split = payloads(twice);
        assert!(split.len() > 1);
        assert!(split.iter().all(|p| p.len() < PAYLOAD_MAX));
        let back: Vec<Uuid> = split.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, ids);
        assert!(payloads(std::iter::empty()).is_empty());
    }
}
