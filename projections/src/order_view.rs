//! The order read model: one row per order with everything API.md's order
//! shows, for the list endpoint (a user's orders, newest first) and for reads
//! that do not need the log.
//!
//! Each generation is a table `order_view_g{N}`; readers use the view
//! `order_view`, which a rebuild repoints in the same transaction that makes
//! the new generation active.

use std::collections::HashMap;

use domain::{Event, EventEnvelope, Status};
use sqlx::{PgConnection, PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::log::LogEvent;
use crate::projection::Projection;

/// The projection's registry name.
pub const NAME: &str = "orders";

/// The order read model.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderReadModel;

/// One row of the order read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: String,
    pub coffee_name: String,
    pub coffee_price: i64,
    pub coffee_qty: i32,
    pub total_price: i64,
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

impl Projection for OrderReadModel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "one row per order (view order_view): the order list and order reads"
    }

    async fn create_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        let t = table(generation);
        // Every order is updated up to three times (its moves) and no
        // updated column is indexed: with 40 % of each page left free the
        // updates are HOT (new version on the same page, no index entry).
        // Full pages made each one a new index entry and a dead tuple: the
        // rebuild ran at 0.25 of COPY with 49 MB of indexes, against 0.35
        // with 34 MB at fillfactor 60 (docs/adr/0006).
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                order_id      uuid        PRIMARY KEY,
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
                last_position bigint      NOT NULL
            ) WITH (fillfactor = 60)"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn finish_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        let t = table(generation);
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
                    status, ordered_at, updated_at, version, last_position
               FROM {t}"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn drop_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<()> {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", table(generation)))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[LogEvent],
    ) -> Result<()> {
        let t = table(generation);
        let changes = reduce(events.iter().map(|e| &e.envelope))?;
        let (placed, moved): (Vec<_>, Vec<_>) =
            changes.iter().partition(|(_, c)| c.placed.is_some());

        if !placed.is_empty() {
            let mut ids = Vec::with_capacity(placed.len());
            let mut users = Vec::with_capacity(placed.len());
            let mut names = Vec::with_capacity(placed.len());
            let mut prices = Vec::with_capacity(placed.len());
            let mut qtys = Vec::with_capacity(placed.len());
            let mut totals = Vec::with_capacity(placed.len());
            let mut statuses = Vec::with_capacity(placed.len());
            let mut ordered = Vec::with_capacity(placed.len());
            let mut updated = Vec::with_capacity(placed.len());
            let mut versions = Vec::with_capacity(placed.len());
            let mut positions = Vec::with_capacity(placed.len());
            for (id, c) in &placed {
                let Some(p) = &c.placed else { continue };
                ids.push(*id);
                users.push(p.user_id.as_str());
                names.push(p.coffee_name.as_str());
                prices.push(to_i64(u64::from(p.coffee_price)));
                qtys.push(i32::try_from(p.coffee_qty.get()).unwrap_or(i32::MAX));
                totals.push(to_i64(p.total_price.0));
                statuses.push(c.status.code());
                ordered.push(c.ordered_at);
                updated.push(c.updated_at);
                versions.push(c.version);
                positions.push(c.position);
            }
            // A placement seen again (a replay) only moves a row forward.
            sqlx::query(&format!(
                "INSERT INTO {t} AS v (order_id, user_id, coffee_name, coffee_price, coffee_qty,
                                       total_price, status, ordered_at, updated_at, version,
                                       last_position)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[],
                                      $5::int[], $6::bigint[], $7::text[], $8::timestamptz[],
                                      $9::timestamptz[], $10::int[], $11::bigint[])
                 ON CONFLICT (order_id) DO UPDATE
                    SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
                        version = EXCLUDED.version, last_position = EXCLUDED.last_position
                  WHERE v.version < EXCLUDED.version"
            ))
            .bind(&ids)
            .bind(&users)
            .bind(&names)
            .bind(&prices)
            .bind(&qtys)
            .bind(&totals)
            .bind(&statuses)
            .bind(&ordered)
            .bind(&updated)
            .bind(&versions)
            .bind(&positions)
            .execute(&mut *conn)
            .await?;
        }

        apply_moves(conn, &t, &moved).await?;
        Ok(())
    }
}

/// Moves orders to their state after a batch's last event for them: status,
/// updated_at, version, last_position. Shared by every read model keyed by
/// order with those columns. The version guard makes a replayed or duplicate
/// event a no-op: a row moves only forward, and the state after an order's
/// last event in the batch does not depend on the ones before it.
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
    sqlx::query(&format!(
        "UPDATE {table} AS v
            SET status = u.status, updated_at = u.updated_at, version = u.version,
                last_position = u.last_position
           FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::bigint[])
                AS u(order_id, status, updated_at, version, last_position)
          WHERE v.order_id = u.order_id AND v.version < u.version"
    ))
    .bind(&ids)
    .bind(&statuses)
    .bind(&updated)
    .bind(&versions)
    .bind(&positions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const ROW_COLUMNS: &str = "order_id, user_id, coffee_name, coffee_price, coffee_qty, total_price, \
     status, ordered_at, updated_at, version, last_position";

fn decode(row: &sqlx::postgres::PgRow) -> Result<OrderRow> {
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<Status>()
        .map_err(|e| ProjectionError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(OrderRow {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        coffee_name: row.try_get("coffee_name")?,
        coffee_price: row.try_get("coffee_price")?,
        coffee_qty: row.try_get("coffee_qty")?,
        total_price: row.try_get("total_price")?,
        status,
        ordered_at: row.try_get("ordered_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        last_position: row.try_get("last_position")?,
    })
}

/// Up to `limit` of a user's orders, newest first (order ids are UUID v7:
/// time-ordered), starting after the order id `before` when given.
pub async fn list_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {ROW_COLUMNS} FROM order_view
          WHERE user_id = $1 AND ($2::uuid IS NULL OR order_id < $2)
          ORDER BY order_id DESC
          LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(limit)
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

/// The order read model as the log says it must be: every stream folded from
/// its first event with the domain's own `evolve`, independently of the
/// projection's batch logic. Used to verify a model (tests, `verify`). With
/// `published_only`, events still waiting in the outbox are left out (what
/// the Kafka side can have seen).
pub async fn fold_log(conn: &mut PgConnection, published_only: bool) -> Result<Vec<OrderRow>> {
    use futures::TryStreamExt;

    let mut rows = Vec::new();
    let mut current: Option<(domain::OrderState, OffsetDateTime, OffsetDateTime, i64)> = None;
    let mut current_id = None;
    let filter = if published_only {
        "WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.position = events.position)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {} FROM events {filter} ORDER BY stream_id, version",
        crate::row::EVENT_COLUMNS
    );
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    let finish =
        |rows: &mut Vec<OrderRow>,
         state: Option<(domain::OrderState, OffsetDateTime, OffsetDateTime, i64)>| {
            if let Some((
                domain::OrderState::Placed(order),
                ordered_at,
                updated_at,
                last_position,
            )) = state
            {
                rows.push(OrderRow {
                    order_id: order.order_id.as_uuid(),
                    user_id: order.user_id.to_string(),
                    coffee_name: order.coffee_name.to_string(),
                    coffee_price: to_i64(u64::from(order.coffee_price)),
                    coffee_qty: i32::try_from(order.coffee_qty.get()).unwrap_or(i32::MAX),
                    total_price: to_i64(order.total_price.0),
                    status: order.status,
                    ordered_at,
                    updated_at,
                    version: i32::try_from(order.version).unwrap_or(i32::MAX),
                    last_position,
                });
            }
        };
    while let Some(row) = stream.try_next().await? {
        let e = crate::row::decode_event_row(&row)?;
        let position = e.position.unwrap_or_default();
        if current_id != Some(e.stream_id) {
            finish(&mut rows, current.take());
            current_id = Some(e.stream_id);
            current = Some((
                domain::OrderState::NotPlaced,
                e.recorded_at,
                e.recorded_at,
                position,
            ));
        }
        if let Some((state, _, updated_at, last_position)) = current.as_mut() {
            *state = domain::evolve(std::mem::take(state), &e.event);
            *updated_at = e.recorded_at;
            *last_position = position;
        }
    }
    finish(&mut rows, current.take());
    rows.sort_by_key(|r| r.order_id);
    Ok(rows)
}
