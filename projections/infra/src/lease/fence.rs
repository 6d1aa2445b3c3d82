//! The fence a leader's writes carry: refused once the lease is no longer
//! this leader's (see the module above for why and how).

use std::sync::Arc;

use sqlx::PgConnection;

use super::Shared;
use crate::error::{Error, Result};

/// What a leader's writes carry: the lease's name and token.
#[derive(Debug, Clone)]
pub struct Fence(pub(super) Arc<Shared>);

impl Fence {
    /// In the caller's transaction: refuses with [`Error::Fenced`]
    /// unless the lease is still this leader's, and holds it (shared) until
    /// the transaction ends, so no takeover comes between this check and the
    /// commit.
    pub async fn check(&self, conn: &mut PgConnection) -> Result<()> {
        if self.0.lost.is_cancelled() {
            return Err(self.fenced());
        }
        let idle_limit = format!("{}ms", self.0.ttl.as_millis().max(1));
        let token = sqlx::query_scalar!(
            "SELECT l.token
               FROM leader_leases l,
                    set_config('idle_in_transaction_session_timeout', $2, true)
              WHERE l.name = $1
                FOR SHARE OF l",
            self.0.name,
            idle_limit,
        )
        .fetch_optional(conn)
        .await?;
        if token == Some(self.0.token) {
            Ok(())
        } else {
            metrics::counter!("leader_fenced_total", "lease" => self.0.name.clone()).increment(1);
            self.0.lose("a write was refused: another process took the lease over (this one was frozen or cut off)");
            Err(self.fenced())
        }
    }

    /// Whether the lease is certainly still this leader's by the local
    /// clock: renewed less than its time to live ago, and never found taken.
    /// For side effects the database cannot fence.
    pub fn held(&self) -> bool {
        !self.0.lost.is_cancelled() && self.0.renewed().elapsed() < self.0.ttl
    }

    /// Resolves once this leader knows it lost the lease.
    pub async fn lost(&self) {
        self.0.lost.cancelled().await;
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn token(&self) -> i64 {
        self.0.token
    }

    /// The error a leader steps down with once the lease is lost, or no
    /// longer certainly held by the local clock (then it is marked lost).
    pub fn fenced(&self) -> Error {
        self.0.lose(
            "its last renewal is older than its time to live (this process was frozen or cut off)",
        );
        Error::Fenced {
            lease: self.0.name.clone(),
        }
    }
}
