//! The live projections announce what they changed (PostgreSQL NOTIFY,
//! committed with the batch): a listener on another connection, sharing
//! nothing with the app but the database, hears of every order the order
//! read model and the delivery read model changed.

use std::time::Duration;

use e2e::{spawn_app_opts, test_kafka, AppOptions};
use infra::notify::{parse, DELIVERY, ORDERS};
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// Waits until `listener` has heard of `order` on every one of `channels`.
async fn heard(listener: &mut PgListener, channels: &[&str], order: Uuid) {
    let mut waiting: Vec<&str> = channels.to_vec();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !waiting.is_empty() {
            let n = listener.recv().await.expect("a notification");
            if parse(n.payload()).contains(&order) {
                waiting.retain(|c| *c != n.channel());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no notification for {order} on {waiting:?}"));
}

#[tokio::test]
async fn both_read_models_announce_the_orders_they_changed_after_commit() {
    let app = spawn_app_opts(AppOptions {
        kafka: Some(test_kafka()),
        ..AppOptions::default()
    })
    .await;
    let mut listener = PgListener::connect(&app.db.url).await.expect("listen");
    listener
        .listen_all([ORDERS.name(), DELIVERY.name()])
        .await
        .expect("listen to both channels");

    let id: Uuid = app.place_ok("USER0001").await.parse().expect("a uuid");
    heard(&mut listener, &[ORDERS.name(), DELIVERY.name()], id).await;

    // A listener from now on hears only what commits from now on: the move.
    let mut after = PgListener::connect(&app.db.url).await.expect("listen");
    after
        .listen_all([ORDERS.name(), DELIVERY.name()])
        .await
        .expect("listen to both channels");
    app.move_to("USER0001", &id.to_string(), "preparing", &[])
        .await
        .ok(200);
    heard(&mut after, &[ORDERS.name(), DELIVERY.name()], id).await;
}
