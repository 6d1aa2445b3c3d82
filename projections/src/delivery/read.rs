//! Reads of the delivery read model: by status (the board's columns), by
//! order, and every row (for verification).

use domain::Status;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use super::DeliveryRow;
use crate::error::Result;
use crate::order_row::{lines_of, options_of, status_of};

const ROW_COLUMNS: &str = "order_id, user_id, coffee_name, coffee_qty, status, ordered_at, \
     updated_at, version, last_position, temperature, size, pickup_number, coffee_price, \
     store_id, lines";

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<DeliveryRow> {
    let status = status_of(row)?;
    let price: Option<i64> = row.try_get("coffee_price")?;
    Ok(DeliveryRow {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        store_id: row.try_get("store_id")?,
        lines: lines_of(row, price)?,
        prices_known: price.is_some(),
        coffee_name: row.try_get("coffee_name")?,
        coffee_qty: row.try_get("coffee_qty")?,
        options: options_of(row)?,
        pickup_number: row.try_get("pickup_number")?,
        status,
        ordered_at: row.try_get("ordered_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        last_position: row.try_get("last_position")?,
    })
}

/// Which orders of a status list come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// The longest waiting first (the kitchen's queue).
    #[default]
    OldestFirst,
    /// The most recent first (the board's 배송완료 / 취소).
    NewestFirst,
}

/// The orders now in `status` at `stores` (`None`: every store) in `order`
/// of ordering time, at most `limit` (a list is always bounded: the caller
/// says how far).
pub async fn list_by_status<'e>(
    db: impl PgExecutor<'e>,
    status: Status,
    stores: Option<&[String]>,
    order: ListOrder,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    // The status index (or, for some stores, the store index) serves both
    // directions.
    let direction = match order {
        ListOrder::OldestFirst => "ASC",
        ListOrder::NewestFirst => "DESC",
    };
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status
          WHERE status = $1 AND ($3::text[] IS NULL OR store_id = ANY($3))
          ORDER BY ordered_at {direction}, order_id {direction} LIMIT $2"
    ))
    .bind(status.code())
    .bind(limit)
    .bind(stores)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// One order's delivery status.
pub async fn get<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<Option<DeliveryRow>> {
    let row = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

/// The delivery statuses of `orders` (those that exist), in no order.
pub async fn get_many<'e>(db: impl PgExecutor<'e>, orders: &[Uuid]) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status WHERE order_id = ANY($1)"
    ))
    .bind(orders)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// Every row, by order id (for verification).
pub async fn all_rows<'e>(db: impl PgExecutor<'e>) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status ORDER BY order_id"
    ))
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}
