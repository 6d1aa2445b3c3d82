//! Kafka records from stored events, and produce requests kept under the
//! brokers' size limit.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::record::Record;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::RelayError;

/// What a produce request adds around its records (the record batch
/// header), and around each record (lengths, offsets, timestamps as
/// varints), at most.
pub(super) const BATCH_OVERHEAD: usize = 128;
pub(super) const RECORD_OVERHEAD: usize = 40;

/// A record's size as it travels, at most.
pub(super) fn wire_size(record: &Record) -> usize {
    RECORD_OVERHEAD
        + record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// Splits one partition's records, in order, into requests of at most
/// `limit` bytes each.
pub(super) fn split_by_bytes(records: Vec<(Record, i64)>, limit: usize) -> Vec<Vec<(Record, i64)>> {
    let mut requests: Vec<Vec<(Record, i64)>> = Vec::new();
    let mut size = 0;
    for (record, position) in records {
        let n = wire_size(&record);
        match requests.last_mut() {
            Some(current) if size + n <= limit => {
                size += n;
                current.push((record, position));
            }
            _ => {
                size = BATCH_OVERHEAD + n;
                requests.push(vec![(record, position)]);
            }
        }
    }
    requests
}

/// One outbox row as the relay reads it: the event's columns, with its
/// payload and metadata as the JSON text PostgreSQL keeps.
#[derive(Debug)]
pub(super) struct OutboxRow {
    pub transaction_id: i64,
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i16,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: OffsetDateTime,
}

/// The record's value: the stored event's JSON envelope (the fields of
/// [`domain::StoredEvent`], which consumers read), with payload and metadata
/// written as the bytes PostgreSQL returned, never decoded and re-encoded.
#[derive(Serialize)]
struct Envelope<'a> {
    event_id: Uuid,
    stream_id: Uuid,
    version: u64,
    position: i64,
    event_type: &'a str,
    schema_version: u16,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
}

/// The one metadata field the relay copies into a header.
#[derive(Deserialize)]
struct Correlation<'a> {
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

/// The Kafka record of an outbox row: key = order id, value = the JSON
/// envelope as stored, headers for routing and tracing without parsing the
/// value. The relay never needs to understand a payload, so an event
/// written by a newer build is published like any other.
pub(super) fn record(row: &OutboxRow) -> Result<Record, RelayError> {
    let corrupt = |what: String| RelayError::Corrupt {
        position: row.position,
        what,
    };
    let payload: &RawValue =
        serde_json::from_str(&row.payload).map_err(|e| corrupt(format!("payload: {e}")))?;
    let metadata: &RawValue =
        serde_json::from_str(&row.metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let envelope = Envelope {
        event_id: row.event_id,
        stream_id: row.stream_id,
        version: u64::try_from(row.version).map_err(|_| corrupt("negative version".into()))?,
        position: row.position,
        event_type: &row.event_type,
        schema_version: u16::try_from(row.schema_version)
            .map_err(|_| corrupt("negative schema version".into()))?,
        payload,
        metadata,
        recorded_at: row.recorded_at,
    };
    let value = serde_json::to_vec(&envelope).map_err(|e| corrupt(e.to_string()))?;
    let mut headers = BTreeMap::new();
    headers.insert("event_type".to_owned(), row.event_type.as_bytes().to_vec());
    headers.insert(
        "schema_version".to_owned(),
        row.schema_version.to_string().into_bytes(),
    );
    headers.insert("event_id".to_owned(), row.event_id.to_string().into_bytes());
    headers.insert("content-type".to_owned(), b"application/json".to_vec());
    // Metadata that is not an object has no correlation id.
    if let Ok(Correlation {
        correlation_id: Some(correlation),
    }) = serde_json::from_str::<Correlation>(metadata.get())
    {
        headers.insert("correlation_id".to_owned(), correlation.as_bytes().to_vec());
    }
    let millis =
        i64::try_from(row.recorded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    Ok(Record {
        key: Some(row.stream_id.to_string().into_bytes()),
        value: Some(value),
        headers,
        timestamp: Utc
            .timestamp_millis_opt(millis)
            .single()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(size: usize) -> Record {
        Record {
            key: None,
            value: Some(vec![b'x'; size]),
            headers: BTreeMap::new(),
            timestamp: Utc.timestamp_millis_opt(0).single().unwrap_or_default(),
        }
    }

    #[test]
    fn the_value_is_the_stored_envelope_with_the_payload_bytes_as_stored() {
        let row = OutboxRow {
            transaction_id: 7,
            position: 42,
            stream_id: Uuid::now_v7(),
            version: 3,
            event_id: Uuid::now_v7(),
            event_type: "OrderRenamedByANewerBuild".to_owned(),
            schema_version: 9,
            payload: r#"{"nested": {"list": [1, 2.5, null]}, "text": "caf\u00e9 \"x\""}"#
                .to_owned(),
            metadata: r#"{"correlation_id": "c-1", "who": "staff"}"#.to_owned(),
            recorded_at: time::macros::datetime!(2026-12-03 17:00:00.123456 UTC),
        };
        let record = record(&row).expect("a record");
        let value = record.value.expect("a value");
        let text = std::str::from_utf8(&value).expect("utf-8");
        assert!(
            text.contains(
                r#""payload":{"nested": {"list": [1, 2.5, null]}, "text": "caf\u00e9 \"x\""}"#
            ),
            "the payload's bytes travel as stored: {text}"
        );
        let stored: domain::StoredEvent = serde_json::from_slice(&value).expect("a stored event");
        assert_eq!(stored.event_id, row.event_id);
        assert_eq!(stored.stream_id, row.stream_id);
        assert_eq!(stored.version, 3);
        assert_eq!(stored.position, Some(42));
        assert_eq!(stored.event_type, row.event_type);
        assert_eq!(stored.schema_version, 9);
        assert_eq!(stored.payload["text"], "café \"x\"");
        assert_eq!(stored.metadata["who"], "staff");
        assert_eq!(stored.recorded_at, row.recorded_at);
        assert_eq!(record.key, Some(row.stream_id.to_string().into_bytes()));
        assert_eq!(
            record.headers.get("correlation_id").map(Vec::as_slice),
            Some(&b"c-1"[..])
        );
    }

    #[test]
    fn a_payload_that_is_not_json_is_corrupt_not_published() {
        let row = OutboxRow {
            transaction_id: 7,
            position: 5,
            stream_id: Uuid::now_v7(),
            version: 1,
            event_id: Uuid::now_v7(),
            event_type: "OrderPlaced".to_owned(),
            schema_version: 1,
            payload: "{not json".to_owned(),
            metadata: "{}".to_owned(),
            recorded_at: time::macros::datetime!(2026-12-03 17:00 UTC),
        };
        assert!(matches!(
            record(&row),
            Err(RelayError::Corrupt { position: 5, .. })
        ));
    }

    #[test]
    fn requests_stay_under_the_byte_limit_and_keep_the_order() {
        let records: Vec<(Record, i64)> = (0..50).map(|i| (record_of(900), i)).collect();
        let requests = split_by_bytes(records, 8 * 1024);
        assert!(requests.len() >= 6, "{} requests", requests.len());
        let mut next = 0;
        for request in &requests {
            let bytes: usize =
                BATCH_OVERHEAD + request.iter().map(|(r, _)| wire_size(r)).sum::<usize>();
            assert!(bytes <= 8 * 1024, "{bytes} bytes");
            for (_, position) in request {
                assert_eq!(*position, next, "in order");
                next += 1;
            }
        }
        assert_eq!(next, 50, "every record once");
    }

    #[test]
    fn a_record_at_the_limit_travels_alone() {
        let limit = 4096;
        let big = limit - BATCH_OVERHEAD - RECORD_OVERHEAD;
        let requests = split_by_bytes(
            vec![(record_of(10), 1), (record_of(big), 2), (record_of(10), 3)],
            limit,
        );
        let shape: Vec<Vec<i64>> = requests
            .iter()
            .map(|r| r.iter().map(|(_, p)| *p).collect())
            .collect();
        assert_eq!(shape, [vec![1], vec![2], vec![3]]);
    }
}
