//! Operators' work on projections: status (position, head, lag), replay from
//! a position, and rebuild beside the live model with an atomic switch.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::checkpoint;
use crate::error::Result;
use crate::log;

mod log_rebuild;
mod replay;

pub use log_rebuild::rebuild;
pub use replay::{replay, ReplayReport};

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub name: String,
    pub generation: i32,
    /// The log position of the last event applied (0: none yet).
    pub position: i64,
    /// The highest position in the log.
    pub head: i64,
    /// Committed events not applied yet.
    pub lag_events: i64,
    /// How long ago the oldest event not applied yet was recorded.
    pub lag: Duration,
    pub events_applied: i64,
    pub updated_at: OffsetDateTime,
    /// For a projection fed from a Kafka topic: where it stands on the topic.
    pub topic: Option<TopicProgress>,
}

/// Where a Kafka-fed projection stands on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProgress {
    pub topic: String,
    /// The next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Each partition's end, when the brokers answered.
    pub ends: Option<BTreeMap<i32, i64>>,
    /// When the oldest record not consumed yet was recorded, if any.
    pub oldest_unconsumed: Option<OffsetDateTime>,
}

impl TopicProgress {
    /// Records on the topic past the offsets (`None`: the brokers did not
    /// answer).
    pub fn lag_records(&self) -> Option<i64> {
        let ends = self.ends.as_ref()?;
        Some(
            ends.iter()
                .map(|(p, end)| (end - self.offsets.get(p).copied().unwrap_or(0)).max(0))
                .sum(),
        )
    }
}

/// The status of every projection, in the log's terms. The delivery
/// projection's counts the records it has not consumed when `kafka` says
/// where its topic is and the brokers answer.
/// The status of a projection that follows the log: its active checkpoint
/// against the log's `head`.
pub(crate) async fn log_status(pool: &PgPool, name: &str, head: i64) -> Result<ProjectionStatus> {
    let mut conn = pool.acquire().await?;
    let c = checkpoint::load_active(&mut conn, name).await?;
    let (lag_events, oldest) = log::lag(&mut conn, c.cursor).await?;
    let lag = oldest.map_or(Duration::ZERO, |t| {
        Duration::try_from(OffsetDateTime::now_utc() - t).unwrap_or(Duration::ZERO)
    });
    Ok(ProjectionStatus {
        name: c.name,
        generation: c.generation,
        position: c.cursor.position,
        head,
        lag_events,
        lag,
        events_applied: c.events_applied,
        updated_at: c.updated_at,
        topic: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Events applied so far.
    pub done: u64,
    /// Events to apply in all, as estimated when the work started (grows if
    /// the log does).
    pub total: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Applying the log to the new generation while the live one serves.
    CatchingUp,
    /// Applying the last events and switching, under the registry lock.
    Switching,
    /// Re-applying the log from the replay position.
    Replaying,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub old_generation: i32,
    pub new_generation: i32,
    pub events: u64,
    pub elapsed: Duration,
}
