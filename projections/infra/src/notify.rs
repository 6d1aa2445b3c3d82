//! Announcing a change with PostgreSQL `NOTIFY`, and listening for it: one
//! way for every part.
//!
//! A notification sent inside a transaction is delivered to every listening
//! process when, and only when, that transaction commits. It is a wake-up,
//! never the only way to see a change: listeners also poll or re-read
//! (a notification is lost with a dropped connection).
//!
//! The channels:
//!
//! - [`LOG`]: something was appended to the log (the relay and the
//!   projection workers wake); sent by the write side once per linger, not
//!   by each appending transaction (`services::store::signal`, ADR 0008);
//! - [`ORDERS`] and [`DELIVERY`]: which orders' rows a read model's batch
//!   changed, in the batch's own transaction (the pages' live streams re-read
//!   those rows); a rebuild's batches announce nothing, since no reader sees
//!   a generation before it is published;
//! - [`MENU`]: the menu (or a store's availability) changed;
//! - [`SESSIONS`]: a browser signed out (its session's digest), so that
//!   every process ends the live streams that acted for it.

use std::collections::HashSet;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel(&'static str);

/// The log's channel: appends committed.
pub const LOG: Channel = Channel("outbox");
/// Orders whose row in the order read model changed: ids, comma-separated.
pub const ORDERS: Channel = Channel("orders_changed");
/// Orders whose row in the delivery read model changed.
pub const DELIVERY: Channel = Channel("delivery_changed");
/// The menu changed.
pub const MENU: Channel = Channel("menu_changed");
/// A session ended: its digest (never its id).
pub const SESSIONS: Channel = Channel("sessions_ended");

impl Channel {
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// Announces that something changed (an empty payload), in the
    /// executor's transaction when it is one.
    pub async fn announce<'c>(self, conn: impl PgExecutor<'c>) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(self.0)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Announces one short `name` (at most a few dozen bytes: a digest, a
    /// key), in the executor's transaction when it is one.
    pub async fn announce_name<'c>(
        self,
        conn: impl PgExecutor<'c>,
        name: &str,
    ) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.0)
            .bind(name)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Announces `orders`, each once, in the executor's transaction when it
    /// is one.
    pub async fn announce_orders<'c>(
        self,
        conn: impl PgExecutor<'c>,
        orders: impl IntoIterator<Item = Uuid>,
    ) -> sqlx::Result<()> {
        let payloads = payloads(orders);
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(self.0)
            .bind(&payloads)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// A listener on `channels`. Its connection is its own, outside `pool` (a
/// pool of one, connected with `pool`'s settings): a connection that has run
/// `LISTEN` is never handed to anyone else, and listeners take nothing from
/// a pool's budget.
pub async fn listen(pool: &PgPool, channels: &[Channel]) -> sqlx::Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen_all(channels.iter().map(|c| c.0)).await?;
    Ok(listener)
}

/// PostgreSQL refuses a payload of 8000 bytes or more; a batch's ids are
/// spread over as many notifications as they need.
const PAYLOAD_MAX: usize = 7900;

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

/// Reads a payload [`Channel::announce_orders`] wrote; anything else yields nothing.
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
