//! The order read model: one row per order with everything API.md's order
//! shows, for the list endpoint (a user's orders, newest first) and for reads
//! that do not need the log.
//!
//! Each generation is a table `order_view_g{N}`; readers use the view
//! `order_view`, which a rebuild repoints in the same transaction that makes
//! the new generation active.

use std::collections::HashMap;

use domain::{DrinkOptions, Event, EventEnvelope, OptionValue, Size, Status, Temperature};
use sqlx::{PgConnection, PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
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
    pub options: DrinkOptions,
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
                last_position bigint      NOT NULL,
                temperature   text        NOT NULL DEFAULT 'hot' CHECK (temperature IN ('hot', 'iced')),
                size          text        NOT NULL DEFAULT 'regular' CHECK (size IN ('regular', 'large'))
            ) WITH (fillfactor = 60)"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn upgrade_generation(&self, conn: &mut PgConnection, generation: i32) -> Result<bool> {
        add_option_columns(conn, &table(generation)).await
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
                    status, ordered_at, updated_at, version, last_position, temperature, size
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
        events: &[EventEnvelope],
    ) -> Result<()> {
        let t = table(generation);
        let changes = reduce(events.iter())?;
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
            let mut temperatures = Vec::with_capacity(placed.len());
            let mut sizes = Vec::with_capacity(placed.len());
            for (id, c) in &placed {
                let Some(p) = &c.placed else { continue };
                ids.push(*id);
                temperatures.push(p.options.temperature.code());
                sizes.push(p.options.size.code());
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
                                       last_position, temperature, size)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[],
                                      $5::int[], $6::bigint[], $7::text[], $8::timestamptz[],
                                      $9::timestamptz[], $10::int[], $11::bigint[], $12::text[],
                                      $13::text[])
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
            .bind(&temperatures)
            .bind(&sizes)
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

/// Adds the drink-option columns (OrderPlaced v2) to a table created by an
/// older build. Every row it holds was placed before options existed, so the
/// defaults (hot, regular) are the truth for them. Returns whether it changed
/// the table (then its view must be published again).
pub(crate) async fn add_option_columns(conn: &mut PgConnection, table: &str) -> Result<bool> {
    let has: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute
                         WHERE attrelid = to_regclass($1) AND attname = 'temperature'
                           AND NOT attisdropped)",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    if has {
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

const ROW_COLUMNS: &str = "order_id, user_id, coffee_name, coffee_price, coffee_qty, total_price, \
     status, ordered_at, updated_at, version, last_position, temperature, size";

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
        options: options_of(row)?,
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

/// What a projection did that the fold of the log must take into account:
/// the events operators parked (passed over) and, per order held back, the
/// version of its first held event (the model shows the order as it was
/// before it).
#[derive(Debug, Clone, Default)]
pub struct Accounted {
    pub parked: std::collections::HashSet<Uuid>,
    pub held_from: HashMap<Uuid, i64>,
}

/// The fold of the log: the rows a read model must hold, and the events this
/// build cannot read that the projection neither holds back nor was told to
/// pass over (each one a silent skip, which must never happen).
#[derive(Debug, Clone, Default)]
pub struct Folded {
    pub rows: Vec<OrderRow>,
    pub unaccounted: Vec<(Uuid, Uuid, String)>,
}

/// One stream's fold in progress.
struct StreamFold {
    id: Uuid,
    state: domain::OrderState,
    ordered_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: u64,
    last_position: i64,
    /// No later event of this stream applies (held back, or unreadable).
    stopped: bool,
}

impl StreamFold {
    fn finish(self, rows: &mut Vec<OrderRow>) {
        if let domain::OrderState::Placed(order) = self.state {
            rows.push(OrderRow {
                order_id: order.order_id.as_uuid(),
                user_id: order.user_id.to_string(),
                coffee_name: order.coffee_name.to_string(),
                coffee_price: to_i64(u64::from(order.coffee_price)),
                coffee_qty: i32::try_from(order.coffee_qty.get()).unwrap_or(i32::MAX),
                total_price: to_i64(order.total_price.0),
                options: order.options,
                status: order.status,
                ordered_at: self.ordered_at,
                updated_at: self.updated_at,
                // The envelope's version, as the projections record it (a
                // parked event leaves a gap the domain's count would not).
                version: i32::try_from(self.version).unwrap_or(i32::MAX),
                last_position: self.last_position,
            });
        }
    }
}

/// The order read model as the log says it must be: every stream folded from
/// its first event with the domain's own `evolve`, independently of the
/// projection's batch logic. Used to verify a model (tests, `verify`). With
/// `published_only`, events still waiting in the outbox, and those the relay
/// dead-lettered, are left out (what the Kafka side can have seen).
pub async fn fold_log(
    conn: &mut PgConnection,
    published_only: bool,
    accounted: &Accounted,
) -> Result<Folded> {
    use futures::TryStreamExt;

    let mut folded = Folded::default();
    let mut current: Option<StreamFold> = None;
    let filter = if published_only {
        "WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.position = events.position)
           AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters d WHERE d.position = events.position)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {} FROM events {filter} ORDER BY stream_id, version",
        crate::infra::rows::EVENT_COLUMNS
    );
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    while let Some(row) = stream.try_next().await? {
        let stored = crate::infra::rows::stored_event_row(&row)?;
        let position = stored.position.unwrap_or_default();
        if current.as_ref().map(|c| c.id) != Some(stored.stream_id) {
            if let Some(done) = current.take() {
                done.finish(&mut folded.rows);
            }
            current = Some(StreamFold {
                id: stored.stream_id,
                state: domain::OrderState::NotPlaced,
                ordered_at: stored.recorded_at,
                updated_at: stored.recorded_at,
                version: 0,
                last_position: position,
                stopped: false,
            });
        }
        let Some(fold) = current.as_mut() else {
            continue;
        };
        let version = i64::try_from(stored.version).unwrap_or(i64::MAX);
        if fold.stopped
            || accounted
                .held_from
                .get(&fold.id)
                .is_some_and(|from| version >= *from)
        {
            fold.stopped = true;
            continue;
        }
        match stored.decode() {
            Ok(e) => {
                fold.state = domain::evolve(std::mem::take(&mut fold.state), &e.event);
                fold.updated_at = e.recorded_at;
                fold.version = e.version;
                fold.last_position = position;
            }
            Err(_) if accounted.parked.contains(&stored.event_id) => {}
            Err(reason) => {
                folded
                    .unaccounted
                    .push((fold.id, stored.event_id, reason.to_string()));
                fold.stopped = true;
            }
        }
    }
    if let Some(done) = current.take() {
        done.finish(&mut folded.rows);
    }
    folded.rows.sort_by_key(|r| r.order_id);
    Ok(folded)
}
