//! Kafka for tests: a topic of each test's own, a relay it starts and stops,
//! reading the topic back, writing raw records.

use std::time::Duration;

use infra::kafka::KafkaSource;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The Kafka brokers `just test` started (`KAFKA_BROKERS`), with a topic of
/// this test's own.
pub fn test_kafka() -> KafkaSource {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("KAFKA_BROKERS is not set: run the tests with `just test`, which starts a broker")
    });
    KafkaSource {
        brokers: brokers.split(',').map(str::to_owned).collect(),
        topic: format!("test-{}", uuid::Uuid::new_v4().simple()),
        partitions: 3,
        max_request_bytes: KafkaSource::DEFAULT_MAX_REQUEST_BYTES,
        replication_factor: 1,
        retention_ms: -1,
        security: Default::default(),
        request_timeout: infra::broker::DEFAULT_REQUEST_TIMEOUT,
    }
}

/// The relay's settings for tests: small polls, so tests run fast.
pub fn relay_options(kafka: &KafkaSource) -> services::relay::RelayOptions {
    services::relay::RelayOptions {
        poll_interval: Duration::from_millis(100),
        ..services::relay::RelayOptions::new(kafka, infra::lease::DEFAULT_TTL)
    }
}

/// One record read back from the topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub envelope: domain::EventEnvelope,
}

/// Every record of the topic, partition by partition, in offset order.
pub async fn read_topic(kafka: &KafkaSource) -> Vec<TopicRecord> {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    let topic = client
        .list_topics()
        .await
        .expect("list topics")
        .into_iter()
        .find(|t| t.name == kafka.topic)
        .expect("the topic exists");
    let mut out = Vec::new();
    for p in topic.partitions {
        let pc = client
            .partition_client(kafka.topic.clone(), p, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let mut offset = 0;
        loop {
            let (records, high_watermark) = pc
                .fetch_records(offset, 1..4_000_000, 100)
                .await
                .expect("fetch");
            for r in &records {
                out.push(TopicRecord {
                    partition: p,
                    offset: r.offset,
                    key: String::from_utf8(r.record.key.clone().unwrap_or_default())
                        .expect("utf-8 key"),
                    headers: r
                        .record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                    envelope: serde_json::from_slice(r.record.value.as_deref().unwrap_or_default())
                        .expect("a JSON envelope"),
                });
            }
            match records.last() {
                Some(last) => offset = last.offset + 1,
                None => break,
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    out
}

/// A relay of its own for a test that starts and stops it (a relay that
/// restarts, one started after a backlog was written).
pub struct TestRelay {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestRelay {
    pub fn start(pool: &PgPool, kafka: &KafkaSource) -> TestRelay {
        TestRelay::start_with(pool, relay_options(kafka))
    }

    /// A relay with these options (rounds of another size).
    pub fn start_with(pool: &PgPool, options: services::relay::RelayOptions) -> TestRelay {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(services::relay::run(
            pool.clone(),
            options,
            shutdown.clone(),
        ));
        TestRelay { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the relay stops");
    }
}

/// Produces one raw record to a partition of the test's topic, as a foreign
/// producer (or a relay of another history) would.
pub async fn produce_raw(kafka: &KafkaSource, partition: i32, key: &[u8], value: Vec<u8>) {
    use rskafka::client::partition::{Compression, UnknownTopicHandling};
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect to Kafka");
    let timestamp =
        rskafka::chrono::TimeZone::timestamp_millis_opt(&rskafka::chrono::Utc, 1_790_000_000_000)
            .single()
            .expect("a timestamp");
    client
        .partition_client(kafka.topic.clone(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("a partition client")
        .produce(
            vec![rskafka::record::Record {
                key: Some(key.to_vec()),
                value: Some(value),
                headers: Default::default(),
                timestamp,
            }],
            Compression::NoCompression,
        )
        .await
        .expect("produce");
}
