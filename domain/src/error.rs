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
}

/// A stored event that this version of the code cannot read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?} (schema version {schema_version})")]
    UnknownType {
        event_type: String,
        schema_version: u16,
    },
    #[error("malformed payload for {event_type} v{schema_version}: {source}")]
    Payload {
        event_type: String,
        schema_version: u16,
        #[source]
        source: serde_json::Error,
    },
}
