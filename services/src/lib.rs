//! The services of the coffee-order system: the event store's write side, the
//! command handler, the HTTP APIs and the configuration of the `orders` binary.

#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
mod batch;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod db;
pub mod http;
pub mod menu;
pub mod metrics;
pub mod relay;
pub mod shutdown;
pub mod store;
pub mod stores;
pub mod telemetry;
pub mod timing;
pub mod view;
pub mod workers;
