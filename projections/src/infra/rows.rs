//! Reading one row of the `events` table back: as it is stored
//! ([`stored_event_row`], which never needs to understand the payload) or
//! decoded with this build's knowledge ([`decode_event_row`]).

use domain::{EventEnvelope, StoredEvent};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{ProjectionError, Result};

/// The columns [`stored_event_row`] reads, for `SELECT {EVENT_COLUMNS} FROM events`.
pub const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, \
     schema_version, payload, metadata, recorded_at";

/// One `events` row selected with [`EVENT_COLUMNS`], as stored.
pub fn stored_event_row(row: &PgRow) -> Result<StoredEvent> {
    let position: i64 = row.try_get("position")?;
    let corrupt = |what: &str| ProjectionError::Corrupt {
        position,
        what: what.to_owned(),
    };
    let schema_version: i16 = row.try_get("schema_version")?;
    let version: i32 = row.try_get("version")?;
    Ok(StoredEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        version: u64::try_from(version).map_err(|_| corrupt("negative version"))?,
        position: Some(position),
        event_type: row.try_get("event_type")?,
        schema_version: u16::try_from(schema_version)
            .map_err(|_| corrupt("negative schema version"))?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Decodes one `events` row selected with [`EVENT_COLUMNS`]. A row this build
/// cannot read is [`ProjectionError::Unreadable`], never skipped.
pub fn decode_event_row(row: &PgRow) -> Result<EventEnvelope> {
    let stored = stored_event_row(row)?;
    let (order_id, event_id, position, event_type, schema_version) = (
        stored.stream_id,
        stored.event_id,
        stored.position.unwrap_or_default(),
        stored.event_type.clone(),
        stored.schema_version,
    );
    stored.decode().map_err(|e| {
        ProjectionError::Unreadable(Box::new(crate::held::UnreadableEvent {
            order_id,
            event_id,
            source: crate::held::Source::Log { position },
            event_type,
            schema_version,
            reason: e.to_string(),
        }))
    })
}
