//! Holding orders back: what a projection does with an event it cannot apply.
//!
//! The log is the truth, so a projection never skips an event, and one event
//! never stops a projection (let alone the process). An event this build
//! cannot read (an unknown type, a schema version from a newer build, a
//! malformed payload), or one that would move a read-model row that does not
//! exist, *holds back its order*: that event and every later event of the
//! same order go to the `projection_held` table with their wire form, while
//! every other order goes on. Later:
//!
//! - a build that can read them [`release`]s them (applies them in version
//!   order and removes them from the list), by itself, at start and whenever
//!   the list is looked at again;
//! - an operator may [`park`] one instead: the decision is recorded (who, as
//!   which database role, why) and the projection passes over that event;
//!   the order's later events then apply.
//!
//! Held events are per generation (a rebuild sorts the log out afresh);
//! parking decisions are per projection and outlive rebuilds.

use domain::{EventEnvelope, StoredEvent};
use time::OffsetDateTime;
use uuid::Uuid;

mod handover;
mod hold;
mod list;
mod park;
mod release;

pub use handover::{handover_done, handover_requested, request_handover};
pub(crate) use hold::write_or_hold;
pub use hold::{apply_or_hold, held_count, incomplete, sort_out, Write};
pub use infra::rows::{Source, UnreadableEvent};
pub use list::{accounted, drop_generation, held_order, list, summary};
pub use park::{park, parked, parked_count, HeldRef, Parked};
pub use release::{release, Released};

/// An event this build could not read, as its wire form and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub stored: StoredEvent,
    pub reason: String,
}

/// One event as a projection receives it: read, or not readable by this build.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: Source,
    pub event: std::result::Result<EventEnvelope, Unreadable>,
}

impl Incoming {
    /// Decodes `stored` with this build's knowledge.
    pub fn decode(source: Source, stored: StoredEvent) -> Incoming {
        let event = match stored.decode() {
            Ok(envelope) => Ok(envelope),
            Err(e) => Err(Unreadable {
                stored,
                reason: e.to_string(),
            }),
        };
        Incoming { source, event }
    }

    fn stream_id(&self) -> Uuid {
        match &self.event {
            Ok(e) => e.stream_id.as_uuid(),
            Err(u) => u.stored.stream_id,
        }
    }
}

/// An event on a projection's held list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEvent {
    pub projection: String,
    pub stream_id: Uuid,
    pub event_id: Uuid,
    pub version: i64,
    pub source: String,
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
    pub held_at: OffsetDateTime,
}

/// How many orders a projection holds back, and the first event it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSummary {
    pub projection: String,
    pub orders: i64,
    pub events: i64,
    pub first: Option<HeldEvent>,
}
