//! Errors of the projection machinery.

pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A stored event this code cannot read: a bug or a foreign writer. The
    /// projection stops at it rather than skip it.
    #[error("the event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    #[error("no projection is named {0:?} (see `orders projections list`)")]
    Unknown(String),
    /// Another process holds this projection's worker or rebuild lock.
    #[error("another process is {what} projection {name:?}")]
    Busy { name: String, what: &'static str },
    /// The checkpoint moved under us (an operator's replay, a second runner):
    /// the batch was rolled back and will be read again.
    #[error("the checkpoint of {name:?} moved while a batch was applied")]
    CheckpointMoved { name: String },
    #[error("no committed event is at log position {0}")]
    NoSuchPosition(i64),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}
