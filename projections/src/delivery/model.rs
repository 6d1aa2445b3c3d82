//! The delivery model's tables: one set per generation, created, published
//! (the view readers use) and written by `apply`.

use domain::EventEnvelope;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::order_row::{apply_moves, reduce, Placements};

pub(super) fn table(generation: i32) -> String {
    format!("delivery.order_status_g{generation}")
}

pub(super) async fn create_generation(conn: &mut PgConnection, generation: i32) -> Result<()> {
    let t = table(generation);
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
            order_id      uuid        PRIMARY KEY,
            user_id       text        NOT NULL,
            coffee_name   text        NOT NULL,
            coffee_qty    integer     NOT NULL,
            status        text        NOT NULL CHECK (status IN
                ('received', 'preparing', 'delivering', 'delivered', 'cancelled')),
            ordered_at    timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL,
            version       integer     NOT NULL,
            last_position bigint      NOT NULL,
            temperature   text        NOT NULL DEFAULT 'hot' CHECK (temperature IN ('hot', 'iced')),
            size          text        NOT NULL DEFAULT 'regular' CHECK (size IN ('regular', 'large')),
            event_ids     jsonb       NOT NULL DEFAULT '{{}}',
            pickup_number integer,
            coffee_price  bigint,
            total_price   bigint,
            {}
        )",
        crate::order_row::store_and_lines_columns()
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "CREATE INDEX IF NOT EXISTS order_status_g{generation}_status_idx
            ON {t} (status, ordered_at, order_id)"
    ))
    .execute(&mut *conn)
    .await?;
    add_store_index(conn, generation).await
}

/// A store's board: its orders by status (older generations gain it).
pub(super) async fn add_store_index(conn: &mut PgConnection, generation: i32) -> Result<()> {
    sqlx::query(&format!(
        "CREATE INDEX IF NOT EXISTS order_status_g{generation}_store_idx
            ON {} (store_id, status, ordered_at, order_id)",
        table(generation)
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn publish(conn: &mut PgConnection, generation: i32) -> Result<()> {
    sqlx::query(&format!(
        "CREATE OR REPLACE VIEW delivery.order_status AS
         SELECT order_id, user_id, coffee_name, coffee_qty, status, ordered_at, updated_at,
                version, last_position, temperature, size, pickup_number, coffee_price,
                total_price, store_id, lines
           FROM {}",
        table(generation)
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies envelopes (one partition's, in offset order) to `generation`.
///
/// Every row remembers the id of the event it applied at each version
/// (`event_ids`, version → event id). An event at a version the row has seen
/// with another id is not the same event: the log was restored to an earlier
/// point in time and wrote anew what the topic already carried. The version
/// guard alone would pass over it silently; here it is
/// [`ProjectionError::DifferentEvents`], and the order is held back.
pub(super) async fn apply(
    conn: &mut PgConnection,
    generation: i32,
    events: &[EventEnvelope],
) -> Result<()> {
    let t = table(generation);
    let mut ids_by_order = check_event_ids(conn, &t, events).await?;
    let changes = reduce(events.iter())?;
    let (placed, moved): (Vec<_>, Vec<_>) = changes.iter().partition(|(_, c)| c.placed.is_some());
    let p = Placements::of(&placed);
    if !p.is_empty() {
        // A new row takes its event ids with it: one write per order, not
        // an insert and then an update of the same row. A row that was
        // there already and newer (a redelivery) is left as it is: its ids
        // go to the update below.
        let placed_ids: Vec<serde_json::Value> = p
            .ids
            .iter()
            .map(|order| ids_by_order.remove(order).unwrap_or_default())
            .collect();
        let written: Vec<(Uuid,)> = sqlx::query_as(&format!(
            "INSERT INTO {t} AS v (order_id, user_id, coffee_name, coffee_qty, status, ordered_at,
                                   updated_at, version, last_position, temperature, size,
                                   pickup_number, coffee_price, total_price, store_id, lines,
                                   event_ids)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[], $8::int[], $9::bigint[],
                                  $10::text[], $11::text[], $12::int[], $13::bigint[],
                                  $14::bigint[], $15::text[], $16::jsonb[], $17::jsonb[])
             ON CONFLICT (order_id) DO UPDATE
                SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version, last_position = EXCLUDED.last_position,
                    event_ids = v.event_ids || EXCLUDED.event_ids
              WHERE v.version < EXCLUDED.version
             RETURNING order_id"
        ))
        .bind(&p.ids)
        .bind(&p.users)
        .bind(&p.names)
        .bind(&p.qtys)
        .bind(&p.statuses)
        .bind(&p.ordered)
        .bind(&p.updated)
        .bind(&p.versions)
        .bind(&p.positions)
        .bind(&p.temperatures)
        .bind(&p.sizes)
        .bind(&p.pickups)
        .bind(&p.prices)
        .bind(&p.totals)
        .bind(&p.stores)
        .bind(&p.lines)
        .bind(&placed_ids)
        .fetch_all(&mut *conn)
        .await?;
        let written: std::collections::HashSet<Uuid> =
            written.into_iter().map(|(order,)| order).collect();
        for (order, ids) in p.ids.iter().zip(placed_ids) {
            if !written.contains(order) {
                ids_by_order.insert(*order, ids);
            }
        }
    }
    apply_moves(conn, &t, &moved).await?;
    remember_ids(conn, &t, ids_by_order).await
}

/// The orders not written by this batch's insert (only moved in it, or
/// already newer): the ids their rows have not remembered yet.
async fn remember_ids(
    conn: &mut PgConnection,
    t: &str,
    ids_by_order: std::collections::HashMap<Uuid, serde_json::Value>,
) -> Result<()> {
    if ids_by_order.is_empty() {
        return Ok(());
    }
    let (orders, ids): (Vec<Uuid>, Vec<serde_json::Value>) = ids_by_order.into_iter().unzip();
    sqlx::query(&format!(
        "UPDATE {t} AS v SET event_ids = v.event_ids || u.ids
           FROM UNNEST($1::uuid[], $2::jsonb[]) AS u(order_id, ids)
          WHERE v.order_id = u.order_id"
    ))
    .bind(&orders)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Compares the batch's event ids with those the rows applied at the same
/// versions; returns, per order, the ids to remember (`{"version": id}`).
pub(super) async fn check_event_ids(
    conn: &mut PgConnection,
    table: &str,
    events: &[EventEnvelope],
) -> Result<std::collections::HashMap<Uuid, serde_json::Value>> {
    use std::collections::HashMap;
    let orders: Vec<Uuid> = events.iter().map(|e| e.stream_id.as_uuid()).collect();
    let known: HashMap<Uuid, serde_json::Value> = sqlx::query_as::<_, (Uuid, serde_json::Value)>(
        &format!("SELECT order_id, event_ids FROM {table} WHERE order_id = ANY($1)"),
    )
    .bind(&orders)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut seen: HashMap<Uuid, serde_json::Map<String, serde_json::Value>> = HashMap::new();
    let mut different = Vec::new();
    for e in events {
        let order = e.stream_id.as_uuid();
        let version = e.version.to_string();
        let id = e.event_id.to_string();
        let batch = seen.entry(order).or_default();
        let before = batch
            .get(&version)
            .or_else(|| known.get(&order).and_then(|ids| ids.get(&version)))
            .and_then(serde_json::Value::as_str);
        match before {
            Some(other) if other != id => {
                tracing::error!(%order, version = e.version, event_id = %e.event_id, applied = other,
                    "a different event at a version already applied: was the log restored to an earlier point in time?");
                different.push(order);
            }
            _ => {
                batch.insert(version, serde_json::Value::String(id));
            }
        }
    }
    if !different.is_empty() {
        different.sort();
        different.dedup();
        return Err(ProjectionError::DifferentEvents {
            order_ids: different,
        });
    }
    Ok(seen
        .into_iter()
        .map(|(order, ids)| (order, serde_json::Value::Object(ids)))
        .collect())
}
