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
#[serde(try_from = "RawEnvelope", into = "RawEnvelope")]
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

/// The wire form, with the event split into type, schema version and payload.
#[derive(Serialize, Deserialize)]
struct RawEnvelope {
    event_id: Uuid,
    stream_id: OrderId,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<i64>,
    event_type: String,
    schema_version: u16,
    payload: Value,
    #[serde(default)]
    metadata: Metadata,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
}

impl TryFrom<RawEnvelope> for EventEnvelope {
    type Error = DecodeError;
    fn try_from(raw: RawEnvelope) -> Result<Self, DecodeError> {
        Ok(EventEnvelope {
            event: Event::decode(&raw.event_type, raw.schema_version, raw.payload)?,
            event_id: raw.event_id,
            stream_id: raw.stream_id,
            version: raw.version,
            position: raw.position,
            metadata: raw.metadata,
            recorded_at: raw.recorded_at,
        })
    }
}

impl From<EventEnvelope> for RawEnvelope {
    fn from(e: EventEnvelope) -> Self {
        RawEnvelope {
            event_type: e.event.event_type().to_owned(),
            schema_version: e.event.schema_version(),
            payload: e.event.payload(),
            event_id: e.event_id,
            stream_id: e.stream_id,
            version: e.version,
            position: e.position,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}
