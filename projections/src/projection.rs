//! What a projection is: a name, tables of its own (in numbered generations,
//! so a rebuild can fill a new one beside the live one), and a way to apply
//! events to them.

use std::future::Future;

use domain::EventEnvelope;
use sqlx::PgConnection;

use crate::error::Result;

/// A read model built from the event log.
///
/// Every method runs inside a transaction the caller owns: the runner commits
/// `apply`'s changes together with the checkpoint, and a rebuild's switch
/// commits `publish` together with the registry's new active generation.
pub trait Projection: Send + Sync {
    /// The stable name: the registry key and the CLI's argument.
    fn name(&self) -> &'static str;

    /// One line for `orders projections list`.
    fn description(&self) -> &'static str;

    /// Where a live batch announces the orders whose rows it changed
    /// (in the batch's transaction), for the pages' live streams; `None`:
    /// nobody listens.
    fn changes_channel(&self) -> Option<infra::notify::Channel> {
        None
    }

    /// Whether it reads the event log (and so has a log checkpoint); a
    /// projection fed from Kafka keeps offsets of its own instead.
    fn reads_log(&self) -> bool {
        true
    }

    /// Creates the (empty) tables of `generation`, with what
    /// [`Projection::load`] needs and no more; [`Projection::finish_generation`]
    /// adds what `apply` and readers need. Idempotent.
    fn create_generation(
        &self,
        conn: &mut PgConnection,
        generation: i32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Brings the tables of `generation`, created by an older build, to this
    /// build's shape (new columns whose defaults are true for every row the
    /// older build wrote). Returns whether it changed anything; then the
    /// readers' view is published again. Idempotent.
    fn upgrade_generation(
        &self,
        conn: &mut PgConnection,
        generation: i32,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Adds what `apply` and readers need on top (keys, secondary indexes)
    /// before anything but `load` writes to `generation`: a rebuild calls it
    /// after its catch-up, the first generation right after creating it.
    /// Building an index once over the filled table is cheaper than keeping
    /// it up to date row by row. Idempotent.
    fn finish_generation(
        &self,
        conn: &mut PgConnection,
        generation: i32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Points the names readers use (views) at `generation`.
    fn publish(
        &self,
        conn: &mut PgConnection,
        generation: i32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the tables of a generation no reader uses any more.
    fn drop_generation(
        &self,
        conn: &mut PgConnection,
        generation: i32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Applies a batch of events, in reading order, to `generation`. Must be
    /// idempotent per event: applying an event the tables already reflect
    /// changes nothing (replays and rebuild catch-ups rely on it). A move of
    /// an order the tables have no row for is corruption: the projection
    /// writes none of the batch's moves and answers
    /// [`crate::ProjectionError::MissingRows`] (the runner holds those
    /// orders back and applies the rest again).
    fn apply(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Applies whole streams to a generation that holds nothing of them yet:
    /// a rebuild's catch-up, which reads each order's events once, all
    /// together, into tables just created (and not yet finished). The tables
    /// cannot already reflect any of these events, so a projection may write
    /// without looking for rows to update. The rest of [`Projection::apply`]'s
    /// contract holds: a move of an order with no placement among `events` is
    /// [`crate::ProjectionError::MissingRows`], answered before anything is
    /// written. By default, `apply`.
    fn load(
        &self,
        conn: &mut PgConnection,
        generation: i32,
        events: &[EventEnvelope],
    ) -> impl Future<Output = Result<()>> + Send {
        self.apply(conn, generation, events)
    }
}
