//! The fold of the log as the order read model must show it (for
//! verification), accounting for what the projection holds back.

use std::collections::HashMap;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

use super::OrderRow;
use crate::order_row::to_i64;

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
pub(super) struct StreamFold {
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
            let first = order.lines.first();
            rows.push(OrderRow {
                order_id: order.order_id.as_uuid(),
                user_id: order.user_id.to_string(),
                store_id: order.store_id.to_string(),
                coffee_name: first.coffee_name.to_string(),
                coffee_price: to_i64(u64::from(first.coffee_price)),
                coffee_qty: i32::try_from(first.coffee_qty.get()).unwrap_or(i32::MAX),
                total_price: to_i64(order.total_price.0),
                options: first.options,
                lines: order.lines.as_slice().to_vec(),
                pickup_number: order.pickup_number.and_then(|n| i32::try_from(n).ok()),
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
    let mut stream = if published_only {
        infra::event_rows!(
            "FROM events
              WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.position = events.position)
                AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters d
                                 WHERE d.position = events.position)
              ORDER BY stream_id, version"
        )
        .fetch(&mut *conn)
    } else {
        infra::event_rows!("FROM events ORDER BY stream_id, version").fetch(&mut *conn)
    };
    while let Some(row) = stream.try_next().await? {
        let position = row.position;
        if current.as_ref().map(|c| c.id) != Some(row.stream_id) {
            if let Some(done) = current.take() {
                done.finish(&mut folded.rows);
            }
            current = Some(StreamFold {
                id: row.stream_id,
                state: domain::OrderState::NotPlaced,
                ordered_at: row.recorded_at,
                updated_at: row.recorded_at,
                version: 0,
                last_position: position,
                stopped: false,
            });
        }
        let Some(fold) = current.as_mut() else {
            continue;
        };
        let version = i64::from(row.version);
        if fold.stopped
            || accounted
                .held_from
                .get(&fold.id)
                .is_some_and(|from| version >= *from)
        {
            fold.stopped = true;
            continue;
        }
        match row.decode() {
            Ok(e) => {
                fold.state = domain::evolve(std::mem::take(&mut fold.state), &e.event);
                fold.updated_at = e.recorded_at;
                fold.version = e.version;
                fold.last_position = position;
            }
            Err(infra::Error::Unreadable(_)) if accounted.parked.contains(&row.event_id) => {}
            Err(infra::Error::Unreadable(u)) => {
                folded.unaccounted.push((fold.id, row.event_id, u.reason));
                fold.stopped = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(done) = current.take() {
        done.finish(&mut folded.rows);
    }
    folded.rows.sort_by_key(|r| r.order_id);
    Ok(folded)
}
