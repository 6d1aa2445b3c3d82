//! Where Kafka is, how the relay creates its topic, and how the service
//! proves who it is to the brokers (SASL, TLS).

use clap::Args;

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, comma-separated (host:port,...).
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    pub kafka_brokers: Option<String>,
    /// The topic the relay publishes to and the delivery projection reads.
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        default_value = "orders.events",
        global = true
    )]
    pub kafka_topic: String,
    /// Partitions of the topic when the relay creates it.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3, global = true,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub kafka_partitions: i32,
    /// The largest produce request the relay sends, in bytes (at most the
    /// brokers' `message.max.bytes`); a larger event is dead-lettered.
    #[arg(long, env = "KAFKA_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024, global = true,
          value_parser = clap::value_parser!(u32).range(4096..=256 * 1024 * 1024))]
    pub kafka_max_request_bytes: u32,
    /// Milliseconds a request to the brokers may go unanswered before the
    /// relay or the delivery consumer treats the connection as dead and
    /// connects again (Kafka's `request.timeout.ms`).
    #[arg(long, env = "KAFKA_REQUEST_TIMEOUT_MS", default_value_t = 30_000, global = true,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub kafka_request_timeout_ms: u64,
    /// Replicas of each partition when the relay creates the topic (use 3
    /// on a production cluster).
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(i16).range(1..=16))]
    pub kafka_replication_factor: i16,
    /// `retention.ms` of the topic when the relay creates it; -1 keeps every
    /// record for ever (the delivery side rebuilds from the topic).
    #[arg(long, env = "KAFKA_RETENTION_MS", default_value_t = -1, global = true,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    pub kafka_retention_ms: i64,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
}

impl KafkaArgs {
    /// The brokers as a list, if any are configured.
    pub fn brokers(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .kafka_brokers
            .as_deref()?
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect();
        (!list.is_empty()).then_some(list)
    }

    /// Where Kafka is, when brokers are configured (an error when its
    /// security settings do not hold together).
    pub fn source(&self) -> anyhow::Result<Option<infra::kafka::KafkaSource>> {
        let Some(brokers) = self.brokers() else {
            return Ok(None);
        };
        Ok(Some(infra::kafka::KafkaSource {
            brokers,
            security: self.security.security()?,
            topic: self.kafka_topic.clone(),
            partitions: self.kafka_partitions,
            max_request_bytes: usize::try_from(self.kafka_max_request_bytes)
                .unwrap_or(infra::kafka::KafkaSource::DEFAULT_MAX_REQUEST_BYTES),
            replication_factor: self.kafka_replication_factor,
            retention_ms: self.kafka_retention_ms,
            request_timeout: std::time::Duration::from_millis(self.kafka_request_timeout_ms),
        }))
    }

    /// Where Kafka is, or an error naming the setting `what` needs.
    pub fn require(&self, what: &str) -> anyhow::Result<infra::kafka::KafkaSource> {
        self.source()?.ok_or_else(|| {
            anyhow::anyhow!("{what} needs Kafka: set KAFKA_BROKERS (or pass --kafka-brokers)")
        })
    }
}

/// SASL and TLS to the Kafka brokers (a managed cluster).
#[derive(Debug, Clone, Args)]
pub struct KafkaSecurityArgs {
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with
    /// KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD). PLAIN sends the
    /// password as it is: use it over TLS only.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", global = true,
          value_parser = clap::value_parser!(infra::kafka::SaslMechanism))]
    pub kafka_sasl_mechanism: Option<infra::kafka::SaslMechanism>,
    #[arg(long, env = "KAFKA_SASL_USERNAME", global = true)]
    pub kafka_sasl_username: Option<String>,
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub kafka_sasl_password: Option<infra::secret::Secret>,
    /// Connect to the brokers over TLS.
    #[arg(long, env = "KAFKA_TLS", global = true)]
    pub kafka_tls: bool,
    /// The CA certificates (PEM) the brokers' certificates are checked
    /// against; without it, the public web roots. Implies KAFKA_TLS.
    #[arg(long, env = "KAFKA_TLS_CA_FILE", global = true)]
    pub kafka_tls_ca_file: Option<std::path::PathBuf>,
}

impl KafkaSecurityArgs {
    pub fn security(&self) -> anyhow::Result<infra::kafka::KafkaSecurity> {
        use infra::kafka::{KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism};
        let sasl = match (
            self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(password)) => {
                if mechanism == SaslMechanism::Plain
                    && !self.kafka_tls
                    && self.kafka_tls_ca_file.is_none()
                {
                    tracing::warn!("KAFKA_SASL_MECHANISM=PLAIN without KAFKA_TLS sends the password in clear");
                }
                Some(KafkaSasl {
                    mechanism,
                    username: username.clone(),
                    password: password.clone(),
                })
            }
            _ => anyhow::bail!(
                "SASL needs all three of KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            ),
        };
        let tls = if self.kafka_tls || self.kafka_tls_ca_file.is_some() {
            Some(KafkaTls::new(self.kafka_tls_ca_file.as_deref()).map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        Ok(KafkaSecurity { sasl, tls })
    }
}
