//! The drain benchmark's parts: a 100,000-event outbox backlog, the relay
//! draining it, rskafka producing the same records straight to the broker,
//! and PostgreSQL's part of the relay's work alone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::{relay_options, test_kafka, TestDb};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use tokio_util::sync::CancellationToken;

const BACKLOG_ORDERS: i64 = 49_000; // ≈ 100,000 events

/// The drain benchmark: the relay on a 100,000-event outbox backlog against
/// the same records produced straight to the broker, and PostgreSQL's part of
/// the relay's work alone.
pub(crate) async fn relay_drain() -> Drain {
    let db = TestDb::create().await;
    let seed = include_str!("../../../bench/seed-events.sql")
        .replace(":orders", &BACKLOG_ORDERS.to_string())
        .replace("\\set ON_ERROR_STOP on", "");
    sqlx::raw_sql(&seed)
        .execute(&db.pool)
        .await
        .expect("seed the log");
    let events = db.events().await;

    let kafka = test_kafka();
    let raw = raw_produce(&db, &kafka).await;
    let drained = relay_drains(&db, &kafka).await;
    let database_only = database_alone(&db).await;
    // The backlog timed is every event but the first.
    let n = (events - 1) as f64;
    Drain {
        relay: n / drained.as_secs_f64(),
        raw: events as f64 / raw.as_secs_f64(),
        database_only: n / database_only.as_secs_f64(),
        rows: events - 1,
    }
}

/// Baseline: the same envelopes, produced straight to a fresh topic. Returns
/// how long producing them took.
async fn raw_produce(db: &TestDb, kafka: &infra::kafka::KafkaSource) -> Duration {
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect");
    let raw_topic = format!("{}-raw", kafka.topic);
    let partitions = infra::kafka::ensure_topic(&client, &raw_topic, &kafka.topic_settings())
        .await
        .expect("topic");
    let by_partition = records_by_partition(db).await;
    let mut clients = HashMap::new();
    for p in partitions {
        clients.insert(
            p,
            client
                .partition_client(raw_topic.clone(), p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        );
    }
    let started = Instant::now();
    let mut batches: BTreeMap<i32, Vec<Vec<Record>>> = BTreeMap::new();
    for (p, records) in by_partition {
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            batches
                .entry(p)
                .or_default()
                .push(records.by_ref().take(1000).collect());
        }
    }
    // As the relay does: one produce per partition at a time, partitions in parallel.
    let sends = batches.into_iter().map(|(p, batches)| {
        let pc = clients.get(&p).expect("client");
        async move {
            for b in batches {
                pc.produce(b, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        }
    });
    futures::future::join_all(sends).await;
    started.elapsed()
}

/// Every event of the log as the record the relay would produce, keyed and
/// partitioned as the relay keys and partitions it (3 partitions).
async fn records_by_partition(db: &TestDb) -> BTreeMap<i32, Vec<Record>> {
    let rows = infra::event_rows!("FROM events ORDER BY position")
        .fetch_all(&db.pool)
        .await
        .expect("events");
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for row in rows {
        let e = row.decode().expect("event");
        let key = e.stream_id.to_string();
        let p = infra::kafka::partition_for(key.as_bytes(), 3);
        by_partition.entry(p).or_default().push(Record {
            key: Some(key.into_bytes()),
            value: Some(serde_json::to_vec(&e).expect("json")),
            headers: BTreeMap::new(),
            timestamp: Default::default(),
        });
    }
    by_partition
}

/// The relay, draining the backlog. It starts on an empty outbox and
/// publishes one row first (leadership, connections, the topic), so that
/// what is timed is the drain alone. Returns how long the drain took.
async fn relay_drains(db: &TestDb, kafka: &infra::kafka::KafkaSource) -> Duration {
    let stop = CancellationToken::new();
    let relay = tokio::spawn(services::relay::run(
        db.pool.clone(),
        relay_options(kafka),
        stop.clone(),
    ));
    outbox_rows(db, "LIMIT 1").await;
    until_empty(db).await;
    outbox_rows(db, "OFFSET 1").await;
    let started = Instant::now();
    until_empty(db).await;
    let drained = started.elapsed();
    stop.cancel();
    relay.await.expect("relay");
    drained
}

/// PostgreSQL's part alone, on the same rows: read them in the relay's
/// rounds (its select list and order, 3,000 at a time) and delete each
/// round, one after the other; no records are built, nothing is produced.
/// Returns how long that took.
async fn database_alone(db: &TestDb) -> Duration {
    outbox_rows(db, "OFFSET 1").await;
    let mut conn = db.pool.acquire().await.expect("a connection");
    let started = Instant::now();
    let mut cursor = (0i64, 0i64);
    loop {
        let rows: Vec<RelayRow> = sqlx::query_as(
            "SELECT outbox.transaction_id::text::bigint, events.position, events.stream_id,
                        events.version, events.event_id, events.event_type, events.schema_version,
                        events.payload::text, events.metadata::text, events.recorded_at
                   FROM outbox JOIN events USING (position)
                  WHERE (outbox.transaction_id, outbox.position) > ($1::bigint::text::xid8, $2)
                    AND outbox.transaction_id < log_horizon()
                  ORDER BY outbox.transaction_id, outbox.position LIMIT 3000",
        )
        .bind(cursor.0)
        .bind(cursor.1)
        .fetch_all(&mut *conn)
        .await
        .expect("read a round");
        let Some(last) = rows.last() else { break };
        cursor = (last.0, last.1);
        let positions: Vec<i64> = rows.iter().map(|r| r.1).collect();
        sqlx::query("DELETE FROM outbox WHERE position = ANY($1)")
            .bind(&positions)
            .execute(&mut *conn)
            .await
            .expect("delete a round");
    }
    started.elapsed()
}

/// Outbox rows for the events in position order, `range` of them
/// (`LIMIT 1`, `OFFSET 1`), in one transaction.
async fn outbox_rows(db: &TestDb, range: &str) {
    sqlx::query(&format!(
        "INSERT INTO outbox (position, stream_id, transaction_id)
         SELECT position, stream_id, transaction_id FROM events ORDER BY position {range}"
    ))
    .execute(&db.pool)
    .await
    .expect("outbox rows");
}

/// Returns once the outbox is empty.
async fn until_empty(db: &TestDb) {
    while db.outbox().await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The columns the relay reads for a row (see services/src/relay/round.rs).
type RelayRow = (
    i64,
    i64,
    uuid::Uuid,
    i32,
    uuid::Uuid,
    String,
    i16,
    String,
    String,
    time::OffsetDateTime,
);

/// Events per second: the relay draining, rskafka producing the same
/// records, and PostgreSQL's read and delete of the same rows alone.
pub(crate) struct Drain {
    pub(crate) relay: f64,
    pub(crate) raw: f64,
    pub(crate) database_only: f64,
    pub(crate) rows: i64,
}
