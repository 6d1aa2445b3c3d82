//! Faults of the relay: one killed between produce and delete, and two
//! relays at once while one of them dies.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use e2e::processes::terminate;
use e2e::{eventually, read_topic, spawn_app_opts, test_kafka, AppOptions};

use super::{delivery_rows, relay_process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_produce_and_delete_duplicates_nothing_in_the_read_model() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        relay: false,
        ..AppOptions::default()
    })
    .await;
    for i in 0..50 {
        let id = app.place_ok("sam").await;
        if i % 5 == 0 {
            app.move_to("sam", &id, "preparing", &[]).await.ok(200);
        }
    }
    let events = app.db.events().await;
    let mut crashing = relay_process(&app, Some("relay.after_produce:1")).await;
    let status = tokio::time::timeout(Duration::from_secs(30), crashing.wait())
        .await
        .expect("the relay dies at the failpoint")
        .expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted after the broker acknowledged"
    );
    assert_eq!(
        app.db.outbox().await,
        events,
        "nothing was marked published"
    );

    let mut relay = relay_process(&app, None).await;
    eventually(Duration::from_secs(30), "an empty outbox", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    terminate(&mut relay).await;
    let records = read_topic(app.kafka.as_ref().expect("kafka")).await;
    assert_eq!(
        records.len() as i64,
        2 * events,
        "every event was sent twice"
    );
    eventually(Duration::from_secs(10), "every record consumed", || async {
        let applied = projections::delivery::events_applied(&app.db.pool)
            .await
            .ok()?;
        (applied == 2 * events).then_some(())
    })
    .await;
    let (_, fold) = e2e::order_model_and_fold(&app.db.pool).await;
    let expected: BTreeMap<_, _> = fold.iter().map(|o| (o.order_id, o.version)).collect();
    assert_eq!(
        delivery_rows(&app).await,
        expected,
        "duplicates absorbed: the model equals the fold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_publish_every_event_in_order_even_when_one_dies() {
    let app = std::sync::Arc::new(
        spawn_app_opts(AppOptions {
            kafka: Some(test_kafka()),
            relay: false,
            ..AppOptions::default()
        })
        .await,
    );
    let mut first = relay_process(&app, None).await;
    let mut second = relay_process(&app, None).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                let id = app.place_ok(&format!("tw{t}")).await;
                app.move_to(&format!("tw{t}"), &id, "preparing", &[])
                    .await
                    .ok(200);
                app.move_to(&format!("tw{t}"), &id, "delivering", &[])
                    .await
                    .ok(200);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().await.expect("kill -9 one relay");
    for t in tasks {
        t.await.expect("writer");
    }
    eventually(Duration::from_secs(30), "an empty outbox", || async {
        (app.db.outbox().await == 0).then_some(())
    })
    .await;
    terminate(&mut second).await;

    let records = read_topic(app.kafka.as_ref().expect("kafka")).await;
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        let k = (r.key.clone(), r.envelope.version);
        if !seen.insert(k) {
            continue; // an at-least-once re-send
        }
        let prev = last.insert(r.key.clone(), r.envelope.version).unwrap_or(0);
        assert_eq!(
            r.envelope.version,
            prev + 1,
            "order {}: version {} after {prev}",
            r.key,
            r.envelope.version
        );
    }
    assert_eq!(seen.len() as i64, app.db.events().await, "no event lost");
}
