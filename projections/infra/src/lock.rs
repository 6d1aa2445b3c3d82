//! Session-level advisory locks (one worker per projection, one rebuild at a
//! time) that never outlive their holder's intent. A session lock lives as
//! long as its connection: returned to the pool still holding it, a lock
//! would stay taken by an idle connection nobody uses, and every standby
//! would wait for it for ever. So a [`SessionLock`] gives its lock back on
//! every path: [`SessionLock::release`] unlocks and returns the connection
//! to the pool; on any other path (an error, a cancelled future, a panic)
//! the connection is closed instead of returned, which releases the lock
//! with it.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::Result;

/// Advisory lock namespaces (leadership is a lease, [`super::lease`]) (first key of the two-key form); the second key
/// is `hashtext(name)`.
pub const REBUILD_LOCK: i32 = 0x6f72_0002;
pub const INSTALL_LOCK: i64 = 0x6f72_0003;

/// An advisory lock `(namespace, hashtext(name))` held by a connection of
/// its own.
#[derive(Debug)]
pub struct SessionLock {
    conn: Option<PoolConnection<Postgres>>,
    namespace: i32,
    name: String,
}

impl SessionLock {
    /// Takes the lock if it is free (`None` when someone holds it).
    pub async fn try_acquire(pool: &PgPool, namespace: i32, name: &str) -> Result<Option<Self>> {
        let mut conn = pool.acquire().await?;
        let taken = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1, hashtext($2)) AS "taken!""#,
            namespace,
            name,
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(taken.then(|| SessionLock {
            conn: Some(conn),
            namespace,
            name: name.to_owned(),
        }))
    }

    /// The connection that holds the lock, for work done under it.
    ///
    /// # Panics
    /// Never: the connection is only taken out by `release` and `drop`,
    /// which consume the lock.
    #[allow(clippy::expect_used)]
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a session lock holds its connection until released")
    }

    /// Gives the lock back and the connection to the pool; if unlocking
    /// fails, the connection is closed (which gives the lock back too).
    pub async fn release(mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let unlocked = sqlx::query!(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            self.namespace,
            self.name,
        )
        .fetch_one(&mut *conn)
        .await;
        if unlocked.is_err() {
            drop(conn.detach());
        }
        unlocked.map(|_| ()).map_err(Into::into)
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not released on purpose: close the connection rather than let
            // the pool hand it out still holding the lock.
            drop(conn.detach());
        }
    }
}
