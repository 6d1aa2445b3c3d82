//! The delivery-status read model, fed from Kafka: the delivery side sees only
//! what the topic carries. Its tables live in the `delivery` schema, one set
//! per generation (`delivery.order_status_g{N}`, read through the view
//! `delivery.order_status`); its Kafka offsets (`delivery.offsets`) commit in
//! the same transaction as the read-model changes, so a batch takes effect
//! once however the consumer dies. At-least-once delivery sends duplicates
//! (a relay that crashed between produce and delete re-sends): the per-order
//! version guard absorbs them.
//!
//! rskafka has no consumer groups: one consumer process holds the
//! projection's lease ([`infra::lease`]) and reads every partition, one task
//! each.

use domain::{DrinkOptions, EventEnvelope, Status};
use sqlx::{PgConnection, PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::orders::{add_option_columns, options_of};
use crate::projection::Projection;

pub use infra::kafka::KafkaSource;

mod consume;
mod model;
mod offsets;
mod partition;
mod rebuild;
mod registration;
mod status;
mod stopped;

use model::{apply, create_generation, publish, table};

pub use consume::run_consumer;
pub use offsets::offsets;
pub use rebuild::rebuild;
pub use registration::REGISTRATION;
pub use status::status;

/// The projection's registry name.
pub const NAME: &str = "delivery";

/// How long a fetch of an idle partition waits for records (a long poll), at
/// most. Kafka answers as soon as records arrive; Tansu 0.6 always waits the
/// full time, records or not (its fetch loop sleeps out the remainder), and
/// records that arrive meanwhile wait for the next fetch. So the wait adapts:
/// none right after a fetch that brought records, then 5 ms, doubling with
/// every empty fetch up to this. Under load the added latency stays a few
/// milliseconds on either broker; an idle partition costs 40 fetches a second.
const FETCH_WAIT_MS: i32 = 25;
const FIRST_EMPTY_WAIT_MS: i32 = 5;

/// One row of the delivery read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub coffee_name: String,
    pub coffee_qty: i32,
    pub options: DrinkOptions,
    pub pickup_number: Option<i32>,
    pub status: Status,
    pub ordered_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i32,
    pub last_position: i64,
}

/// The delivery read model as a [`Projection`]: its tables and how events
/// apply to them. (Feeding it, from Kafka, is [`run_consumer`]'s.)
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryReadModel;

impl Projection for DeliveryReadModel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "order statuses fed from Kafka (view delivery.order_status): the delivery view"
    }

    fn reads_log(&self) -> bool {
        false
    }

    async fn create_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        create_generation(conn, generation).await
    }

    async fn upgrade_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<bool> {
        let t = table(generation);
        let options = add_option_columns(conn, &t).await?;
        // Rows applied before event ids were kept have none: nothing to
        // compare for their versions.
        sqlx::query(&format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS event_ids jsonb NOT NULL DEFAULT '{{}}'"
        ))
        .execute(&mut *conn)
        .await?;
        let pickup = crate::orders::add_pickup_column(conn, &t).await?;
        Ok(options || pickup)
    }

    async fn finish_generation(&self, _conn: &mut PgConnection, _generation: i32) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        publish(conn, generation).await
    }

    /// Its tables and its offsets on the topic.
    async fn drop_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        crate::rebuild::drop_table(conn, &table(generation)).await?;
        sqlx::query!(
            "DELETE FROM delivery.offsets WHERE generation = $1",
            generation,
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> Result<()> {
        apply(conn, generation, events).await
    }
}

const ROW_COLUMNS: &str = "order_id, user_id, coffee_name, coffee_qty, status, ordered_at, \
     updated_at, version, last_position, temperature, size, pickup_number";

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<DeliveryRow> {
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<Status>()
        .map_err(|e| ProjectionError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(DeliveryRow {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
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

/// The orders now in `status` in `order` of ordering time, at most `limit`
/// (all without one).
pub async fn list_by_status<'e>(
    db: impl PgExecutor<'e>,
    status: Status,
    order: ListOrder,
    limit: Option<i64>,
) -> Result<Vec<DeliveryRow>> {
    // The status index serves both directions.
    let direction = match order {
        ListOrder::OldestFirst => "ASC",
        ListOrder::NewestFirst => "DESC",
    };
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM delivery.order_status WHERE status = $1
          ORDER BY ordered_at {direction}, order_id {direction} LIMIT $2"
    ))
    .bind(status.code())
    .bind(limit)
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

/// The partitions the live consumer stopped, with why.
pub async fn stopped_partitions<'e>(
    db: impl PgExecutor<'e>,
    topic: &str,
) -> Result<Vec<(i32, String)>> {
    Ok(sqlx::query!(
        "SELECT partition, reason FROM delivery.stopped_partitions
          WHERE topic = $1 ORDER BY partition",
        topic
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.partition, r.reason))
    .collect())
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

/// Events the delivery projection has applied (sum over partitions).
pub async fn events_applied<'e>(db: impl PgExecutor<'e>) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT coalesce(sum(o.events_applied), 0)::bigint AS "applied!" FROM delivery.offsets o
            JOIN projections p ON p.name = 'delivery' AND p.active_generation = o.generation"#
    )
    .fetch_one(db)
    .await?)
}

/// The fold of the log as the delivery model must show it (for verification).
pub fn expected_from_orders(orders: &[crate::OrderRow]) -> Vec<DeliveryRow> {
    orders.iter().map(DeliveryRow::from).collect()
}

/// What the delivery side shows of an order.
impl From<&crate::OrderRow> for DeliveryRow {
    fn from(o: &crate::OrderRow) -> Self {
        DeliveryRow {
            order_id: o.order_id,
            user_id: o.user_id.clone(),
            coffee_name: o.coffee_name.clone(),
            coffee_qty: o.coffee_qty,
            options: o.options,
            pickup_number: o.pickup_number,
            status: o.status,
            ordered_at: o.ordered_at,
            updated_at: o.updated_at,
            version: o.version,
            last_position: o.last_position,
        }
    }
}
