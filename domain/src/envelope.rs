//! The event envelope: an event together with where it sits in its stream and
//! the context it was recorded in. Its JSON form is what leaves the process
//! (the Kafka record value), so it is explicit and versioned: `event_type` and
//! `schema_version` travel beside the `payload`, never inferred from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::event::Event;
use crate::values::OrderId;

/// Why and by whom an event was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything one request caused, across services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event (or message) that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The HTTP request that recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who asked: `customer:<user id>` or `staff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredEvent", into = "StoredEvent")]
pub struct EventEnvelope {
    /// Globally unique (UUID v7), for de-duplication downstream.
    pub event_id: Uuid,
    /// The order this event belongs to.
    pub stream_id: OrderId,
    /// 1, 2, 3 … within the stream, without gaps.
    pub version: u64,
    /// Position in the global log; set once stored.
    pub position: Option<i64>,
    pub event: Event,
    pub metadata: Metadata,
    pub recorded_at: OffsetDateTime,
}

/// An event as it is stored and as it travels: the wire form, with the event
/// split into type, schema version and a payload that has not been read yet.
/// Everything that only moves events (the relay) or must keep one it cannot
/// read (a projection holding an order back) works with this form; only
/// [`StoredEvent::decode`] needs to understand the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: Uuid,
    /// The order's id as stored; [`StoredEvent::decode`] checks it.
    pub stream_id: Uuid,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Value,
    #[serde(default)]
    pub metadata: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

impl StoredEvent {
    /// Reads the event with this build's knowledge: upcasts older schema
    /// versions, refuses types and versions it does not know.
    /// Leaves `self` as it is, so a caller keeps the stored form of an event
    /// it cannot read.
    pub fn decode(&self) -> Result<EventEnvelope, DecodeError> {
        let raw = self;
        let stream_id = OrderId::try_from(raw.stream_id)
            .map_err(|e| DecodeError::Envelope(format!("stream id {}: {e}", raw.stream_id)))?;
        let metadata = match &raw.metadata {
            Value::Null => Metadata::default(),
            other => Metadata::deserialize(other)
                .map_err(|e| DecodeError::Envelope(format!("metadata: {e}")))?,
        };
        Ok(EventEnvelope {
            event: Event::decode_ref(&raw.event_type, raw.schema_version, &raw.payload)?,
            event_id: raw.event_id,
            stream_id,
            version: raw.version,
            position: raw.position,
            metadata,
            recorded_at: raw.recorded_at,
        })
    }
}

impl TryFrom<StoredEvent> for EventEnvelope {
    type Error = DecodeError;
    fn try_from(raw: StoredEvent) -> Result<Self, DecodeError> {
        raw.decode()
    }
}

impl From<EventEnvelope> for StoredEvent {
    fn from(e: EventEnvelope) -> Self {
        StoredEvent {
            event_type: e.event.event_type().to_owned(),
            schema_version: e.event.schema_version(),
            payload: e.event.payload(),
            event_id: e.event_id,
            stream_id: e.stream_id.as_uuid(),
            version: e.version,
            position: e.position,
            // Serialising a struct of strings and ids cannot fail.
            metadata: serde_json::to_value(&e.metadata).unwrap_or(Value::Null),
            recorded_at: e.recorded_at,
        }
    }
}
