//! The outbox relay: publishes committed events to Kafka, then deletes their
//! outbox rows. At-least-once: a crash between the broker's acknowledgement
//! and the delete re-sends those events, and consumers absorb the duplicates.
//!
//! - Order: every order's events go to one partition (Kafka's default
//!   partitioner on the order id), produced in the order they were read: by
//!   position one round at a time, or, draining a backlog with rounds in
//!   flight, in the log's gap-safe order (`round.rs`). A partition whose
//!   produce failed keeps its rows, which are read again, still before any
//!   later event of the same order.
//! - Records carry the stored envelope, payload bytes as PostgreSQL keeps
//!   them: the relay never decodes an event.
//! - One publisher at a time: the relay that holds the topic's lease
//!   ([`infra::lease`]); other relay processes wait as hot standbys and
//!   take over within a second of its death, within the lease's time to live
//!   when it freezes. A relay that wakes after losing its lease deletes
//!   nothing: its delete is fenced, and what it sent meanwhile (at most the
//!   round it had prepared) is counted as re-sent
//!   (docs/adr/0007-relay-leadership.md).
//! - Broker down: the API keeps accepting orders, rows wait in the outbox, the
//!   relay retries with backoff and drains the backlog when the broker returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use infra::broker::Broker;
use infra::kafka;
use infra::kafka::KafkaSource;
use infra::lease::{self, Fence, Lease};
use infra::wait::{listen, sleep_or_cancel, wait_for_news, Backoff};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

mod records;
mod round;

use round::{drain, round, Rounds};

/// The failpoint between the broker's acknowledgement and the outbox delete.
pub const AFTER_PRODUCE: &str = "relay.after_produce";

#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub brokers: Vec<String>,
    /// SASL and TLS to the brokers.
    pub security: kafka::KafkaSecurity,
    pub topic: String,
    /// How to create the topic if it does not exist.
    pub settings: kafka::TopicSettings,
    /// Outbox rows per round.
    pub batch_size: i64,
    pub poll_interval: Duration,
    /// The largest produce request, in bytes (Kafka's `message.max.bytes`
    /// bounds a record batch, 1 MiB by default). A partition's records are
    /// split into requests below it; a single record too large for it is
    /// dead-lettered (`outbox_dead_letters`) instead of blocking its
    /// partition for ever.
    pub max_request_bytes: usize,
    /// How long the leader's lease lives without renewal.
    pub lease_ttl: Duration,
    /// How long a produce (or any request) may go unanswered before the
    /// relay drops its connections and connects again.
    pub request_timeout: Duration,
}

impl RelayOptions {
    /// The relay of `kafka`'s topic, with the defaults: rounds of 3,000 rows
    /// (~1,000 records per partition and produce: Tansu stalls on batches of
    /// about 100, ADR 0007, and a round's fixed costs spread), a poll every
    /// 500 ms when no notification came.
    pub fn new(kafka: &KafkaSource, lease_ttl: Duration) -> RelayOptions {
        RelayOptions {
            brokers: kafka.brokers.clone(),
            security: kafka.security.clone(),
            topic: kafka.topic.clone(),
            settings: kafka.topic_settings(),
            batch_size: 3000,
            poll_interval: Duration::from_millis(500),
            max_request_bytes: kafka.max_request_bytes,
            lease_ttl,
            request_timeout: kafka.request_timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    #[error("event at position {position} cannot be read: {what}")]
    Corrupt { position: i64, what: String },
    #[error("topic {topic} has {now} partitions but was published with {recorded}: an order's later events would land on another partition than its earlier ones; the relay does not publish (docs/runbook.md, \"The topic's partition count changed\")")]
    PartitionsChanged {
        topic: String,
        recorded: i32,
        now: i32,
    },
    #[error("lost the lease {lease:?} to another relay: stepped down")]
    Fenced { lease: String },
    /// Anything else the shared infrastructure said.
    #[error(transparent)]
    Infra(infra::Error),
}

/// How often a publishing relay checks that the topic's partition count is
/// still the one it publishes with.
const PARTITIONS_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Records the partition count a topic is first published with, and fails
/// when the topic has another count now.
async fn check_partitions(
    conn: &mut PgConnection,
    topic: &str,
    now: i32,
) -> Result<(), RelayError> {
    let recorded = sqlx::query_scalar!(
        r#"WITH new AS (INSERT INTO kafka_topics (topic, partitions) VALUES ($1, $2)
                      ON CONFLICT (topic) DO NOTHING RETURNING partitions)
         SELECT partitions AS "partitions!" FROM new
          UNION ALL SELECT partitions FROM kafka_topics WHERE topic = $1
         LIMIT 1"#,
        topic,
        now,
    )
    .fetch_one(&mut *conn)
    .await?;
    if recorded == now {
        metrics::gauge!("relay_partition_count_mismatch").set(0.0);
        return Ok(());
    }
    metrics::gauge!("relay_partition_count_mismatch").set(1.0);
    Err(RelayError::PartitionsChanged {
        topic: topic.to_owned(),
        recorded,
        now,
    })
}

impl From<infra::Error> for RelayError {
    fn from(e: infra::Error) -> Self {
        match e {
            infra::Error::Database(e) => RelayError::Database(e),
            infra::Error::Fenced { lease } => RelayError::Fenced { lease },
            infra::Error::Corrupt { position, what } => RelayError::Corrupt { position, what },
            other => RelayError::Infra(other),
        }
    }
}

/// Runs the relay until `shutdown`.
pub async fn run(pool: PgPool, options: RelayOptions, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    let mut delay = Duration::ZERO;
    while !shutdown.is_cancelled() {
        if !delay.is_zero() {
            sleep_or_cancel(delay, &shutdown).await;
        }
        let Some(lease) = Lease::wait_for(
            &pool,
            &lease::relay(&options.topic),
            options.lease_ttl,
            Duration::from_secs(1),
            &shutdown,
            || async {},
        )
        .await
        else {
            break;
        };
        let result = publish(&pool, lease.fence(), &options, &shutdown).await;
        lease.release().await;
        match result {
            Ok(()) => {
                backoff.reset();
                delay = Duration::ZERO;
            }
            Err(RelayError::Fenced { .. }) => {
                delay = Duration::from_secs(1);
            }
            Err(e @ RelayError::PartitionsChanged { .. }) => {
                metrics::counter!("relay_errors_total").increment(1);
                delay = Duration::from_secs(30);
                tracing::error!(error = %e, ?delay, "relay stopped publishing");
            }
            Err(e) => {
                metrics::counter!("relay_errors_total").increment(1);
                delay = backoff.grow();
                tracing::warn!(error = %e, ?delay, "relay failed; retrying");
            }
        }
    }
    tracing::info!("relay stopped");
}

/// While holding the lease: connect, make sure of the topic, then publish
/// rounds until shutdown, an error or the loss of the lease.
async fn publish(
    pool: &PgPool,
    fence: &Fence,
    options: &RelayOptions,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let mut conn = pool.acquire().await?;
    let conn = &mut *conn;
    let broker = Broker::connect(
        &options.brokers,
        &options.security,
        Duration::from_secs(5),
        options.request_timeout,
    )
    .await?;
    let partitions = broker
        .ensure_topic(&options.topic, &options.settings)
        .await?;
    let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
    check_partitions(conn, &options.topic, count).await?;
    let mut clients = BTreeMap::new();
    for p in partitions {
        clients.insert(p, Arc::new(broker.partition(&options.topic, p).await?));
    }
    let mut listener = listen(pool, "relay").await;
    tracing::info!(topic = %options.topic, partitions = count, "relay publishing");
    let mut checked = std::time::Instant::now();
    while !shutdown.is_cancelled() {
        if checked.elapsed() >= PARTITIONS_CHECK_EVERY {
            checked = std::time::Instant::now();
            let now = broker
                .find_topic(&options.topic)
                .await?
                .map_or(0, |p| i32::try_from(p.len()).unwrap_or(i32::MAX));
            check_partitions(conn, &options.topic, now).await?;
        }
        let rounds = Rounds {
            fence,
            clients: &clients,
            partitions: count,
            batch_size: options.batch_size,
            max_request_bytes: options.max_request_bytes,
        };
        if round(conn, &rounds).await? >= options.batch_size {
            // A backlog: drain it with rounds in flight, then back to one
            // round at a time for what the gap-safe order held back.
            let mut deleter = pool.acquire().await?;
            drain(conn, &mut deleter, &rounds).await?;
            continue;
        }
        tokio::select! {
            () = wait_for_news(&mut listener, options.poll_interval, shutdown) => {}
            () = fence.lost() => return Err(fence.fenced().into()),
        }
    }
    Ok(())
}
