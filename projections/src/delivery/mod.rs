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

use domain::{DrinkOptions, EventEnvelope, OrderLine, Status};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;
use crate::order_row::add_option_columns;
use crate::projection::Projection;

pub use infra::kafka::KafkaSource;

mod consume;
mod lag;
mod model;
mod offsets;
mod partition;
mod read;
mod registration;
mod stopped;
mod topic_rebuild;

use model::{apply, create_generation, publish, table};

pub use consume::run_consumer;
pub use lag::status;
pub use offsets::offsets;
pub use read::{all_rows, get, get_many, list_by_status, ListOrder};
pub use registration::REGISTRATION;
pub use topic_rebuild::rebuild;

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
    /// The store the order is for.
    pub store_id: String,
    /// Every line of the order; the first is also in the flat fields.
    pub lines: Vec<OrderLine>,
    /// Whether the lines' prices are known: a row applied by a build before
    /// OrderPlaced v4 kept none (until the model is rebuilt from the topic).
    pub prices_known: bool,
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
        let pickup = crate::order_row::add_pickup_column(conn, &t).await?;
        let stores = crate::order_row::add_store_and_lines_columns(conn, &t).await?;
        // Prices came with several lines: rows applied before have none
        // (NULL), until a rebuild from the topic.
        sqlx::query(&format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS coffee_price bigint,
                             ADD COLUMN IF NOT EXISTS total_price bigint"
        ))
        .execute(&mut *conn)
        .await?;
        model::add_store_index(conn, generation).await?;
        Ok(options || pickup || stores)
    }

    async fn finish_generation(&self, _conn: &mut PgConnection, _generation: i32) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        publish(conn, generation).await
    }

    /// Its tables and its offsets on the topic.
    async fn drop_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        crate::generations::drop_table(conn, &table(generation)).await?;
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
            store_id: o.store_id.clone(),
            lines: o.lines.clone(),
            prices_known: true,
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
