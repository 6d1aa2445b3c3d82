//! Reading one row of the `events` table back: as it is stored
//! ([`EventRow::stored`], which never needs to understand the payload) or
//! decoded with this build's knowledge ([`EventRow::decode`]).
//!
//! Every reader of the log selects into [`EventRow`] with a checked query
//! (`sqlx::query_as!`), so the columns and their types are proven against
//! the schema at compile time; the [`event_rows!`](crate::event_rows) macro
//! writes the select list once.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use domain::{DecodeError, Event, EventEnvelope, Metadata, OrderId, StoredEvent};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A place in the log in reading order: the writing transaction's id, then
/// the position. `Cursor::START` is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    /// The `xid8` of the writing transaction (fits in `i64` for any real
    /// cluster: 2^63 transactions).
    pub transaction_id: i64,
    pub position: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor {
        transaction_id: 0,
        position: 0,
    };
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.transaction_id, self.position).cmp(&(other.transaction_id, other.position))
    }
}

/// Where an event was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The event log, at this global position.
    Log { position: i64 },
    /// A Kafka record.
    Record {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Log { position } => write!(f, "log position {position}"),
            Source::Record {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}/{offset}"),
        }
    }
}

/// An event this build cannot read, as a status or an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEvent {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub source: Source,
    pub event_type: String,
    pub schema_version: u16,
    pub reason: String,
}

impl fmt::Display for UnreadableEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} of order {} ({} v{}, {}) cannot be read by this build: {}",
            self.event_id,
            self.order_id,
            self.event_type,
            self.schema_version,
            self.source,
            self.reason
        )
    }
}

/// One `events` row, as [`event_rows!`](crate::event_rows) selects it.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// The writing transaction's id (`xid8` as a number): with `position`,
    /// the log's reading order (see `log.rs`).
    pub transaction_id: i64,
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i16,
    /// The payload's JSON text, as the log stores it: decoded straight
    /// into its event ([`EventRow::decode`]), never through a
    /// `serde_json::Value` on the way.
    pub payload: String,
    /// The metadata's JSON text.
    pub metadata: String,
    pub recorded_at: OffsetDateTime,
}

/// A checked query of `events` rows into [`EventRow`]: the select list is
/// written here once, the rest of the statement (`FROM events …`, with the
/// table unaliased so the list's `events.` names fit) by the caller, with its
/// arguments.
///
/// ```ignore
/// event_rows!("FROM outbox JOIN events USING (position) LIMIT $1", limit)
/// ```
#[macro_export]
macro_rules! event_rows {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::rows::EventRow,
            "SELECT events.transaction_id::text::bigint AS \"transaction_id!\",
                    events.position, events.stream_id, events.version, events.event_id,
                    events.event_type, events.schema_version,
                    events.payload::text AS \"payload!\", events.metadata::text AS \"metadata!\",
                    events.recorded_at "
                + $rest
            $(, $arg)*
        )
    };
}

impl EventRow {
    /// The event as stored, its payload not yet understood (parsed into a
    /// value, to be kept or held as it is).
    pub fn stored(self) -> Result<StoredEvent> {
        let position = self.position;
        let corrupt = |what: String| Error::Corrupt { position, what };
        let (version, schema_version) = self.versions()?;
        Ok(StoredEvent {
            event_id: self.event_id,
            stream_id: self.stream_id,
            version,
            position: Some(position),
            event_type: self.event_type,
            schema_version,
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| corrupt(format!("payload: {e}")))?,
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|e| corrupt(format!("metadata: {e}")))?,
            recorded_at: self.recorded_at,
        })
    }

    /// The event decoded with this build's knowledge, straight from the
    /// stored text. A row this build cannot read is [`Error::Unreadable`],
    /// never skipped.
    pub fn decode(&self) -> Result<EventEnvelope> {
        let (version, schema_version) = self.versions()?;
        let unreadable = |reason: String| {
            Error::Unreadable(Box::new(UnreadableEvent {
                order_id: self.stream_id,
                event_id: self.event_id,
                source: Source::Log {
                    position: self.position,
                },
                event_type: self.event_type.clone(),
                schema_version,
                reason,
            }))
        };
        let envelope = |what: String| unreadable(DecodeError::Envelope(what).to_string());
        let stream_id = OrderId::try_from(self.stream_id)
            .map_err(|e| envelope(format!("stream id {}: {e}", self.stream_id)))?;
        let metadata = match self.metadata.as_str() {
            "null" => Metadata::default(),
            text => serde_json::from_str(text).map_err(|e| envelope(format!("metadata: {e}")))?,
        };
        let event = Event::decode_json(&self.event_type, schema_version, &self.payload)
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(EventEnvelope {
            event_id: self.event_id,
            stream_id,
            version,
            position: Some(self.position),
            event,
            metadata,
            recorded_at: self.recorded_at,
        })
    }

    /// The stream version and the schema version, checked.
    fn versions(&self) -> Result<(u64, u16)> {
        let corrupt = |what: &str| Error::Corrupt {
            position: self.position,
            what: what.to_owned(),
        };
        Ok((
            u64::try_from(self.version).map_err(|_| corrupt("negative version"))?,
            u16::try_from(self.schema_version).map_err(|_| corrupt("negative schema version"))?,
        ))
    }
}
