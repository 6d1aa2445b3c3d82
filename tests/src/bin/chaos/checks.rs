//! Convergence and the invariants, checked from outside.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rskafka::client::partition::UnknownTopicHandling;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Waits until the outbox is empty and both read models hold every order at
/// its last version; the moment it was so.
pub(crate) async fn converge(pool: &PgPool, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let row = sqlx::query(
            "WITH last AS (SELECT stream_id, max(version) AS version FROM events GROUP BY stream_id)
             SELECT (SELECT count(*) FROM outbox),
                    (SELECT count(*) FROM last l LEFT JOIN order_view o
                        ON o.order_id = l.stream_id AND o.version = l.version
                      WHERE o.order_id IS NULL),
                    (SELECT count(*) FROM last l LEFT JOIN delivery.order_status d
                        ON d.order_id = l.stream_id AND d.version = l.version
                      WHERE d.order_id IS NULL)",
        )
        .fetch_one(pool)
        .await;
        // An error: the database may still be recovering; ask again.
        if let Ok(row) = row {
            let counts: (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if counts == (0, 0, 0) {
                return Ok(Instant::now());
            }
            last = Some(counts);
        }
        if Instant::now() > deadline {
            bail!("did not converge within {timeout:?}: outbox rows, orders behind, deliveries behind = {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) struct OrdersCheck {
    pub(crate) in_log: usize,
    pub(crate) lost: usize,
    pub(crate) ghosts: usize,
    pub(crate) duplicated: usize,
}

/// Accepted orders against the log: each 201 is in the log, and each order in
/// the log is the one order of a request that got its 201.
pub(crate) async fn orders_check(
    pool: &PgPool,
    accepted: &HashMap<String, Uuid>,
) -> Result<OrdersCheck> {
    let rows = sqlx::query(
        "SELECT e.stream_id, k.key
           FROM events e LEFT JOIN idempotency_keys k ON k.stream_id = e.stream_id
          WHERE e.version = 1",
    )
    .fetch_all(pool)
    .await?;
    let mut in_log = HashSet::new();
    let mut ghosts = 0;
    let mut duplicated = 0;
    for row in &rows {
        let order: Uuid = row.try_get(0)?;
        let key: Option<String> = row.try_get(1)?;
        in_log.insert(order);
        match key.as_deref().and_then(|k| accepted.get(k)) {
            Some(o) if *o == order => {}
            // The request got a 201 for another order: it was placed twice.
            Some(_) => duplicated += 1,
            // Written without a 201 (or without its request's key).
            None => ghosts += 1,
        }
    }
    let lost = accepted.values().filter(|o| !in_log.contains(o)).count();
    Ok(OrdersCheck {
        in_log: in_log.len(),
        lost,
        ghosts,
        duplicated,
    })
}

pub(crate) struct TopicCheck {
    pub(crate) records: usize,
    pub(crate) events: usize,
    pub(crate) redelivered: usize,
    pub(crate) missing: usize,
    pub(crate) out_of_order: usize,
    /// Records per partition.
    pub(crate) per_partition: BTreeMap<i32, i64>,
    pub(crate) failures: Vec<String>,
}

/// What the topic holds: per order, (partition, version, event id) of each
/// record in offset order; the records read; the records per partition.
struct OnTopic {
    seen: HashMap<Uuid, Vec<(i32, u64, Uuid)>>,
    records: usize,
    per_partition: BTreeMap<i32, i64>,
}

/// Reads every record of `topic` from its start.
async fn read_topic(broker: &str, topic: &str) -> Result<OnTopic> {
    let brokers: Vec<String> = broker.split(',').map(str::to_owned).collect();
    let client = infra::kafka::connect(&brokers, Duration::from_secs(30))
        .await
        .context("connect to the broker")?;
    let partitions = client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == topic)
        .context("the topic exists")?
        .partitions;
    let mut on = OnTopic {
        seen: HashMap::new(),
        records: 0,
        per_partition: BTreeMap::new(),
    };
    for p in partitions {
        let pc = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Retry)
            .await?;
        let mut offset = 0;
        loop {
            let (batch, high_watermark) = pc.fetch_records(offset, 1..4_000_000, 100).await?;
            for r in &batch {
                on.records += 1;
                let envelope: domain::EventEnvelope =
                    serde_json::from_slice(r.record.value.as_deref().unwrap_or_default())
                        .with_context(|| format!("record {p}/{} is not an envelope", r.offset))?;
                on.seen
                    .entry(envelope.stream_id.as_uuid())
                    .or_default()
                    .push((p, envelope.version, envelope.event_id));
            }
            match batch.last() {
                Some(last) => offset = last.offset + 1,
                None => break,
            }
            if offset >= high_watermark {
                break;
            }
        }
        on.per_partition.insert(p, offset);
    }
    Ok(on)
}

/// Every event of the log on the topic at least once; per order, first
/// occurrences in version order and on one partition.
pub(crate) async fn topic_check(pool: &PgPool, broker: &str, topic: &str) -> Result<TopicCheck> {
    let OnTopic {
        seen,
        records,
        per_partition,
    } = read_topic(broker, topic).await?;
    let log = sqlx::query("SELECT stream_id, version, event_id FROM events ORDER BY position")
        .fetch_all(pool)
        .await?;
    let mut expected: HashMap<Uuid, Vec<(u64, Uuid)>> = HashMap::new();
    for row in &log {
        let version: i32 = row.try_get(1)?;
        expected
            .entry(row.try_get(0)?)
            .or_default()
            .push((u64::try_from(version)?, row.try_get(2)?));
    }
    let mut missing = 0;
    let mut out_of_order = 0;
    let mut redelivered = 0;
    let mut failures = Vec::new();
    for (order, events) in &expected {
        let on_topic = seen.get(order).map(Vec::as_slice).unwrap_or_default();
        let mut first = Vec::new();
        let mut ids = HashSet::new();
        for (_, version, id) in on_topic {
            if ids.insert(*id) {
                first.push(*version);
            } else {
                redelivered += 1;
            }
        }
        missing += events.iter().filter(|(_, id)| !ids.contains(id)).count();
        out_of_order += first.windows(2).filter(|w| w[0] >= w[1]).count();
        let partitions: HashSet<i32> = on_topic.iter().map(|(p, _, _)| *p).collect();
        if partitions.len() > 1 {
            failures.push(format!(
                "order {order} is on {} partitions",
                partitions.len()
            ));
        }
    }
    let strangers = seen.keys().filter(|o| !expected.contains_key(o)).count();
    if missing > 0 {
        failures.push(format!("{missing} events never reached the topic"));
    }
    if out_of_order > 0 {
        failures.push(format!(
            "{out_of_order} events published out of version order"
        ));
    }
    if strangers > 0 {
        failures.push(format!(
            "{strangers} orders on the topic are not in the log"
        ));
    }
    Ok(TopicCheck {
        records,
        events: log.len(),
        redelivered,
        missing,
        out_of_order,
        per_partition,
        failures,
    })
}

pub(crate) struct DeliveryCheck {
    pub(crate) consumed: i64,
    pub(crate) consumed_twice: i64,
    pub(crate) failures: Vec<String>,
}

/// The delivery projection's offsets: every record consumed, none twice (its
/// count of applied records moves with its offsets, in one transaction).
pub(crate) async fn delivery_check(
    pool: &PgPool,
    topic: &str,
    per_partition: &BTreeMap<i32, i64>,
) -> Result<DeliveryCheck> {
    let mut conn = pool.acquire().await?;
    let generation =
        projections::checkpoint::active_generation(&mut conn, projections::delivery::NAME).await?;
    let rows = sqlx::query(
        "SELECT partition, next_offset, events_applied FROM delivery.offsets
          WHERE generation = $1 AND topic = $2",
    )
    .bind(generation)
    .bind(topic)
    .fetch_all(&mut *conn)
    .await?;
    let mut consumed = 0;
    let mut failures = Vec::new();
    let mut offsets = BTreeMap::new();
    for row in &rows {
        let partition: i32 = row.try_get(0)?;
        offsets.insert(partition, row.try_get::<i64, _>(1)?);
        consumed += row.try_get::<i64, _>(2)?;
    }
    for (partition, end) in per_partition {
        let at = offsets.get(partition).copied().unwrap_or(0);
        if at != *end {
            failures.push(format!(
                "delivery consumed partition {partition} up to {at}, the topic has {end}"
            ));
        }
    }
    let records: i64 = per_partition.values().sum();
    let consumed_twice = (consumed - records).max(0);
    if consumed != records {
        failures.push(format!(
            "delivery counted {consumed} records consumed, the topic has {records}"
        ));
    }
    Ok(DeliveryCheck {
        consumed,
        consumed_twice,
        failures,
    })
}

/// What the worker processes' logs say about leadership.
#[derive(Debug, Default)]
pub(crate) struct LeadershipLog {
    /// A standby took a lease whose leader stopped renewing it.
    pub(crate) takeovers_after_expiry: usize,
    /// A woken (or cut-off) leader found its lease gone and stepped down.
    pub(crate) stepped_down: usize,
    /// Records a relay had sent after losing its lease (re-sent by the new
    /// leader: duplicates the delivery side absorbs).
    pub(crate) resent: u64,
}

/// Reads the JSON log lines of the worker processes.
pub(crate) fn leadership_log(logs: &[std::path::PathBuf]) -> LeadershipLog {
    let mut found = LeadershipLog::default();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            if message.starts_with("took the lease over from a leader that stopped renewing it") {
                found.takeovers_after_expiry += 1;
            } else if message.starts_with("lease lost: stepping down") {
                found.stepped_down += 1;
            } else if message.starts_with("sent records after losing the lease") {
                found.resent += v["fields"]["records"].as_u64().unwrap_or(0);
            }
        }
    }
    found
}
