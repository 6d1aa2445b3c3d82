//! Reading one row of the `events` table back into an envelope.

use domain::{Event, EventEnvelope, OrderId};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{ProjectionError, Result};

/// The columns [`decode_event_row`] reads, for `SELECT {EVENT_COLUMNS} FROM events`.
pub const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, \
     schema_version, payload, metadata, recorded_at";

/// Decodes one `events` row selected with [`EVENT_COLUMNS`]. A row this code
/// cannot read is [`ProjectionError::Corrupt`], never skipped.
pub fn decode_event_row(row: &PgRow) -> Result<EventEnvelope> {
    let position: i64 = row.try_get("position")?;
    let corrupt = |what: String| ProjectionError::Corrupt { position, what };
    let stream_id: Uuid = row.try_get("stream_id")?;
    let event_type: String = row.try_get("event_type")?;
    let schema_version: i16 = row.try_get("schema_version")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let metadata: serde_json::Value = row.try_get("metadata")?;
    let version: i32 = row.try_get("version")?;
    let schema_version =
        u16::try_from(schema_version).map_err(|_| corrupt("negative schema version".into()))?;
    let event =
        Event::decode(&event_type, schema_version, payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(EventEnvelope {
        event_id: row.try_get("event_id")?,
        stream_id: OrderId::try_from(stream_id).map_err(|e| corrupt(format!("stream id: {e}")))?,
        version: u64::try_from(version).map_err(|_| corrupt("negative version".into()))?,
        position: Some(position),
        event,
        metadata: serde_json::from_value(metadata)
            .map_err(|e| corrupt(format!("metadata: {e}")))?,
        recorded_at: row.try_get("recorded_at")?,
    })
}
