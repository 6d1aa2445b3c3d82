//! Read models built from the event log, and what keeps them right.
//!
//! - [`log`]: the gap-safe reader: hands out events in an order no late
//!   commit can slip under (transaction-id visibility).
//! - [`runner`]: applies batches and commits each with its checkpoint
//!   (exactly-once effect); one worker per projection at a time.
//! - [`registry`]: every projection this build knows, in one list.
//! - [`checkpoint`]: each projection's generations and their checkpoints
//!   (compare-and-set).
//! - [`orders`]: the order read model behind the list endpoint.
//! - [`delivery`]: the delivery-status read model, fed from the Kafka topic.
//! - [`operate`]: status, replay and rebuild-with-atomic-switch.
//! - [`verify`]: each read model against the fold of the log.
//! - [`consistency`]: read-your-writes waits.
//! - [`held`]: orders held back behind events a projection cannot apply,
//!   their release and operators' parking decisions.
//! - [`clock`]: the log's clock (transaction ids after a restore).

#![deny(unsafe_code)]

pub mod checkpoint;
pub mod clock;
pub mod consistency;
pub mod delivery;
mod error;
mod generations;
pub mod held;
pub mod log;
pub mod operate;
mod order_row;
pub mod orders;
mod projection;
pub mod registry;
pub mod runner;
pub mod verify;

pub use error::{ProjectionError, Result};
pub use log::{Cursor, LogEvent, ReadMode};
pub use orders::{OrderRow, OrdersReadModel};
pub use projection::Projection;
pub use registry::{install_all, Registered};
