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
    connect_with(brokers, &KafkaSecurity::default(), deadline).await
}

/// Connects to `brokers` as `security` says (SASL, TLS).
pub async fn connect_with(
    brokers: &[String],
    security: &KafkaSecurity,
    deadline: Duration,
) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(brokers.to_vec())
        .client_id("orders")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
            deadline: Some(deadline),
        });
    if let Some(sasl) = &security.sasl {
        builder = builder.sasl_config(sasl.config());
    }
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.client_config.clone());
    }
    // rskafka's deadline bounds its retries, not a handshake a broker never
    // answers.
    super::broker::answered(deadline, "the connection's handshake", builder.build()).await
}

/// How the service authenticates to the brokers and whether it encrypts:
/// plaintext by default (the local broker), SASL and/or TLS for a managed
/// cluster.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub sasl: Option<KafkaSasl>,
    pub tls: Option<KafkaTls>,
}

/// SASL credentials. The password never reaches a log line (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: crate::secret::Secret,
}

impl KafkaSasl {
    fn config(&self) -> rskafka::client::SaslConfig {
        use rskafka::client::{Credentials, SaslConfig};
        let credentials =
            Credentials::new(self.username.clone(), self.password.expose().to_owned());
        match self.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        }
    }
}

/// The SASL mechanisms rskafka speaks with a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            other => Err(format!(
                "{other:?} is not a SASL mechanism this service speaks (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            )),
        }
    }
}

/// TLS to the brokers, verified against a CA file or the public web roots.
#[derive(Clone)]
pub struct KafkaTls {
    client_config: std::sync::Arc<rustls::ClientConfig>,
    /// Where the trusted CAs came from, for messages.
    pub roots: String,
}

impl std::fmt::Debug for KafkaTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTls")
            .field("roots", &self.roots)
            .finish()
    }
}

impl KafkaTls {
    /// Trusts the CAs in `ca_file` (PEM), or the public web roots without one.
    pub fn new(ca_file: Option<&std::path::Path>) -> std::result::Result<KafkaTls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let source = match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("no CA certificate in {}", path.display()));
                }
                path.display().to_string()
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                "the public web roots".to_owned()
            }
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(KafkaTls {
            client_config: std::sync::Arc::new(config),
            roots: source,
        })
    }
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
    /// SASL and TLS to the brokers.
    pub security: KafkaSecurity,
    /// How long a request may go unanswered before the connection is
    /// treated as dead ([`super::broker`]).
    pub request_timeout: Duration,
}

impl KafkaSource {
    /// A client of the source's brokers, with its security settings.
    pub async fn connect(&self, deadline: Duration) -> Result<Client, KafkaError> {
        connect_with(&self.brokers, &self.security, deadline).await
    }

    /// A connection whose every request has the source's deadline.
    pub async fn broker(
        &self,
        connect_deadline: Duration,
    ) -> Result<super::broker::Broker, KafkaError> {
        super::broker::Broker::connect(
            &self.brokers,
            &self.security,
            connect_deadline,
            self.request_timeout,
        )
        .await
    }

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
