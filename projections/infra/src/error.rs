//! Errors of the shared infrastructure. Each crate above wraps them in its
//! own error type (`ProjectionError`, `StoreError`) with the same meaning.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored event row this code cannot take apart at all (a negative
    /// version): a bug or a foreign writer.
    #[error("the event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    /// An event this build cannot read (an unknown type, a newer schema
    /// version, a malformed payload).
    #[error("{0}")]
    Unreadable(Box<crate::rows::UnreadableEvent>),
    /// This leader lost its lease to another process: its write was refused
    /// and it steps down.
    #[error("lost the lease {lease:?} to another process: stepped down")]
    Fenced { lease: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
