//! What a batch does to the orders it touches, written once per order:
//! shared by every read model keyed by order (this one and the delivery
//! model).

use std::collections::HashMap;

use domain::{DrinkOptions, Event, EventEnvelope, OptionValue, Size, Status, Temperature};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};

/// What one batch does to one order: its placement (if in the batch) and its
/// state after the batch's last event for it.
pub(crate) struct Change {
    pub placed: Option<domain::OrderPlaced>,
    pub ordered_at: OffsetDateTime,
    pub status: Status,
    pub updated_at: OffsetDateTime,
    pub version: i32,
    pub position: i64,
}

/// Folds a batch into one change per order, in first-seen order, so each
/// order is written once per batch (a statement cannot update a row twice).
pub(crate) fn reduce<'a>(
    events: impl ExactSizeIterator<Item = &'a EventEnvelope>,
) -> Result<Vec<(Uuid, Change)>> {
    let mut index: HashMap<Uuid, usize> = HashMap::with_capacity(events.len());
    let mut changes: Vec<(Uuid, Change)> = Vec::with_capacity(events.len());
    for envelope in events {
        let position = envelope.position.unwrap_or_default();
        let version = i32::try_from(envelope.version).map_err(|_| ProjectionError::Corrupt {
            position,
            what: "version out of range".into(),
        })?;
        let id = envelope.stream_id.as_uuid();
        let placed = match &envelope.event {
            Event::OrderPlaced(p) => Some(p.clone()),
            _ => None,
        };
        let slot = *index.entry(id).or_insert_with(|| {
            changes.push((
                id,
                Change {
                    placed: None,
                    ordered_at: envelope.recorded_at,
                    status: Status::Received,
                    updated_at: envelope.recorded_at,
                    version: 0,
                    position: 0,
                },
            ));
            changes.len() - 1
        });
        let change = &mut changes[slot].1;
        if let Some(p) = placed {
            change.placed = Some(p);
            change.ordered_at = envelope.recorded_at;
        }
        if version > change.version {
            change.status = envelope.event.status_after();
            change.updated_at = envelope.recorded_at;
            change.version = version;
            change.position = position;
        }
    }
    Ok(changes)
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Moves orders to their state after a batch's last event for them: status,
/// updated_at, version, last_position. Shared by every read model keyed by
/// order with those columns. The version guard makes a replayed or duplicate
/// event a no-op: a row moves only forward, and the state after an order's
/// last event in the batch does not depend on the ones before it.
///
/// A move of an order the table has no row for is corruption: then nothing
/// is updated and the answer is [`ProjectionError::MissingRows`].
pub(crate) async fn apply_moves(
    conn: &mut PgConnection,
    table: &str,
    moved: &[&(Uuid, Change)],
) -> Result<()> {
    if moved.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = moved.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<&str> = moved.iter().map(|(_, c)| c.status.code()).collect();
    let updated: Vec<OffsetDateTime> = moved.iter().map(|(_, c)| c.updated_at).collect();
    let versions: Vec<i32> = moved.iter().map(|(_, c)| c.version).collect();
    let positions: Vec<i64> = moved.iter().map(|(_, c)| c.position).collect();
    // One statement: the check and the update see the same snapshot.
    let missing: Vec<Uuid> = sqlx::query_scalar(&format!(
        "WITH u AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::bigint[])
                 AS u(order_id, status, updated_at, version, last_position)),
         missing AS (
             SELECT u.order_id FROM u
              WHERE NOT EXISTS (SELECT 1 FROM {table} v WHERE v.order_id = u.order_id)),
         moved AS (
             UPDATE {table} AS v
                SET status = u.status, updated_at = u.updated_at, version = u.version,
                    last_position = u.last_position
               FROM u
              WHERE v.order_id = u.order_id AND v.version < u.version
                AND NOT EXISTS (SELECT 1 FROM missing))
         SELECT order_id FROM missing"
    ))
    .bind(&ids)
    .bind(&statuses)
    .bind(&updated)
    .bind(&versions)
    .bind(&positions)
    .fetch_all(&mut *conn)
    .await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProjectionError::MissingRows { order_ids: missing })
    }
}

/// Whether `table` (created by this or an older build) has `column`.
async fn has_column(conn: &mut PgConnection, table: &str, column: &str) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = to_regclass($1) AND attname = $2
                             AND NOT attisdropped) AS "has!""#,
        table,
        column,
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Adds the drink-option columns (OrderPlaced v2) to a table created by an
/// older build. Every row it holds was placed before options existed, so the
/// defaults (hot, regular) are the truth for them. Returns whether it changed
/// the table (then its view must be published again).
pub(crate) async fn add_option_columns(conn: &mut PgConnection, table: &str) -> Result<bool> {
    if has_column(conn, table, "temperature").await? {
        return Ok(false);
    }
    sqlx::query(&format!(
        "ALTER TABLE {table}
            ADD COLUMN IF NOT EXISTS temperature text NOT NULL DEFAULT 'hot'
                CHECK (temperature IN ('hot', 'iced')),
            ADD COLUMN IF NOT EXISTS size text NOT NULL DEFAULT 'regular'
                CHECK (size IN ('regular', 'large'))"
    ))
    .execute(&mut *conn)
    .await?;
    tracing::info!(table, "added the drink-option columns (OrderPlaced v2)");
    Ok(true)
}

/// Adds the pickup-number column (OrderPlaced v3) to a table created by an
/// older build: NULL, the truth for every order placed before it. Returns
/// whether it changed the table (then its view must be published again).
pub(crate) async fn add_pickup_column(conn: &mut PgConnection, table: &str) -> Result<bool> {
    if has_column(conn, table, "pickup_number").await? {
        return Ok(false);
    }
    sqlx::query(&format!(
        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS pickup_number integer"
    ))
    .execute(&mut *conn)
    .await?;
    tracing::info!(table, "added the pickup-number column (OrderPlaced v3)");
    Ok(true)
}

/// Reads the option columns of a read-model row.
pub(crate) fn options_of(row: &sqlx::postgres::PgRow) -> Result<DrinkOptions> {
    let parse_error =
        |e: domain::ValueError| ProjectionError::Database(sqlx::Error::Decode(Box::new(e)));
    let temperature: String = row.try_get("temperature")?;
    let size: String = row.try_get("size")?;
    Ok(DrinkOptions {
        temperature: Temperature::parse(&temperature).map_err(parse_error)?,
        size: Size::parse(&size).map_err(parse_error)?,
    })
}
