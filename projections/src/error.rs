//! Errors of the projection machinery.

pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A stored event this code cannot read: a bug or a foreign writer. The
    /// projection stops at it rather than skip it.
    #[error("the event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    /// An event this build cannot read (an unknown type, a newer schema
    /// version, a malformed payload). Projections hold its order back; the
    /// write side refuses to decide on a partial fold.
    #[error("{0}")]
    Unreadable(Box<infra::rows::UnreadableEvent>),
    /// Moves for orders the read model has no row for: corruption, never a
    /// silent no-op. The runner holds those orders back.
    #[error("the read model has no row for order(s) {}", .order_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    MissingRows { order_ids: Vec<uuid::Uuid> },
    /// Events at versions of orders that the read model applied with other
    /// event ids (a log restored to an earlier point in time wrote them
    /// anew). The runner holds those orders back.
    #[error("different events at versions already applied for order(s) {}", .order_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    DifferentEvents { order_ids: Vec<uuid::Uuid> },
    /// An operator's request that this projection does not take.
    #[error("{why}")]
    NotFor {
        name: &'static str,
        why: &'static str,
    },
    #[error("no projection is named {0:?} (see `orders projections list`)")]
    Unknown(String),
    /// Another process holds this projection's worker or rebuild lock.
    #[error("another process is {what} projection {name:?}")]
    Busy { name: String, what: &'static str },
    /// The checkpoint moved under us (an operator's replay, a second runner):
    /// the batch was rolled back and will be read again.
    #[error("the checkpoint of {name:?} moved while a batch was applied")]
    CheckpointMoved { name: String },
    #[error("{name:?} holds back no {which} (see `orders projections held {name}`)")]
    NotHeld { name: String, which: String },
    /// This worker stepped down so that a standby that can read the events
    /// it holds back takes over.
    #[error("handed {name:?} over to {to}, which can read the events held back")]
    HandedOver { name: String, to: String },
    /// The log holds transaction ids at or above the cluster's next one: a
    /// database restored into another cluster. New events would sort before
    /// old ones, and readers would never see them.
    #[error("the log's transaction ids (up to {stored}) are ahead of this cluster's clock (next {next}): was the database restored into another cluster? Stop every `orders` process and run `orders log-clock advance --reason \"…\"` (docs/runbook.md, \"A restored database\")")]
    ClockBehind { stored: i64, next: i64 },
    /// A Kafka partition no longer holds what was applied from it.
    #[error("partition {partition}: {reason}")]
    PartitionLost { partition: i32, reason: String },
    /// A rebuild from a topic whose partitions no longer start at 0.
    #[error("the topic no longer holds every record ({}): a rebuild from it would be incomplete; rerun with --accept-incomplete to build it anyway (it is then recorded as incomplete)", .gone.iter().map(|(p, n)| format!("partition {p}: {n} records gone")).collect::<Vec<_>>().join(", "))]
    IncompleteTopic { gone: Vec<(i32, i64)> },
    /// This leader lost its lease to another process (it was frozen or cut
    /// off longer than the lease lives): its write was refused and it steps
    /// down.
    #[error("lost the lease {lease:?} to another process: stepped down")]
    Fenced { lease: String },
    #[error("no committed event is at log position {0}")]
    NoSuchPosition(i64),
    #[error("Kafka: {0}")]
    Kafka(String),
    /// A fetch of up to `bytes` got no answer within the request deadline
    /// (the broker may be slow rather than gone: its cost can grow with the
    /// answer's size).
    #[error(
        "partition {partition}: a fetch of up to {bytes} bytes was not answered in time: {detail}"
    )]
    FetchTimedOut {
        partition: i32,
        bytes: i32,
        detail: String,
    },
    /// Transparent: sqlx's own sentence says what failed (a bare
    /// "database error" in a retry loop's log said nothing).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<infra::Error> for ProjectionError {
    fn from(e: infra::Error) -> Self {
        match e {
            infra::Error::Corrupt { position, what } => ProjectionError::Corrupt { position, what },
            infra::Error::Unreadable(u) => ProjectionError::Unreadable(u),
            infra::Error::Fenced { lease } => ProjectionError::Fenced { lease },
            infra::Error::Database(e) => ProjectionError::Database(e),
        }
    }
}
