//! The order aggregate: its state, the commands it accepts, and the two pure
//! functions that define it. `decide` turns a command into events (or a
//! rejection); `evolve` applies an event to the state. Replaying a stream's
//! events through `evolve` rebuilds the state exactly.

use crate::error::DomainError;
use crate::event::{CancelledBy, Event, OrderCancelled, OrderPlaced};
use crate::line::OrderLines;
use crate::status::Status;
use crate::values::{OrderId, StoreId, UserId, Won};

/// What a customer or staff member asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A customer places a new order.
    Place(PlaceOrder),
    /// Staff move the order on to `to` (including `cancelled`).
    MoveTo { to: Status },
    /// The customer cancels their own order.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub store_id: StoreId,
    /// The drinks ordered.
    pub lines: OrderLines,
    /// Drawn by the service before deciding (`None`: none was drawn).
    pub pickup_number: Option<u32>,
}

/// The state of one order stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OrderState {
    /// No event yet: the stream is empty.
    #[default]
    NotPlaced,
    Placed(Order),
}

/// A placed order, as far as the rules need to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub store_id: StoreId,
    pub lines: OrderLines,
    pub total_price: Won,
    pub pickup_number: Option<u32>,
    pub status: Status,
    /// How many events the stream holds; the version of the last one applied.
    pub version: u64,
}

impl OrderState {
    /// The stream version this state reflects (0 for an empty stream).
    pub fn version(&self) -> u64 {
        match self {
            OrderState::NotPlaced => 0,
            OrderState::Placed(order) => order.version,
        }
    }

    pub fn order(&self) -> Option<&Order> {
        match self {
            OrderState::NotPlaced => None,
            OrderState::Placed(order) => Some(order),
        }
    }
}

/// Decides what happens when `command` meets `state`.
pub fn decide(state: &OrderState, command: Command) -> Result<Vec<Event>, DomainError> {
    match (state, command) {
        (OrderState::NotPlaced, Command::Place(place)) => {
            Ok(vec![Event::OrderPlaced(OrderPlaced::of(
                place.order_id,
                place.user_id,
                place.store_id,
                place.lines,
                place.pickup_number,
            ))])
        }
        (OrderState::Placed(_), Command::Place(_)) => Err(DomainError::AlreadyPlaced),
        (OrderState::NotPlaced, Command::MoveTo { .. } | Command::Cancel) => {
            Err(DomainError::NotPlaced)
        }
        (OrderState::Placed(order), Command::MoveTo { to }) => {
            transition(order.status, to, CancelledBy::Staff).map(|event| vec![event])
        }
        (OrderState::Placed(order), Command::Cancel) => {
            transition(order.status, Status::Cancelled, CancelledBy::Customer)
                .map(|event| vec![event])
        }
    }
}

fn transition(from: Status, to: Status, by: CancelledBy) -> Result<Event, DomainError> {
    if !from.can_move_to(to) {
        return Err(DomainError::InvalidTransition { from, to });
    }
    Ok(match to {
        Status::Preparing => Event::OrderPreparationStarted,
        Status::Delivering => Event::OrderOutForDelivery,
        Status::Delivered => Event::OrderDelivered,
        Status::Cancelled => Event::OrderCancelled(OrderCancelled { by }),
        // `can_move_to` never allows a move back to `received`.
        Status::Received => return Err(DomainError::InvalidTransition { from, to }),
    })
}

/// Applies one event. Total: an event that cannot apply (which `decide` never
/// emits) leaves the state as it was.
pub fn evolve(state: OrderState, event: &Event) -> OrderState {
    match (state, event) {
        (OrderState::NotPlaced, Event::OrderPlaced(p)) => OrderState::Placed(Order {
            order_id: p.order_id,
            user_id: p.user_id.clone(),
            store_id: p.store_id.clone(),
            lines: p.lines.clone(),
            total_price: p.total_price,
            pickup_number: p.pickup_number,
            status: Status::Received,
            version: 1,
        }),
        (OrderState::Placed(mut order), event) if !matches!(event, Event::OrderPlaced(_)) => {
            order.status = event.status_after();
            order.version += 1;
            OrderState::Placed(order)
        }
        (state, _) => state,
    }
}

/// Folds a stream's events, oldest first, into its state.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> OrderState {
    events.into_iter().fold(OrderState::NotPlaced, evolve)
}
