//! The Kafka side shared by the relay (producer) and the delivery projection
//! (consumer): connecting, the topic, and which partition an order goes to.

use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::{Client, ClientBuilder};
use rskafka::BackoffConfig;

/// Connects to the bootstrap brokers. Requests give up after `deadline`
/// instead of retrying forever (rskafka's default), so callers see a broker
/// that is down and handle it themselves.
pub async fn connect(brokers: &[String], deadline: Duration) -> Result<Client, KafkaError> {
    ClientBuilder::new(brokers.to_vec())
        .client_id("orders")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
            deadline: Some(deadline),
        })
        .build()
        .await
}

/// How the relay creates the topic when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: i32,
    pub replication_factor: i16,
    /// `retention.ms`; -1 keeps records for ever (the default: the topic is
    /// the delivery side's source for rebuilds).
    pub retention_ms: i64,
}

impl TopicSettings {
    /// The topic-level configs sent with the creation. Only a finite
    /// retention names `cleanup.policy=delete`: some brokers (Tansu 0.6)
    /// read an explicit delete policy with `retention.ms=-1` as "everything
    /// is older than the retention".
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let mut configs = vec![("retention.ms", self.retention_ms.to_string())];
        if self.retention_ms >= 0 {
            configs.push(("cleanup.policy", "delete".to_owned()));
        }
        configs
    }
}

/// Creates `topic` with `settings` unless it exists, and returns the
/// partitions it has (an existing topic keeps its own count and configs).
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    settings: &TopicSettings,
) -> Result<Vec<i32>, KafkaError> {
    if let Some(found) = find_topic(client, topic).await? {
        return Ok(found);
    }
    let configs = settings.configs();
    let configs: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match client
        .controller_client()?
        .create_topic_with_configs(
            topic,
            settings.partitions,
            settings.replication_factor,
            &configs,
            5_000,
        )
        .await
    {
        Ok(()) => tracing::info!(
            topic,
            partitions = settings.partitions,
            replication_factor = settings.replication_factor,
            retention_ms = settings.retention_ms,
            "topic created"
        ),
        Err(KafkaError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists,
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    // Metadata can lag a creation briefly.
    for _ in 0..50 {
        if let Some(found) = find_topic(client, topic).await? {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaError::InvalidResponse(format!(
        "topic {topic} was created but does not show in the metadata"
    )))
}

/// The partitions of `topic`, `None` while it does not exist.
pub async fn find_topic(client: &Client, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
    Ok(client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == topic && !t.partitions.is_empty())
        .map(|t| t.partitions.into_iter().collect()))
}

/// The partition for a record key: Kafka's default partitioner (murmur2 of
/// the key, made positive, modulo the partition count), so any Kafka
/// producer keyed by order id agrees with this one.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let partitions = partitions.max(1);
    // `toPositive` in Kafka: clear the sign bit.
    ((murmur2(key) & 0x7fff_ffff) as i32) % partitions
}

/// MurmurHash2 (32-bit) with Kafka's seed, as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for n in 1..=12 {
            let key = format!("order-{n}");
            let p = partition_for(key.as_bytes(), n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for(key.as_bytes(), n));
        }
    }
}

/// Where the topic is and how it is created: the relay publishes to it, the
/// delivery projection reads it.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions to create the topic with if it does not exist yet.
    pub partitions: i32,
    /// The largest produce request the relay sends, in bytes.
    pub max_request_bytes: usize,
    /// Replicas of each partition when the relay creates the topic.
    pub replication_factor: i16,
    /// `retention.ms` when the relay creates the topic (-1: for ever).
    pub retention_ms: i64,
}

impl KafkaSource {
    /// Kafka's own default for `message.max.bytes`.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

    /// How the topic is created when it does not exist.
    pub fn topic_settings(&self) -> TopicSettings {
        TopicSettings {
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            retention_ms: self.retention_ms,
        }
    }
}
