//! The crate's error types. Business rejections ([`DomainError`]) are kept apart
//! from malformed input ([`ValueError`]) and from undecodable stored events
//! ([`DecodeError`]): each is answered differently at the edges.

use crate::status::Status;

/// A command the order's lifecycle does not allow. Maps to HTTP 409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the order has already been placed")]
    AlreadyPlaced,
    #[error("the order has not been placed")]
    NotPlaced,
    #[error("an order that is {} ({}) cannot move to {} ({})", from.code(), from.label(), to.code(), to.label())]
    InvalidTransition { from: Status, to: Status },
}

/// Input that does not describe a valid value. Maps to HTTP 400/422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("may contain only letters, digits, '-', '_' and '.'")]
    InvalidCharacters,
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must be text")]
    NotText,
    #[error("must be a whole number, or a string of digits")]
    NotAWholeNumber,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: u64, max: u64 },
    #[error("is not a valid order id")]
    InvalidOrderId,
    #[error("is not a known status; valid statuses are {}", Status::valid_list())]
    UnknownStatus,
    #[error("is not a known value; valid values are {valid}")]
    UnknownOption { valid: String },
    #[error("must be an object")]
    NotAnObject,
    #[error("has a member {name:?} that is not known")]
    UnknownMember { name: String },
}

/// A stored event that this version of the code cannot read. The first two
/// are what a newer build writes during a rolling deploy: the event is fine,
/// this build is too old for it. The last is a payload that does not fit its
/// declared type and version: a bug or a foreign writer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?} (schema version {schema_version})")]
    UnknownType {
        event_type: String,
        schema_version: u16,
    },
    #[error("{event_type} schema version {schema_version} is newer than this build reads (up to {known})")]
    NewerSchema {
        event_type: String,
        schema_version: u16,
        known: u16,
    },
    /// The envelope around the payload is wrong (a stream id that is no
    /// order id, metadata that is not an object).
    #[error("malformed envelope: {0}")]
    Envelope(String),
    #[error("malformed payload for {event_type} v{schema_version}: {source}")]
    Payload {
        event_type: String,
        schema_version: u16,
        #[source]
        source: serde_json::Error,
    },
}
