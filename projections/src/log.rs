//! The gap-safe reader of the event log.
//!
//! # The problem
//!
//! Positions come from an identity column: they are handed out when a row is
//! inserted, not when its transaction commits. Two writers can take positions
//! 10 and 11, and 11 can commit first. A reader that keeps "the last position I
//! applied" and asks for `position > 10` after seeing 11 never sees 10: the
//! projection silently skips an event. This is the bug Marten, Emmett and
//! Eventuous users reported for years.
//!
//! # The choice: transaction-id visibility
//!
//! Every event row records the id of the transaction that wrote it
//! (`transaction_id xid8`, defaulting to `pg_current_xact_id()`). The reader
//! orders the log by `(transaction_id, position)` and only hands out events of
//! transactions older than `pg_snapshot_xmin(pg_current_snapshot())`, the
//! oldest transaction still running. Every transaction below that horizon has
//! either committed (and is visible) or rolled back; and any transaction that
//! commits later has, or will get, a transaction id at or above the horizon,
//! so it sorts *after* everything already handed out. Hence a checkpoint
//! `(transaction_id, position)` means "everything up to here, and nothing
//! after it will ever appear before it".
//!
//! Per stream the order is the version order: an append of version *n + 1*
//! gets its transaction id only after version *n* committed (the append checks
//! the stream's current version in the same statement that inserts).
//!
//! Why not the alternatives (see docs/adr/0004-gap-safe-log-reading.md for the
//! measurements): serialising position assignment (one lock per append) caps
//! the write side at one committing writer; a high-water mark with a timeout
//! ("assume a gap older than N ms is a rollback") is a guess, and wrong under a
//! long transaction. Transaction-id visibility costs the writers nothing but
//! one 8-byte column and an index entry, and is exact. Its price is latency: a
//! long-running writing transaction anywhere in the cluster (transaction ids
//! are cluster-wide, so other databases' count too) holds the reader back,
//! never makes it skip, until it ends.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};
use crate::held::{Incoming, Source, Unreadable};
use infra::rows::EventRow;

pub use infra::rows::Cursor;

/// How a reader decides which committed events it may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Only events of transactions below the snapshot's xmin, in
    /// `(transaction_id, position)` order. The only mode to use.
    #[default]
    GapSafe,
    /// `WHERE position > checkpoint ORDER BY position`: the naive reader that
    /// skips events committed out of position order. It exists so the tests
    /// can show that they catch exactly that bug; never run it for real.
    NaivePositionOnly,
}

/// An event as the reader hands it out: its cursor and the event, decoded
/// or, when this build cannot read it, as stored (the reader never fails on
/// an event's content: what to do with it is the projection's decision).
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub cursor: Cursor,
    pub incoming: Incoming,
}

impl LogEvent {
    fn of(row: EventRow) -> Result<LogEvent> {
        let cursor = Cursor {
            transaction_id: row.transaction_id,
            position: row.position,
        };
        // Decoded straight from the stored text; kept as stored only when
        // this build cannot read it.
        let event = match row.decode() {
            Ok(envelope) => Ok(envelope),
            Err(infra::Error::Unreadable(u)) => Err(Unreadable {
                reason: u.reason,
                stored: row.stored()?,
            }),
            Err(e) => return Err(e.into()),
        };
        Ok(LogEvent {
            cursor,
            incoming: Incoming {
                source: Source::Log {
                    position: cursor.position,
                },
                event,
            },
        })
    }
}

/// Reads up to `limit` events after `after`, in reading order. With
/// [`ReadMode::GapSafe`] an empty answer means "nothing more is safe to read
/// yet", not necessarily "nothing more is committed".
pub async fn read_after(
    conn: &mut PgConnection,
    after: Cursor,
    limit: i64,
    mode: ReadMode,
) -> Result<Vec<LogEvent>> {
    let (tx, position) = (after.transaction_id, after.position);
    let rows = match mode {
        ReadMode::GapSafe => {
            infra::event_rows!(
                "FROM events
                  WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)
                    AND transaction_id < log_horizon()
                  ORDER BY transaction_id, position
                  LIMIT $3",
                tx,
                position,
                limit
            )
            .fetch_all(conn)
            .await?
        }
        ReadMode::NaivePositionOnly => {
            infra::event_rows!(
                "FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                position,
                limit
            )
            .fetch_all(conn)
            .await?
        }
    };
    rows.into_iter().map(LogEvent::of).collect()
}

/// Reads the events after `after` up to and including `upto`, without the
/// visibility horizon: for a range another reader has already proven safe
/// (a rebuild catching up to the live generation's checkpoint).
pub async fn read_range(
    conn: &mut PgConnection,
    after: Cursor,
    upto: Cursor,
    limit: i64,
) -> Result<Vec<LogEvent>> {
    let rows = infra::event_rows!(
        "FROM events
          WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)
            AND (transaction_id, position) <= ($3::bigint::text::xid8, $4)
          ORDER BY transaction_id, position
          LIMIT $5",
        after.transaction_id,
        after.position,
        upto.transaction_id,
        upto.position,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(LogEvent::of).collect()
}

/// A place in the log in stream order: after the event of `stream_id` at
/// `version`. `StreamKey::START` is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamKey {
    pub stream_id: Uuid,
    pub version: i32,
}

impl StreamKey {
    pub const START: StreamKey = StreamKey {
        stream_id: Uuid::nil(),
        version: 0,
    };
}

/// Reads whole streams after `after` in stream order (each order's events
/// together, in version order), about `limit` events of them, of the events
/// at or below `upto` in reading order: a page that ends inside a stream
/// leaves that stream to the next read, and a stream longer than a page is
/// read whole, so the batches of a reader share no stream. Complete only
/// once every transaction at or below `upto` has ended ([`settled`]): the
/// filter leaves out what commits later, the horizon what could still commit
/// below it. Only streams up to `through` (inclusive) are read, so readers
/// of disjoint ranges ([`stream_splits`]) read side by side. Returns the
/// events and where the next read starts (`None`: the streams are all read).
pub async fn read_streams(
    conn: &mut PgConnection,
    after: StreamKey,
    through: Uuid,
    upto: Cursor,
    limit: i64,
) -> Result<(Vec<LogEvent>, Option<StreamKey>)> {
    let limit = limit.max(1);
    let mut rows = infra::event_rows!(
        "FROM events
          WHERE (stream_id, version) > ($1, $2) AND stream_id <= $6
            AND (transaction_id, position) <= ($3::bigint::text::xid8, $4)
          ORDER BY stream_id, version
          LIMIT $5",
        after.stream_id,
        after.version,
        upto.transaction_id,
        upto.position,
        limit,
        through
    )
    .fetch_all(&mut *conn)
    .await?;
    let key = |r: &EventRow| StreamKey {
        stream_id: r.stream_id,
        version: r.version,
    };
    let next = match rows.last().map(key) {
        Some(last) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit => {
            match rows.iter().rposition(|r| r.stream_id != last.stream_id) {
                // The last stream may go on past the page: the next read's.
                Some(end) => rows.truncate(end + 1),
                // One stream fills the page: the rest of it comes too.
                None => rows.extend(
                    infra::event_rows!(
                        "FROM events
                          WHERE stream_id = $1 AND version > $2
                            AND (transaction_id, position) <= ($3::bigint::text::xid8, $4)
                          ORDER BY version",
                        last.stream_id,
                        last.version,
                        upto.transaction_id,
                        upto.position,
                    )
                    .fetch_all(&mut *conn)
                    .await?,
                ),
            }
            rows.last().map(key)
        }
        _ => None,
    };
    Ok((
        rows.into_iter().map(LogEvent::of).collect::<Result<_>>()?,
        next,
    ))
}

/// Stream ids that cut the log into `parts` ranges of about as many events
/// each (fewer when the log has fewer streams), from a sample of about
/// [`SPLIT_SAMPLE_PAGES`] pages: ascending, each the last stream of its
/// range. The ranges only share the work out; any cut is correct.
pub async fn stream_splits(conn: &mut PgConnection, parts: usize) -> Result<Vec<Uuid>> {
    if parts < 2 {
        return Ok(Vec::new());
    }
    let pages = sqlx::query_scalar!("SELECT relpages FROM pg_class WHERE oid = 'events'::regclass")
        .fetch_one(&mut *conn)
        .await?;
    // relpages is an estimate (-1 before the first VACUUM): a small or new
    // log is read whole.
    let percent = if pages > SPLIT_SAMPLE_PAGES {
        (100.0 * SPLIT_SAMPLE_PAGES as f64 / f64::from(pages)) as f32
    } else {
        100.0
    };
    let fractions: Vec<f64> = (1..parts).map(|i| i as f64 / parts as f64).collect();
    let splits = sqlx::query_scalar!(
        "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY stream_id)
           FROM events TABLESAMPLE SYSTEM ($2)",
        &fractions,
        percent,
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut splits = splits.unwrap_or_default();
    splits.dedup();
    Ok(splits)
}

/// How many pages of the log [`stream_splits`] samples.
pub const SPLIT_SAMPLE_PAGES: i32 = 256;

/// Whether every transaction at or below `cursor` has ended, so no event can
/// still commit there.
pub async fn settled(conn: &mut PgConnection, cursor: Cursor) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT $1::bigint::text::xid8 < log_horizon() AS "settled!""#,
        cursor.transaction_id
    )
    .fetch_one(conn)
    .await?)
}

/// The head of the log as this moment's snapshot sees it: the last committed
/// event in reading order, `None` for an empty log. A reader that has reached
/// it has applied every event committed before the call.
pub async fn head(conn: &mut PgConnection) -> Result<Option<Cursor>> {
    Ok(sqlx::query_as!(
        Cursor,
        r#"SELECT transaction_id::text::bigint AS "transaction_id!", position FROM events
            ORDER BY transaction_id DESC, position DESC LIMIT 1"#
    )
    .fetch_optional(conn)
    .await?)
}

/// The cursor of the event at `position` (as a write's `X-Log-Position`
/// returns it). A position no committed event has is an error.
pub async fn cursor_of(conn: &mut PgConnection, position: i64) -> Result<Cursor> {
    sqlx::query_as!(
        Cursor,
        r#"SELECT transaction_id::text::bigint AS "transaction_id!", position FROM events
            WHERE position = $1"#,
        position
    )
    .fetch_optional(conn)
    .await?
    .ok_or(ProjectionError::NoSuchPosition(position))
}

/// The cursor a replay "from position `position`" starts after: just before
/// the first event, in reading order, of all events at positions ≥
/// `position`. A later position can belong to an older transaction (it
/// sorts before the event at `position`), so the cursor of `position` itself
/// would leave such events out.
pub async fn before_positions_from(conn: &mut PgConnection, position: i64) -> Result<Cursor> {
    sqlx::query_as!(
        Cursor,
        r#"SELECT transaction_id::text::bigint AS "transaction_id!",
                  position - 1 AS "position!"
             FROM events
            WHERE position >= $1
            ORDER BY transaction_id, events.position LIMIT 1"#,
        position
    )
    .fetch_optional(conn)
    .await?
    .ok_or(ProjectionError::NoSuchPosition(position))
}

/// How many committed events lie after `after` in reading order, and when the
/// oldest of them was recorded (the lag in events and in time).
pub async fn lag(
    conn: &mut PgConnection,
    after: Cursor,
) -> Result<(i64, Option<time::OffsetDateTime>)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "events!", min(recorded_at) AS oldest FROM events
            WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)"#,
        after.transaction_id,
        after.position
    )
    .fetch_one(conn)
    .await?;
    Ok((row.events, row.oldest))
}

/// The oldest transaction still running in the cluster: the one that holds
/// the gap-safe reader's horizon back. For operators' messages.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    pub pid: i32,
    pub database: String,
    pub transaction_id: String,
    pub running_for: Duration,
    pub state: String,
}

impl std::fmt::Display for HorizonHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transaction {} (pid {}, database {:?}, {}, running for {:.1} s)",
            self.transaction_id,
            self.pid,
            self.database,
            self.state,
            self.running_for.as_secs_f64()
        )
    }
}

/// Which transaction holds the horizon back, if one does (a prepared
/// transaction is not a backend and is not named here).
pub async fn horizon_holder(conn: &mut PgConnection) -> Result<Option<HorizonHolder>> {
    let row = sqlx::query!(
        r#"SELECT pid AS "pid!", coalesce(datname, '') AS "database!",
                  backend_xid::text AS "transaction_id!",
                  coalesce(extract(epoch FROM clock_timestamp() - xact_start), 0)::float8
                      AS "running_for!",
                  coalesce(state, '') AS "state!"
             FROM pg_stat_activity
            WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
            ORDER BY age(backend_xid) DESC
            LIMIT 1"#
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| HorizonHolder {
        pid: r.pid,
        database: r.database,
        transaction_id: r.transaction_id,
        running_for: Duration::try_from_secs_f64(r.running_for).unwrap_or(Duration::ZERO),
        state: r.state,
    }))
}
