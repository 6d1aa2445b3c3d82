//! What every read model keyed by order shares about an order's row: what
//! a batch does to each order it touches (written once per order), the
//! moves of status and version, the columns of an order's lines, options,
//! pickup number and store, and how older generations gain them. The order
//! read model and the delivery model both build on it.
//!
//! An order's first line is in flat columns (`coffee_name`, `coffee_price`,
//! `coffee_qty`, `temperature`, `size`: the original single-drink fields);
//! an order of several lines also has all of them in `lines` (JSON, the
//! event's shape), NULL for an order of one.

use std::collections::HashMap;

use domain::{
    CoffeeName, DrinkOptions, Event, EventEnvelope, OptionValue, OrderLine, Price, Quantity, Size,
    Status, Temperature,
};
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

/// The orders a batch placed, column by column (one array per column, for
/// one `UNNEST` insert), each in its state after the batch. What every read
/// model keyed by order keeps of a placement is read from the event here,
/// once; a model binds the columns it has.
pub(crate) struct Placements<'a> {
    pub ids: Vec<Uuid>,
    pub users: Vec<&'a str>,
    pub stores: Vec<&'a str>,
    /// Every line, for orders of more than one (NULL otherwise).
    pub lines: Vec<Option<serde_json::Value>>,
    pub names: Vec<&'a str>,
    pub prices: Vec<i64>,
    pub qtys: Vec<i32>,
    pub totals: Vec<i64>,
    pub temperatures: Vec<&'static str>,
    pub sizes: Vec<&'static str>,
    pub pickups: Vec<Option<i32>>,
    pub statuses: Vec<&'static str>,
    pub ordered: Vec<OffsetDateTime>,
    pub updated: Vec<OffsetDateTime>,
    pub versions: Vec<i32>,
    pub positions: Vec<i64>,
}

impl<'a> Placements<'a> {
    /// The placements among `changes` (changes without one are skipped).
    pub fn of(changes: &[&'a (Uuid, Change)]) -> Self {
        let n = changes.len();
        let mut p = Placements {
            ids: Vec::with_capacity(n),
            users: Vec::with_capacity(n),
            stores: Vec::with_capacity(n),
            lines: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            prices: Vec::with_capacity(n),
            qtys: Vec::with_capacity(n),
            totals: Vec::with_capacity(n),
            temperatures: Vec::with_capacity(n),
            sizes: Vec::with_capacity(n),
            pickups: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            ordered: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
        };
        for (id, c) in changes {
            let Some(placed) = &c.placed else { continue };
            p.ids.push(*id);
            let first = placed.lines.first();
            p.users.push(placed.user_id.as_str());
            p.stores.push(placed.store_id.as_str());
            p.lines.push(
                (placed.lines.len() > 1)
                    .then(|| serde_json::to_value(&placed.lines).unwrap_or_default()),
            );
            p.names.push(first.coffee_name.as_str());
            p.prices.push(to_i64(u64::from(first.coffee_price)));
            p.qtys
                .push(i32::try_from(first.coffee_qty.get()).unwrap_or(i32::MAX));
            p.totals.push(to_i64(placed.total_price.0));
            p.temperatures.push(first.options.temperature.code());
            p.sizes.push(first.options.size.code());
            p.pickups
                .push(placed.pickup_number.and_then(|n| i32::try_from(n).ok()));
            p.statuses.push(c.status.code());
            p.ordered.push(c.ordered_at);
            p.updated.push(c.updated_at);
            p.versions.push(c.version);
            p.positions.push(c.position);
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
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

/// Adds the store and lines columns (OrderPlaced v4) to a table created by
/// an older build. Every row it holds is an order of one drink (its flat
/// columns) at the default store. Returns whether it changed the table
/// (then its view must be published again).
pub(crate) async fn add_store_and_lines_columns(
    conn: &mut PgConnection,
    table: &str,
) -> Result<bool> {
    if has_column(conn, table, "store_id").await? {
        return Ok(false);
    }
    sqlx::query(&format!(
        "ALTER TABLE {table}
            ADD COLUMN IF NOT EXISTS store_id text NOT NULL DEFAULT '{}',
            ADD COLUMN IF NOT EXISTS lines jsonb",
        domain::StoreId::DEFAULT
    ))
    .execute(&mut *conn)
    .await?;
    tracing::info!(table, "added the store and lines columns (OrderPlaced v4)");
    Ok(true)
}

/// The columns of an order's lines and store, as `CREATE TABLE` writes them.
pub(crate) fn store_and_lines_columns() -> String {
    format!(
        "store_id text NOT NULL DEFAULT '{}', lines jsonb",
        domain::StoreId::DEFAULT
    )
}

/// Reads an order's lines from a read-model row: `lines` when it holds
/// several, else the one in the flat columns, at `price` (`None`: a row the
/// delivery model applied before it kept prices, read as 0; its reader says
/// the price is unknown).
pub(crate) fn lines_of(row: &sqlx::postgres::PgRow, price: Option<i64>) -> Result<Vec<OrderLine>> {
    let corrupt = |what: String| ProjectionError::Database(sqlx::Error::Decode(what.into()));
    let several: Option<serde_json::Value> = row.try_get("lines")?;
    if let Some(lines) = several {
        return serde_json::from_value::<domain::OrderLines>(lines)
            .map(Vec::from)
            .map_err(|e| corrupt(format!("lines: {e}")));
    }
    let name: String = row.try_get("coffee_name")?;
    let qty: i32 = row.try_get("coffee_qty")?;
    let value = |e: domain::ValueError| corrupt(e.to_string());
    Ok(vec![OrderLine {
        coffee_name: CoffeeName::parse(&name).map_err(value)?,
        coffee_price: Price::try_from(u64::try_from(price.unwrap_or_default()).unwrap_or(u64::MAX))
            .map_err(value)?,
        coffee_qty: Quantity::try_from(u64::try_from(qty).unwrap_or_default()).map_err(value)?,
        options: options_of(row)?,
    }])
}

/// Reads the status column of a read-model row.
pub(crate) fn status_of(row: &sqlx::postgres::PgRow) -> Result<Status> {
    let status: String = row.try_get("status")?;
    status
        .parse::<Status>()
        .map_err(|e| ProjectionError::Database(sqlx::Error::Decode(Box::new(e))))
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
