//! Loss on the Kafka side is loud: a topic deleted and recreated under a
//! running system stops the delivery partitions that applied from it (never
//! a silent wait and skip), a rebuild from a topic that retention thinned
//! refuses unless told to accept an incomplete model, and a partition count
//! that changed makes the relay refuse to publish.

use std::path::Path;
use std::time::Duration;

use e2e::processes::DurableBroker;
use e2e::{eventually, placed_payload, spawn_app_opts, test_kafka, AppOptions, TestApp, TestRelay};
use projections::delivery::{self, KafkaSource};
use projections::{held, ProjectionError};

async fn app_on(kafka: KafkaSource) -> TestApp {
    spawn_app_opts(AppOptions {
        kafka: Some(kafka),
        ..AppOptions::default()
    })
    .await
}

/// The app and the delivery projection, without the relay: the test starts
/// and stops it itself.
async fn app_without_relay(kafka: &KafkaSource) -> TestApp {
    spawn_app_opts(AppOptions {
        kafka: Some(kafka.clone()),
        relay: false,
        ..AppOptions::default()
    })
    .await
}

async fn delivered(app: &TestApp, user: &str, id: &str) {
    for _ in 0..750 {
        if app.get(&format!("/delivery-ms/{user}/{id}")).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = app.get(&format!("/delivery-ms/{user}/{id}")).await;
    panic!(
        "order {id} not on the delivery view within 15 s: {} {}",
        last.status, last.text
    );
}

/// Deletes the test's topic under the running system.
async fn delete_the_topic(kafka: &KafkaSource) {
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect");
    client
        .controller_client()
        .expect("controller")
        .delete_topic(&kafka.topic, 5_000)
        .await
        .expect("delete the topic");
}

/// The runbook's remedy: publish the whole log again, rebuild the
/// delivery model from the topic; the partitions resume by themselves.
async fn republish_and_rebuild(app: &TestApp, kafka: &KafkaSource) {
    sqlx::query(
        "INSERT INTO outbox (position, stream_id)
         SELECT position, stream_id FROM events ON CONFLICT (position) DO NOTHING",
    )
    .execute(&app.db.pool)
    .await
    .expect("publish the log again");
    eventually(Duration::from_secs(20), "the outbox drained", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    delivery::rebuild(&app.db.pool, kafka, None, |_| {})
        .await
        .expect("rebuild from the recreated topic");
    eventually(
        Duration::from_secs(30),
        "the partitions resumed",
        || async {
            delivery::stopped_partitions(&app.db.pool, &kafka.topic)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_and_recreated_stops_its_partitions_until_the_operator_repairs() {
    let kafka = test_kafka();
    let app = app_without_relay(&kafka).await;
    let relay = TestRelay::start(&app.db.pool, &kafka);
    let mut before = Vec::new();
    for _ in 0..9 {
        let id = app.place_ok("uma").await;
        delivered(&app, "uma", &id).await;
        before.push(id);
    }
    delete_the_topic(&kafka).await;
    // A producer of a deleted topic gets an error from Kafka and reconnects
    // (Tansu 0.6 acknowledges it silently instead): the relay, started
    // again, recreates the topic for the next orders, whose offsets start at
    // 0 again, below what the delivery side applied.
    relay.stop().await;
    let relay = TestRelay::start(&app.db.pool, &kafka);
    let after = app.place_ok("uma").await;
    let stopped = eventually(Duration::from_secs(30), "a stopped partition", || async {
        let stopped = delivery::stopped_partitions(&app.db.pool, &kafka.topic)
            .await
            .ok()?;
        (!stopped.is_empty()).then_some(stopped)
    })
    .await;
    assert!(
        stopped[0].1.contains("recreated"),
        "the reason says what happened: {}",
        stopped[0].1
    );
    assert!(app
        .get("/metrics")
        .await
        .text
        .contains("delivery_partition_stopped{partition="));

    republish_and_rebuild(&app, &kafka).await;
    for id in before.iter().chain([&after]) {
        delivered(&app, "uma", id).await;
    }
    let next = app.place_ok("uma").await;
    delivered(&app, "uma", &next).await;
    assert!(projections::verify::delivery(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
    relay.stop().await;
}

/// A durable Tansu broker in `dir` whose maintenance runs every second, and
/// a topic on it whose records older than ten minutes go (by their
/// timestamps: the events').
async fn start_a_broker_with_retention(dir: &Path) -> (DurableBroker, KafkaSource) {
    let mut broker = DurableBroker::new(dir, None)
        .expect("a broker")
        .with_maintenance_every("1s");
    broker.start().await.expect("start Tansu");
    let kafka = KafkaSource {
        brokers: vec![broker.address()],
        retention_ms: 600_000,
        security: Default::default(),
        ..test_kafka()
    };
    (broker, kafka)
}

/// Six orders recorded an hour ago (as a backlog published late would be),
/// for user `olga`; their ids.
async fn place_six_old_orders(app: &TestApp) -> Vec<uuid::Uuid> {
    let mut old = Vec::new();
    for i in 0..6 {
        let id = domain::OrderId::generate().as_uuid();
        sqlx::query(
            "WITH e AS (
                 INSERT INTO events (stream_id, version, event_id, event_type, schema_version,
                                     payload, recorded_at)
                 VALUES ($1, 1, $2, 'OrderPlaced', 2, $3, now() - interval '1 hour')
                 RETURNING position)
             INSERT INTO outbox (position, stream_id) SELECT position, $1 FROM e",
        )
        .bind(id)
        .bind(uuid::Uuid::now_v7())
        .bind(placed_payload(id, "olga", "latte", 4000 + i, 1))
        .execute(&app.db.pool)
        .await
        .expect("an old order");
        old.push(id);
    }
    old
}

/// Waits until retention has removed the six old records from the topic.
async fn await_retention(kafka: &KafkaSource) {
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect");
    eventually(
        Duration::from_secs(30),
        "the old records deleted",
        || async {
            let mut gone = 0;
            for p in 0..kafka.partitions {
                let pc = client
                    .partition_client(
                        kafka.topic.clone(),
                        p,
                        rskafka::client::partition::UnknownTopicHandling::Retry,
                    )
                    .await
                    .ok()?;
                let (records, hwm) = pc.fetch_records(0, 1..1_000_000, 0).await.ok()?;
                gone += records.first().map_or(hwm, |r| r.offset);
            }
            (gone == 6).then_some(())
        },
    )
    .await;
}

/// The rebuild refuses, naming the six records gone, then runs when told to
/// accept an incomplete model; returns the generation it built.
async fn rebuild_refused_then_accepted(app: &TestApp, kafka: &KafkaSource) -> i32 {
    let refused = delivery::rebuild(&app.db.pool, kafka, None, |_| {}).await;
    let Err(ProjectionError::IncompleteTopic { gone }) = refused else {
        panic!("the rebuild must refuse: {refused:?}");
    };
    assert_eq!(gone.iter().map(|(_, n)| n).sum::<i64>(), 6, "{gone:?}");
    let (_, generation, _) = delivery::rebuild(&app.db.pool, kafka, Some("tester"), |_| {})
        .await
        .expect("an accepted incomplete rebuild");
    generation
}

/// Moves the first old order (whose placement is gone from the model) and
/// the first new one on, and waits until the new one's move is applied.
async fn move_an_old_and_a_new_order(app: &TestApp, old: &[uuid::Uuid], new: &[String]) {
    let old_order = old[0].to_string();
    app.move_to("olga", &old_order, "preparing", &[])
        .await
        .ok(200);
    let moved_new = new[0].clone();
    app.move_to("nina", &moved_new, "preparing", &[])
        .await
        .ok(200);
    eventually(
        Duration::from_secs(15),
        "the new order's move applied",
        || async {
            let reply = app.get(&format!("/delivery-ms/nina/{moved_new}")).await;
            (reply.json()["status"] == "preparing").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_from_a_topic_thinned_by_retention_refuses_unless_accepted() {
    let scratch = e2e::scratch_dir("tansu-");
    let (mut broker, kafka) = start_a_broker_with_retention(&scratch.path().join("kafka")).await;
    let app = app_on(kafka.clone()).await;
    // Six orders recorded an hour ago, then three of today.
    let old = place_six_old_orders(&app).await;
    let mut new = Vec::new();
    for _ in 0..3 {
        new.push(app.place_ok("nina").await);
    }
    // Retention removes the old records from the topic.
    await_retention(&kafka).await;

    let generation = rebuild_refused_then_accepted(&app, &kafka).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    assert!(held::incomplete(&mut conn, "delivery", generation)
        .await
        .expect("incomplete?"));
    let rows = delivery::all_rows(&app.db.pool).await.expect("rows");
    assert_eq!(rows.len(), 3, "only what the topic still holds");

    // A later move of an order whose placement is gone is counted as such,
    // not held back as corruption.
    move_an_old_and_a_new_order(&app, &old, &new).await;
    assert!(held::list(&mut conn, "delivery")
        .await
        .expect("held")
        .is_empty());
    assert!(projections::verify::delivery(&app.db.pool)
        .await
        .expect("verify")
        .is_empty());
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_to_publish_when_the_partition_count_changed() {
    let kafka = test_kafka();
    let app = app_without_relay(&kafka).await;
    // The topic was published with 3 partitions; now it has 5 (Tansu has no
    // CreatePartitions: deleted and recreated with more).
    sqlx::query("INSERT INTO kafka_topics (topic, partitions) VALUES ($1, 3)")
        .bind(&kafka.topic)
        .execute(&app.db.pool)
        .await
        .expect("record the count");
    let client = infra::kafka::connect(&kafka.brokers, Duration::from_secs(10))
        .await
        .expect("connect");
    infra::kafka::ensure_topic(
        &client,
        &kafka.topic,
        &infra::kafka::TopicSettings {
            partitions: 5,
            ..kafka.topic_settings()
        },
    )
    .await
    .expect("a topic with 5 partitions");
    app.place_ok("pat").await;
    let relay = TestRelay::start(&app.db.pool, &kafka);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.db.outbox().await, 1, "nothing published");
    assert!(app
        .get("/metrics")
        .await
        .text
        .contains("relay_partition_count_mismatch 1"));
    relay.stop().await;
}
