//! Proving a read model right: fold the event log from scratch with the
//! domain's own `evolve` and compare it, row by row, with the model.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::PgPool;
use uuid::Uuid;

use crate::delivery::{self, DeliveryRow};
use crate::error::Result;
use crate::orders::{self, OrderRow};

/// One way a read model differs from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The log has the order; the model does not.
    Missing { order_id: Uuid },
    /// The model has an order the log does not.
    Extra { order_id: Uuid },
    /// Both have it; these fields differ (field, model, log).
    Differs {
        order_id: Uuid,
        fields: Vec<(&'static str, String, String)>,
    },
    /// The log has an event this build cannot read, and the projection
    /// neither holds its order back nor was told to pass over it.
    Unaccounted {
        order_id: Uuid,
        event_id: Uuid,
        reason: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing { order_id } => write!(f, "{order_id}: missing from the model"),
            Difference::Extra { order_id } => write!(f, "{order_id}: in the model, not in the log"),
            Difference::Unaccounted {
                order_id,
                event_id,
                reason,
            } => write!(
                f,
                "{order_id}: event {event_id} cannot be read ({reason}) and the model neither holds the order back nor was told to pass over it"
            ),
            Difference::Differs { order_id, fields } => {
                write!(f, "{order_id}:")?;
                for (field, model, log) in fields {
                    write!(f, " {field} is {model} in the model, {log} in the log;")?;
                }
                Ok(())
            }
        }
    }
}

/// Compares two sets of rows keyed by order id, with `fields` listing each
/// row's comparable fields.
fn compare<R>(
    model: &[R],
    log: &[R],
    id: impl Fn(&R) -> Uuid,
    fields: impl Fn(&R) -> Vec<(&'static str, String)>,
) -> Vec<Difference> {
    let model: BTreeMap<Uuid, &R> = model.iter().map(|r| (id(r), r)).collect();
    let log: BTreeMap<Uuid, &R> = log.iter().map(|r| (id(r), r)).collect();
    let mut out = Vec::new();
    for (order_id, expected) in &log {
        match model.get(order_id) {
            None => out.push(Difference::Missing {
                order_id: *order_id,
            }),
            Some(actual) => {
                let differing: Vec<_> = fields(actual)
                    .into_iter()
                    .zip(fields(expected))
                    .filter(|((_, a), (_, e))| a != e)
                    .map(|((name, a), (_, e))| (name, a, e))
                    .collect();
                if !differing.is_empty() {
                    out.push(Difference::Differs {
                        order_id: *order_id,
                        fields: differing,
                    });
                }
            }
        }
    }
    for order_id in model.keys().filter(|k| !log.contains_key(k)) {
        out.push(Difference::Extra {
            order_id: *order_id,
        });
    }
    out
}

/// The order's fields: what the delivery side shows of it and its prices.
fn order_fields(r: &OrderRow) -> Vec<(&'static str, String)> {
    let mut fields = delivery_fields(&DeliveryRow::from(r));
    fields.extend([
        ("coffee_price", r.coffee_price.to_string()),
        ("total_price", r.total_price.to_string()),
    ]);
    fields
}

fn delivery_fields(r: &DeliveryRow) -> Vec<(&'static str, String)> {
    vec![
        ("user_id", r.user_id.clone()),
        ("coffee_name", r.coffee_name.clone()),
        ("coffee_qty", r.coffee_qty.to_string()),
        ("temperature", r.options.temperature.to_string()),
        ("size", r.options.size.to_string()),
        ("pickup_number", format!("{:?}", r.pickup_number)),
        ("status", r.status.code().to_owned()),
        ("ordered_at", r.ordered_at.to_string()),
        ("updated_at", r.updated_at.to_string()),
        ("version", r.version.to_string()),
    ]
}

fn unaccounted(folded: &orders::Folded) -> impl Iterator<Item = Difference> + '_ {
    folded
        .unaccounted
        .iter()
        .map(|(order_id, event_id, reason)| Difference::Unaccounted {
            order_id: *order_id,
            event_id: *event_id,
            reason: reason.clone(),
        })
}

/// The order read model against the fold of the whole log. Run it when the
/// projection has caught up (`orders projections status`): events it has not
/// applied yet show as differences.
///
/// Orders the projection holds back are compared as they were before their
/// first held event; events operators parked are passed over, as the
/// projection did.
pub async fn orders(pool: &PgPool) -> Result<Vec<Difference>> {
    let model = orders::all_rows(pool, None).await?;
    let mut conn = pool.acquire().await?;
    let accounted = crate::held::accounted(&mut conn, orders::NAME).await?;
    let folded = orders::fold_log(&mut conn, false, &accounted).await?;
    let mut out = compare(&model, &folded.rows, |r| r.order_id, order_fields);
    out.extend(unaccounted(&folded));
    Ok(out)
}

/// The delivery read model against the events that reached Kafka: the fold
/// of the log without the events still waiting in the outbox (the relay
/// deletes a row only once the broker has it).
pub async fn delivery(pool: &PgPool) -> Result<Vec<Difference>> {
    let model = delivery::all_rows(pool).await?;
    let mut conn = pool.acquire().await?;
    let accounted = crate::held::accounted(&mut conn, delivery::NAME).await?;
    let sent = orders::fold_log(&mut conn, true, &accounted).await?;
    let log = delivery::expected_from_orders(&sent.rows);
    let mut out = compare(&model, &log, |r| r.order_id, delivery_fields);
    out.extend(unaccounted(&sent));
    // An accepted incomplete model lacks the orders whose records retention
    // deleted from the topic before it was built.
    let generation = crate::checkpoint::active_generation(&mut conn, delivery::NAME).await?;
    if crate::held::incomplete(&mut conn, delivery::NAME, generation).await? {
        out.retain(|d| !matches!(d, Difference::Missing { .. }));
    }
    Ok(out)
}
