//! The brokers as the relay and the delivery side use them: every request
//! has a deadline.
//!
//! rskafka waits for ever for the answer to a request it has sent (its
//! backoff deadline bounds retries, not a request in flight). A broker that
//! accepted a request and never answers it (a half-open connection after a
//! network fault, a broker stuck on its storage) would hold the relay or a
//! partition's consumer without an error, a log line or a metric, for good.
//! Here a request that is not answered within the deadline (Kafka's
//! `request.timeout.ms`, `KAFKA_REQUEST_TIMEOUT_MS`) fails as a timed-out
//! I/O error: the caller drops its connections and connects again, and what
//! it sent may have landed (the relay deletes nothing it was not
//! acknowledged, so it sends it again; consumers absorb the duplicates).
//!
//! Nothing in the service holds an rskafka client except through these
//! types (tests and benchmarks use rskafka directly).

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, RequestError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::{Record, RecordAndOffset};

use super::kafka::{self, KafkaSecurity, TopicSettings};

/// Kafka's own default for `request.timeout.ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `request`, or a timed-out I/O error when no answer came within
/// `deadline`. Cancelling an rskafka request is safe: it forgets the
/// request's correlation id, and an answer that arrives later is dropped.
pub async fn answered<T>(
    deadline: Duration,
    what: &str,
    request: impl Future<Output = Result<T, KafkaError>>,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(deadline, request).await {
        Ok(answer) => answer,
        Err(_) => {
            metrics::counter!("kafka_requests_timed_out_total").increment(1);
            Err(KafkaError::Request(RequestError::IO(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the broker did not answer {what} within {deadline:?}"),
            ))))
        }
    }
}

/// A connection to the brokers whose requests each have a deadline.
pub struct Broker {
    client: Client,
    request_timeout: Duration,
}

impl Broker {
    /// Connects to `brokers`; gives up after `connect_deadline` (retries
    /// included), and bounds every later request by `request_timeout`.
    pub async fn connect(
        brokers: &[String],
        security: &KafkaSecurity,
        connect_deadline: Duration,
        request_timeout: Duration,
    ) -> Result<Broker, KafkaError> {
        let client = kafka::connect_with(brokers, security, connect_deadline).await?;
        Ok(Broker {
            client,
            request_timeout,
        })
    }

    /// The partitions of `topic`, `None` while it does not exist.
    pub async fn find_topic(&self, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
        answered(
            self.request_timeout,
            "a metadata request",
            kafka::find_topic(&self.client, topic),
        )
        .await
    }

    /// Creates `topic` with `settings` unless it exists; its partitions.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        settings: &TopicSettings,
    ) -> Result<Vec<i32>, KafkaError> {
        // A creation waits for the metadata to show the topic (up to 5 s).
        answered(
            self.request_timeout + Duration::from_secs(5),
            "the topic's creation",
            kafka::ensure_topic(&self.client, topic, settings),
        )
        .await
    }

    /// A client of one partition of `topic`, with the same deadline.
    pub async fn partition(&self, topic: &str, partition: i32) -> Result<Partition, KafkaError> {
        let inner = answered(
            self.request_timeout,
            "a request for the partition's leader",
            self.client
                .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry),
        )
        .await?;
        Ok(Partition {
            inner,
            request_timeout: self.request_timeout,
        })
    }
}

/// One partition of a topic; every request has the broker's deadline.
pub struct Partition {
    inner: PartitionClient,
    request_timeout: Duration,
}

impl Partition {
    pub fn partition(&self) -> i32 {
        self.inner.partition()
    }

    /// Produces `records`, uncompressed, in one request; their offsets.
    pub async fn produce(&self, records: Vec<Record>) -> Result<Vec<i64>, KafkaError> {
        answered(
            self.request_timeout,
            "a produce request",
            self.inner.produce(records, Compression::NoCompression),
        )
        .await
    }

    /// Records from `offset` (`bytes` bounds the answer), waiting up to
    /// `max_wait_ms` for some to arrive; and the high watermark. The deadline
    /// runs on top of the wait the broker is allowed.
    pub async fn fetch_records(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<(Vec<RecordAndOffset>, i64), KafkaError> {
        let wait = Duration::from_millis(u64::try_from(max_wait_ms).unwrap_or(0));
        answered(
            self.request_timeout + wait,
            "a fetch request",
            self.inner.fetch_records(offset, bytes, max_wait_ms),
        )
        .await
    }

    /// The partition's earliest or latest offset.
    pub async fn get_offset(&self, at: OffsetAt) -> Result<i64, KafkaError> {
        answered(
            self.request_timeout,
            "an offsets request",
            self.inner.get_offset(at),
        )
        .await
    }
}
