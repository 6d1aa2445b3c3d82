//! Events: what happened to an order, in the past tense. Each has a stable
//! type name and a schema version; a released event is never edited. A change
//! of shape gets a new schema version and a step in the upcaster chain
//! (`upcast.rs`), which [`Event::decode`] runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::line::OrderLines;
use crate::status::Status;
use crate::upcast;
use crate::values::{OrderId, StoreId, UserId, Won};

/// Everything that can happen to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A customer placed the order; it is now `received`.
    OrderPlaced(OrderPlaced),
    /// Staff started making it; it is now `preparing`.
    OrderPreparationStarted,
    /// Staff sent it out; it is now `delivering`.
    OrderOutForDelivery,
    /// It reached the customer; it is now `delivered` (final).
    OrderDelivered,
    /// The customer or staff cancelled it; it is now `cancelled` (final).
    OrderCancelled(OrderCancelled),
}

/// The payload of [`Event::OrderPlaced`]. Carries everything downstream
/// consumers (the delivery side sees only the topic) need about the order.
/// Schema version 4; older versions upcast to it (`upcast.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub user_id: UserId,
    /// Since schema version 4; orders placed before it are the default
    /// store's.
    pub store_id: StoreId,
    /// Since schema version 4; before it an order was one drink, in flat
    /// fields (`coffee_name`, `coffee_price`, `coffee_qty`, `options`).
    pub lines: OrderLines,
    /// The sum of the lines' prices.
    pub total_price: Won,
    /// The short number staff call out, per store per day. Since schema
    /// version 3; orders placed before it have none (`None`).
    pub pickup_number: Option<u32>,
}

impl OrderPlaced {
    /// The placement of `lines` at `store_id` (its total is their sum).
    pub fn of(
        order_id: OrderId,
        user_id: UserId,
        store_id: StoreId,
        lines: OrderLines,
        pickup_number: Option<u32>,
    ) -> Self {
        OrderPlaced {
            order_id,
            user_id,
            store_id,
            total_price: lines.total(),
            lines,
            pickup_number,
        }
    }
}

/// The payload of [`Event::OrderCancelled`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub by: CancelledBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    Customer,
    Staff,
}

/// Payload of the events that carry no data of their own.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl Event {
    pub const PLACED: &'static str = "OrderPlaced";
    pub const PREPARATION_STARTED: &'static str = "OrderPreparationStarted";
    pub const OUT_FOR_DELIVERY: &'static str = "OrderOutForDelivery";
    pub const DELIVERED: &'static str = "OrderDelivered";
    pub const CANCELLED: &'static str = "OrderCancelled";
    /// Every event type this build knows.
    pub const TYPES: [&'static str; 5] = [
        Self::PLACED,
        Self::PREPARATION_STARTED,
        Self::OUT_FOR_DELIVERY,
        Self::DELIVERED,
        Self::CANCELLED,
    ];

    /// The stable name stored with the event and sent as a Kafka header.
    pub const fn event_type(&self) -> &'static str {
        match self {
            Event::OrderPlaced(_) => Self::PLACED,
            Event::OrderPreparationStarted => Self::PREPARATION_STARTED,
            Event::OrderOutForDelivery => Self::OUT_FOR_DELIVERY,
            Event::OrderDelivered => Self::DELIVERED,
            Event::OrderCancelled(_) => Self::CANCELLED,
        }
    }

    /// The version of this event's payload shape that [`Event::payload`]
    /// writes: the newest the upcaster chain reaches.
    pub fn schema_version(&self) -> u16 {
        upcast::current_version(self.event_type()).unwrap_or(1)
    }

    /// The status an order is in right after this event.
    pub const fn status_after(&self) -> Status {
        match self {
            Event::OrderPlaced(_) => Status::Received,
            Event::OrderPreparationStarted => Status::Preparing,
            Event::OrderOutForDelivery => Status::Delivering,
            Event::OrderDelivered => Status::Delivered,
            Event::OrderCancelled(_) => Status::Cancelled,
        }
    }

    /// The JSON payload, in the current schema version.
    pub fn payload(&self) -> Value {
        let result = match self {
            Event::OrderPlaced(p) => serde_json::to_value(p),
            Event::OrderCancelled(c) => serde_json::to_value(c),
            Event::OrderPreparationStarted | Event::OrderOutForDelivery | Event::OrderDelivered => {
                serde_json::to_value(Empty {})
            }
        };
        // Serialising plain structs of strings and integers to a Value cannot fail.
        result.unwrap_or(Value::Null)
    }

    /// Reads a stored event of any schema version this code knows, upcasting
    /// older versions to the current shape. An unknown type or a version newer
    /// than this build's is an error, never a guess. The payload is taken: an
    /// older one is upcast in place, not copied.
    pub fn decode(
        event_type: &str,
        schema_version: u16,
        payload: Value,
    ) -> Result<Event, DecodeError> {
        let payload = if upcast::current_version(event_type) == Some(schema_version) {
            payload
        } else {
            upcast::upcast(event_type, schema_version, payload)?
        };
        Event::typed(event_type, schema_version, &payload)
    }

    /// [`Event::decode`] for a caller that keeps the payload (an event it
    /// cannot read is kept as stored): a payload already in the current
    /// version is read in place; only an older one is copied, to be upcast.
    pub fn decode_ref(
        event_type: &str,
        schema_version: u16,
        payload: &Value,
    ) -> Result<Event, DecodeError> {
        if upcast::current_version(event_type) == Some(schema_version) {
            Event::typed(event_type, schema_version, payload)
        } else {
            Event::decode(event_type, schema_version, payload.clone())
        }
    }

    /// [`Event::decode`] from the payload's JSON text, as the log stores it:
    /// a payload in the current version is read straight into its type,
    /// with no `serde_json::Value` in between (the hot path of the
    /// projections and of a rebuild). An older one is parsed once into a
    /// value of its own and upcast in place.
    pub fn decode_json(
        event_type: &str,
        schema_version: u16,
        payload: &str,
    ) -> Result<Event, DecodeError> {
        let bad_payload = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        };
        if upcast::current_version(event_type) != Some(schema_version) {
            let value: Value = serde_json::from_str(payload).map_err(bad_payload)?;
            return Event::decode(event_type, schema_version, value);
        }
        let mut json = serde_json::Deserializer::from_str(payload);
        let event = Event::typed(event_type, schema_version, &mut json)?;
        // Nothing may follow the payload's one value.
        json.end().map_err(bad_payload)?;
        Ok(event)
    }

    /// `event_type`'s event read from any JSON source (a value, or text
    /// straight from the log), in the current schema version.
    fn typed<'de, D>(
        event_type: &str,
        schema_version: u16,
        payload: D,
    ) -> Result<Event, DecodeError>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        let empty = |payload: D, event: Event| Empty::deserialize(payload).map(|_| event);
        let read = match event_type {
            Self::PLACED => OrderPlaced::deserialize(payload).map(Event::OrderPlaced),
            Self::PREPARATION_STARTED => empty(payload, Event::OrderPreparationStarted),
            Self::OUT_FOR_DELIVERY => empty(payload, Event::OrderOutForDelivery),
            Self::DELIVERED => empty(payload, Event::OrderDelivered),
            Self::CANCELLED => OrderCancelled::deserialize(payload).map(Event::OrderCancelled),
            _ => {
                return Err(DecodeError::UnknownType {
                    event_type: event_type.to_owned(),
                    schema_version,
                })
            }
        };
        read.map_err(|source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        })
    }
}
