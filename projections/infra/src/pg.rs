//! What a PostgreSQL error means for whoever retries: whether the database
//! could not be reached (down, restarting, overloaded) rather than refusing
//! the statement.

/// Connection-level failures: the database is down, restarting or overloaded.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
        // 53300 too_many_connections, 08xxx connection exceptions.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300") || c.starts_with("08")
        }),
        _ => false,
    }
}

/// Whether a statement that failed with `error` *after it was sent* may have
/// taken effect: the connection broke or the server went away before its
/// answer arrived (an I/O error, a protocol error, a server shutting down or
/// a connection exception; a commit waiting for a synchronous standby when
/// its server is shut down has committed locally). An error the server
/// reported about the statement itself (a constraint, a deadlock, a
/// cancelled statement, bad data) means it rolled back; a pool timeout
/// means it was never sent.
pub fn may_have_committed(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 08xxx connection
        // exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| matches!(c.as_ref(), "57P01" | "57P02") || c.starts_with("08")),
        _ => false,
    }
}
