//! The order read model: one row per order with everything an order shows in API.md (the HTTP contract kept beside the repository)
//! shows, for the list endpoint (a user's orders, newest first) and for reads
//! that do not need the log.
//!
//! Each generation is a table `order_view_g{N}`; readers use the view
//! `order_view`, which a rebuild repoints in the same transaction that makes
//! the new generation active.

use domain::{DrinkOptions, EventEnvelope, OrderLine, Status};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;
use crate::order_row::{
    add_option_columns, add_pickup_column, add_store_and_lines_columns, apply_moves, reduce,
    store_and_lines_columns, Change, Placements,
};
use crate::projection::Projection;

mod fold;
mod read;
mod registration;

pub use fold::{fold_log, Accounted, Folded};
pub use read::{all_rows, list_for_user, rows_by_id};
pub use registration::REGISTRATION;

/// The projection's registry name.
pub const NAME: &str = "orders";

/// The order read model.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersReadModel;

/// One row of the order read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    /// The store the order is for (the default store's for orders placed
    /// before stores, OrderPlaced v4).
    pub store_id: String,
    /// Every line of the order (one for a single-drink order); the first is
    /// also in the flat fields below.
    pub lines: Vec<OrderLine>,
    pub coffee_name: String,
    pub coffee_price: i64,
    pub coffee_qty: i32,
    pub total_price: i64,
    pub options: DrinkOptions,
    /// `None` for orders placed before pickup numbers (OrderPlaced v3).
    pub pickup_number: Option<i32>,
    pub status: Status,
    pub ordered_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i32,
    /// The log position of the last event applied to this row.
    pub last_position: i64,
}

fn table(generation: i32) -> String {
    format!("order_view_g{generation}")
}

impl Projection for OrdersReadModel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "one row per order (view order_view): the order list and order reads"
    }

    fn changes_channel(&self) -> Option<infra::notify::Channel> {
        Some(infra::notify::ORDERS)
    }

    async fn create_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        let t = table(generation);
        // Filled full: a rebuild writes each order once, in its final state
        // (stream order). `finish_generation` leaves room on the pages the
        // live worker fills, and adds the primary key: a rebuild's catch-up
        // loads rows no index has to take one by one (docs/adr/0006).
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                order_id      uuid        NOT NULL,
                user_id       text        NOT NULL,
                coffee_name   text        NOT NULL,
                coffee_price  bigint      NOT NULL,
                coffee_qty    integer     NOT NULL,
                total_price   bigint      NOT NULL,
                status        text        NOT NULL CHECK (status IN
                    ('received', 'preparing', 'delivering', 'delivered', 'cancelled')),
                ordered_at    timestamptz NOT NULL,
                updated_at    timestamptz NOT NULL,
                version       integer     NOT NULL,
                last_position bigint      NOT NULL,
                temperature   text        NOT NULL DEFAULT 'hot' CHECK (temperature IN ('hot', 'iced')),
                size          text        NOT NULL DEFAULT 'regular' CHECK (size IN ('regular', 'large')),
                pickup_number integer,
                {}
            )",
            store_and_lines_columns()
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn upgrade_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<bool> {
        let options = add_option_columns(conn, &table(generation)).await?;
        let pickup = add_pickup_column(conn, &table(generation)).await?;
        let stores = add_store_and_lines_columns(conn, &table(generation)).await?;
        Ok(options || pickup || stores)
    }

    async fn finish_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        let t = table(generation);
        // From here on the worker places orders and moves them up to three
        // times; no updated column is indexed, so with 40 % of each new page
        // left free the moves are HOT (same page, no index entry). Full
        // pages made each a new index entry and a dead tuple (docs/adr/0006).
        sqlx::query(&format!("ALTER TABLE {t} SET (fillfactor = 60)"))
            .execute(&mut *conn)
            .await?;
        // The key `apply` upserts on, built once over the loaded rows (one
        // sort, where a row-by-row insert into a b-tree of random ids touched
        // a page per row). Generations of older builds have it already.
        let keyed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint
                             WHERE conrelid = $1::regclass AND contype = 'p')",
        )
        .bind(&t)
        .fetch_one(&mut *conn)
        .await?;
        if !keyed {
            sqlx::query(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {t}_pkey ON {t} (order_id)"
            ))
            .execute(&mut *conn)
            .await?;
            sqlx::query(&format!(
                "ALTER TABLE {t} ADD CONSTRAINT {t}_pkey PRIMARY KEY USING INDEX {t}_pkey"
            ))
            .execute(&mut *conn)
            .await?;
        }
        // The order list: a user's orders, newest first.
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS {t}_user_idx ON {t} (user_id, order_id DESC)"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn publish(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        let t = table(generation);
        sqlx::query(&format!(
            "CREATE OR REPLACE VIEW order_view AS
             SELECT order_id, user_id, coffee_name, coffee_price, coffee_qty, total_price,
                    status, ordered_at, updated_at, version, last_position, temperature, size,
                    pickup_number, store_id, lines
               FROM {t}"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        crate::generations::drop_table(conn, &table(generation)).await
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> Result<()> {
        let t = table(generation);
        let changes = reduce(events.iter())?;
        let (placed, moved): (Vec<_>, Vec<_>) =
            changes.iter().partition(|(_, c)| c.placed.is_some());
        insert_placed(conn, &t, &placed, Placing::Upsert).await?;
        apply_moves(conn, &t, &moved).await?;
        Ok(())
    }

    async fn load(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> Result<()> {
        let changes = reduce(events.iter())?;
        // Whole streams into tables that hold none of them: an order without
        // its placement here has no row to move, anywhere.
        let orphans: Vec<Uuid> = changes
            .iter()
            .filter(|(_, c)| c.placed.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !orphans.is_empty() {
            return Err(crate::ProjectionError::MissingRows { order_ids: orphans });
        }
        let placed: Vec<_> = changes.iter().collect();
        insert_placed(conn, &table(generation), &placed, Placing::Load).await
    }
}

/// How placements are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placing {
    /// A placement seen again (a replay) only moves its row forward.
    Upsert,
    /// Rows no table has yet (a rebuild's catch-up): a plain insert, without
    /// the speculative insertion `ON CONFLICT` costs per row. A row that is
    /// there after all fails the statement (and the rebuild), loudly.
    Load,
}

/// Writes the rows of orders placed in a batch, in their state after it.
async fn insert_placed(
    conn: &mut PgConnection,
    t: &str,
    placed: &[&(Uuid, Change)],
    placing: Placing,
) -> Result<()> {
    let p = Placements::of(placed);
    if p.is_empty() {
        return Ok(());
    }
    let on_conflict = match placing {
        Placing::Upsert => {
            "ON CONFLICT (order_id) DO UPDATE
                SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version, last_position = EXCLUDED.last_position
              WHERE v.version < EXCLUDED.version"
        }
        Placing::Load => "",
    };
    sqlx::query(&format!(
        "INSERT INTO {t} AS v (order_id, user_id, coffee_name, coffee_price, coffee_qty,
                               total_price, status, ordered_at, updated_at, version,
                               last_position, temperature, size, pickup_number, store_id,
                               lines)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[],
                              $5::int[], $6::bigint[], $7::text[], $8::timestamptz[],
                              $9::timestamptz[], $10::int[], $11::bigint[], $12::text[],
                              $13::text[], $14::int[], $15::text[], $16::jsonb[])
         {on_conflict}"
    ))
    .bind(&p.ids)
    .bind(&p.users)
    .bind(&p.names)
    .bind(&p.prices)
    .bind(&p.qtys)
    .bind(&p.totals)
    .bind(&p.statuses)
    .bind(&p.ordered)
    .bind(&p.updated)
    .bind(&p.versions)
    .bind(&p.positions)
    .bind(&p.temperatures)
    .bind(&p.sizes)
    .bind(&p.pickups)
    .bind(&p.stores)
    .bind(&p.lines)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
