//! Faults on the Kafka path: the broker down while orders arrive, the relay
//! killed between produce and delete, two relays at once.

mod brokers;
mod relays;

use std::collections::BTreeMap;
use std::process::Stdio;

use e2e::{orders_bin, TestApp};
use tokio::process::{Child, Command};

async fn delivery_rows(app: &TestApp) -> BTreeMap<uuid::Uuid, i32> {
    projections::delivery::all_rows(&app.db.pool)
        .await
        .expect("delivery rows")
        .into_iter()
        .map(|r| (r.order_id, r.version))
        .collect()
}

async fn relay_process(app: &TestApp, failpoint: Option<&str>) -> Child {
    let kafka = app.kafka.as_ref().expect("kafka");
    let mut cmd = Command::new(orders_bin());
    cmd.arg("relay")
        .env("DATABASE_URL", &app.db.url)
        .env("KAFKA_BROKERS", kafka.brokers.join(","))
        .env("KAFKA_TOPIC", &kafka.topic)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(f) = failpoint {
        cmd.env("ORDERS_FAILPOINT", f);
    }
    cmd.spawn().expect("start orders relay")
}
