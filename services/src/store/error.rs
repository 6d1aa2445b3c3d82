//! Errors of the event store. A lost optimistic-concurrency race is a typed
//! [`StoreError::Conflict`], recognised by the violated constraint's name,
//! never by the text of a message.

use domain::OrderId;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream since it was read.
    #[error("stream {stream} is no longer at version {expected}")]
    Conflict { stream: OrderId, expected: u64 },
    /// The idempotency key belongs to a request that committed first.
    #[error("the idempotency key was used by another request")]
    IdempotencyKeyTaken,
    /// A placement was checked against a menu that changed before its
    /// append: nothing was written (check it again, and place it again).
    #[error("the menu changed while the order was placed")]
    MenuChanged,
    #[error("stream {stream} would exceed the largest version")]
    VersionOverflow { stream: OrderId },
    /// A stored row this code cannot read: a bug or a foreign writer.
    #[error("the event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    /// The stream holds an event this build cannot read: nothing may be
    /// decided on the part of it that it can.
    #[error("{0}")]
    Unreadable(Box<infra::rows::UnreadableEvent>),
    #[error("event metadata of {size} bytes is over the {limit}-byte limit")]
    MetadataTooLarge { size: usize, limit: usize },
    #[error("cannot encode event metadata")]
    Encode(#[source] serde_json::Error),
    /// Transparent: sqlx's own sentence says what failed (a bare
    /// "database error" in a retry loop's log said nothing).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The write was sent and the connection failed before its answer
    /// came: it may have committed, or not. Only a retry with the same
    /// idempotency key can settle it.
    #[error("the write was sent and its answer lost: {cause}")]
    OutcomeUnknown { cause: String },
    /// Anything else the shared log reader said (none of its other errors
    /// arise on the write side's paths today; kept as they are, not
    /// disguised as corruption).
    #[error(transparent)]
    Projection(Box<projections::ProjectionError>),
}

impl From<projections::ProjectionError> for StoreError {
    fn from(e: projections::ProjectionError) -> Self {
        match e {
            projections::ProjectionError::Corrupt { position, what } => {
                StoreError::Corrupt { position, what }
            }
            projections::ProjectionError::Unreadable(event) => StoreError::Unreadable(event),
            projections::ProjectionError::Database(e) => StoreError::Database(e),
            other => StoreError::Projection(Box::new(other)),
        }
    }
}

impl From<infra::Error> for StoreError {
    fn from(e: infra::Error) -> Self {
        match e {
            infra::Error::Corrupt { position, what } => StoreError::Corrupt { position, what },
            infra::Error::Unreadable(event) => StoreError::Unreadable(event),
            infra::Error::Database(e) => StoreError::Database(e),
            other => StoreError::Projection(Box::new(other.into())),
        }
    }
}

/// Constraints whose violation means "someone else wrote this version first".
const CONCURRENCY_CONSTRAINTS: &[&str] = &["events_stream_version_key"];

/// The constraint whose violation means "a request with this idempotency key
/// committed first".
const IDEMPOTENCY_CONSTRAINT: &str = "idempotency_keys_pkey";

impl StoreError {
    /// Classifies an error from the event insert, sent on a connection
    /// already acquired (so any failure of the connection is after sending).
    pub(crate) fn from_append(error: sqlx::Error, stream: OrderId, expected: u64) -> StoreError {
        match violated_constraint(&error) {
            Some(name) if CONCURRENCY_CONSTRAINTS.contains(&name) => {
                StoreError::Conflict { stream, expected }
            }
            Some(IDEMPOTENCY_CONSTRAINT) => StoreError::IdempotencyKeyTaken,
            _ => StoreError::after_sending(error),
        }
    }

    /// An error of a write statement that was sent: its outcome is unknown
    /// when the connection failed before the answer, a plain database error
    /// otherwise.
    pub(crate) fn after_sending(error: sqlx::Error) -> StoreError {
        if infra::pg::may_have_committed(&error) {
            metrics::counter!("event_store_outcome_unknown_total").increment(1);
            StoreError::OutcomeUnknown {
                cause: error.to_string(),
            }
        } else {
            StoreError::Database(error)
        }
    }

    /// True when the database could not be reached or answered too slowly;
    /// callers answer 503 and retry later rather than report a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => infra::pg::is_unavailable(e),
            // Still changing after every attempt (an operator editing the
            // menu in a loop): nothing was written; try again shortly.
            StoreError::MenuChanged => true,
            _ => false,
        }
    }
}

/// The name of the unique/check/foreign-key constraint an error violated.
pub fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
