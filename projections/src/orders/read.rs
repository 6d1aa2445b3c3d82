//! Reading the order read model.

use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::error::Result;

use super::{table, OrderRow};
use crate::order_row::{lines_of, options_of, status_of};

pub(super) const ROW_COLUMNS: &str =
    "order_id, user_id, coffee_name, coffee_price, coffee_qty, total_price, \
     status, ordered_at, updated_at, version, last_position, temperature, size, pickup_number, \
     store_id, lines";

pub(super) fn decode(row: &sqlx::postgres::PgRow) -> Result<OrderRow> {
    let status = status_of(row)?;
    Ok(OrderRow {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        store_id: row.try_get("store_id")?,
        lines: lines_of(row, Some(row.try_get("coffee_price")?))?,
        coffee_name: row.try_get("coffee_name")?,
        coffee_price: row.try_get("coffee_price")?,
        coffee_qty: row.try_get("coffee_qty")?,
        total_price: row.try_get("total_price")?,
        options: options_of(row)?,
        pickup_number: row.try_get("pickup_number")?,
        status,
        ordered_at: row.try_get("ordered_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        last_position: row.try_get("last_position")?,
    })
}

/// Up to `limit` of a user's orders at `stores` (`None`: every store),
/// newest first (order ids are UUID v7: time-ordered), starting after the
/// order id `before` when given.
pub async fn list_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: &str,
    stores: Option<&[String]>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM order_view
          WHERE user_id = $1 AND ($2::uuid IS NULL OR order_id < $2)
            AND ($4::text[] IS NULL OR store_id = ANY($4))
          ORDER BY order_id DESC
          LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .bind(stores)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// The published rows of `orders` (those that exist), in no order: what a
/// live stream sends after a batch named them.
pub async fn rows_by_id<'e>(db: impl PgExecutor<'e>, orders: &[Uuid]) -> Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM order_view WHERE order_id = ANY($1)"
    ))
    .bind(orders)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// Every row of one generation (or of the published view), by order id:
/// for comparing generations and for verifying a model against the log.
pub async fn all_rows<'e>(
    db: impl PgExecutor<'e>,
    generation: Option<i32>,
) -> Result<Vec<OrderRow>> {
    let from = generation.map_or_else(|| "order_view".to_owned(), table);
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM {from} ORDER BY order_id"
    ))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}
