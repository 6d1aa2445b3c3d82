//! Every end-to-end test, as modules of one test binary: on 2 cores each
//! test binary links the whole workspace, so one binary links it once.
//! Each module is one behaviour area and reads as it did on its own;
//! the harness (database, broker topic, provider, app) is `e2e`, the
//! library beside this folder.

mod access;
mod access_ends;
mod bad_input;
mod bounded_input;
mod browser;
mod budgets;
mod cafe_orders;
mod chaos;
mod concurrency;
mod edge;
mod event_log;
mod frozen_leader;
mod group_commit;
mod held_release;
mod idempotency;
mod identity_edges;
mod kafka_delivery;
mod kafka_faults;
mod kafka_loss;
mod kafka_sasl;
mod live_changes;
mod lock_release;
mod menu;
mod metrics_and_tracing;
mod no_starvation;
mod openapi;
mod order_list;
mod orders_api;
mod outcome_unknown;
mod pages;
mod path_prefix;
mod pickup_numbers;
mod plans;
mod postgres_outage;
mod process;
mod projection_crash;
mod projection_gaps;
mod projection_ops;
mod projection_rebuild;
mod relay_pipeline;
mod restored_database;
mod schema_evolution;
mod tls;
mod tokens;
mod unexpected_records;
mod unreadable_events;
mod upgrade;
mod verify;
mod wake_up;
