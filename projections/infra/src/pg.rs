//! What a PostgreSQL error means for whoever retries: whether the database
//! could not be reached (down, restarting, overloaded, failing over) rather
//! than refusing the statement; and, after a failover, which pooled
//! connections may still lead to the old primary ([`stale`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Connection-level failures: the database is down, restarting, overloaded,
/// or this connection leads to a server that no longer takes writes (a
/// primary demoted by a failover: 25006, read-only transaction). Each is
/// also noted as a sign that the primary may have moved ([`stale`]).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    let unavailable = match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // Bytes that are not PostgreSQL's protocol: a load balancer with no
        // database behind it accepts the connection and closes it before
        // answering ("unexpected response from SSLRequest").
        sqlx::Error::Protocol(_) => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
        // 53300 too_many_connections, 08xxx connection exceptions, 25006
        // read_only_sql_transaction (a standby, or a demoted primary).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300" | "25006")
                || c.starts_with("08")
        }),
        _ => false,
    };
    if unavailable && !matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) {
        note_failover_sign();
    }
    unavailable
}

/// When this process last saw a sign that the primary may have moved: one
/// more than the nanoseconds since [`epoch`] (0: never).
static LAST_SIGN: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

fn note_failover_sign() {
    LAST_SIGN.store(since_epoch() + 1, Ordering::Release);
}

/// Whether a pooled connection made `age` ago predates the last sign of a
/// failover: it may lead to the old primary (behind a proxy or a DNS name
/// that has moved on), so the pool closes it rather than hand it out.
pub fn stale(age: Duration) -> bool {
    // The clock starts at the first look, so that connections made since
    // are dated on it.
    let now = since_epoch();
    let last = LAST_SIGN.load(Ordering::Acquire);
    if last == 0 {
        return false;
    }
    let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
    let made_at = now.saturating_sub(age);
    made_at + 1 < last
}

/// Whether a statement that failed with `error` *after it was sent* may have
/// taken effect: the connection broke or the server went away before its
/// answer arrived (an I/O error, a protocol error, a server shutting down or
/// a connection exception; a commit waiting for a synchronous standby when
/// its server is shut down has committed locally). An error the server
/// reported about the statement itself (a constraint, a deadlock, a
/// cancelled statement, bad data) means it rolled back; a pool timeout
/// means it was never sent.
///
/// A broken connection is also a sign that the server went away (or the
/// primary moved): the pool's other connections, made before it, are
/// closed rather than handed out ([`stale`]), so the next request connects
/// afresh instead of sending its write down another dead connection.
pub fn may_have_committed(error: &sqlx::Error) -> bool {
    let broken = match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 08xxx connection
        // exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| matches!(c.as_ref(), "57P01" | "57P02") || c.starts_with("08")),
        _ => false,
    };
    if broken {
        note_failover_sign();
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_made_before_a_failover_sign_are_stale_and_later_ones_not() {
        note_failover_sign();
        // Made long before the sign (before the process began, even).
        assert!(stale(Duration::from_secs(3600)));
        // Made just now, after it.
        assert!(!stale(Duration::ZERO));
    }
}
