//! Failpoints: places where a test can make the process die on purpose, to
//! prove that a crash there loses and duplicates nothing.
//!
//! `ORDERS_FAILPOINT=<name>` aborts the process the first time `<name>` is
//! reached; `ORDERS_FAILPOINT=<name>:<n>` the n-th time. The variable is read
//! once; unset, a failpoint costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The failpoint between a projection batch's apply and its commit.
pub const PROJECTION_BEFORE_COMMIT: &str = "projection.before_commit";

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("ORDERS_FAILPOINT").ok()?;
            let (name, at) = match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.trim().parse().ok()?),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process (no unwinding, no destructors, no commit) if the
/// failpoint `name` is armed and this is its n-th hit.
pub fn hit(name: &str) {
    if let Some(armed) = armed() {
        if armed.name == name && armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.at {
            tracing::error!(failpoint = name, "failpoint reached: aborting the process");
            std::process::abort();
        }
    }
}
