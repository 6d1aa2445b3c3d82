//! What the write side (`services`) and the read models (`projections`)
//! both stand on, in a crate of its own so that neither reaches into the
//! other for plumbing, and nothing here knows of a projection or of the
//! HTTP edge:
//!
//! - [`rows`]: reading `events` rows back (the checked select list, once);
//! - [`notify`]: announcing a change with `NOTIFY`, and listening for it;
//! - [`wait`]: waiting for news, with backoff, until shutdown;
//! - [`lease`] and [`lock`]: leadership with fencing, and session locks;
//! - [`kafka`] and [`broker`]: connections to the brokers, every request
//!   with a deadline;
//! - [`pg`]: what a PostgreSQL error means for a retry;
//! - [`failpoint`]: where a test may make the process die on purpose.

#![deny(unsafe_code)]

pub mod broker;
mod error;
pub mod failpoint;
pub mod kafka;
pub mod lease;
pub mod lock;
pub mod notify;
pub mod pg;
pub mod rows;
pub mod secret;
pub mod wait;

pub use error::{Error, Result};

/// Who this process is, in leases, audit records and hand-over requests:
/// the host, the process id and the build.
pub fn process_label() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!(
        "{host} pid {} (orders {})",
        std::process::id(),
        env!("CARGO_PKG_VERSION")
    )
}
