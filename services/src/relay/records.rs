//! Kafka records from stored events, and produce requests kept under the
//! brokers' size limit.

use std::collections::BTreeMap;

use domain::StoredEvent;
use rskafka::chrono::{TimeZone, Utc};
use rskafka::record::Record;

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

/// The Kafka record of an event: key = order id, value = the JSON envelope
/// as stored, headers for routing and tracing without parsing the value.
pub(super) fn record(event: &StoredEvent, key: String) -> Result<Record, RelayError> {
    let value = serde_json::to_vec(event).map_err(|e| RelayError::Corrupt {
        position: event.position.unwrap_or_default(),
        what: e.to_string(),
    })?;
    let mut headers = BTreeMap::new();
    headers.insert(
        "event_type".to_owned(),
        event.event_type.as_bytes().to_vec(),
    );
    headers.insert(
        "schema_version".to_owned(),
        event.schema_version.to_string().into_bytes(),
    );
    headers.insert(
        "event_id".to_owned(),
        event.event_id.to_string().into_bytes(),
    );
    headers.insert("content-type".to_owned(), b"application/json".to_vec());
    if let Some(correlation) = event
        .metadata
        .get("correlation_id")
        .and_then(serde_json::Value::as_str)
    {
        headers.insert("correlation_id".to_owned(), correlation.as_bytes().to_vec());
    }
    let millis =
        i64::try_from(event.recorded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    Ok(Record {
        key: Some(key.into_bytes()),
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
