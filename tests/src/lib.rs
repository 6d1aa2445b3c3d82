//! Test harness for the end-to-end tests: every test gets its own fresh
//! database (migrated), the application built by the production assembly on
//! an ephemeral port, a typed client, a Kafka topic of its own. Postgres must
//! be reachable through `DATABASE_URL` (`just test` makes it so); a test
//! without it fails loudly, it never skips.

mod app;
mod binary;
mod callers;
pub mod certs;
pub mod cutting_proxy;
mod db;
mod fixtures;
mod kafka;
pub mod oidc;
pub mod processes;
pub mod proxy;
mod reply;
pub mod sessions;

pub use app::{
    spawn_app, spawn_app_opts, spawn_app_with, spawn_app_without_workers, spawn_orders_all,
    spawn_orders_all_on, AppOptions, As, Auth, Reply, TestApp,
};
pub use binary::{orders_all, orders_bin, run_orders};
pub use db::{database_url, TestDb};
pub use fixtures::{
    checkpoint, delivery_caught_up, eventually, hold_the_horizon, insert_event,
    order_model_and_fold, placed_payload, placed_payload_v1, projection_lease, wait_caught_up,
};
/// A directory of the test's own under the temp folder, removed when the
/// value is dropped: when the test ends, passing or failing.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a scratch directory")
}

pub use kafka::{produce_raw, read_topic, relay_options, test_kafka, TestRelay, TopicRecord};
