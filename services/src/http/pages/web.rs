//! What the pages need at run time ([`Web`]): the sign-in client, the
//! session store and its cookie, and the live feed's hub.

use std::time::Duration;

use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{ExpiredDeletion, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

use super::feed;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "orders_session";

/// What the pages need at run time.
#[derive(Clone)]
pub struct Web {
    /// `None`: no web client configured (the pages show, sign-in answers 503).
    pub sign_in: Option<crate::auth::oidc::OidcClient>,
    pub sessions: Sessions,
    /// Cookies only over TLS.
    pub secure: bool,
    pub live: feed::Live,
}

impl Web {
    pub fn new(
        pools: &crate::db::Pools,
        sign_in: Option<crate::auth::oidc::OidcClient>,
        secure: bool,
        live: feed::Live,
    ) -> anyhow::Result<Web> {
        Ok(Web {
            sign_in,
            sessions: Sessions {
                reads: store(pools.reads.clone())?,
                writes: store(pools.writes.clone())?,
            },
            secure,
            live,
        })
    }

    /// The session layer: an HttpOnly, SameSite=Lax cookie (Secure under
    /// TLS) naming a row of `web.sessions`. A session is stored only once
    /// something is put in it: API clients with bearer tokens never get one.
    /// Its `Path` is the product's (`/` or the prefix).
    pub fn session_layer(&self, path: &str) -> SessionManagerLayer<Sessions> {
        SessionManagerLayer::new(self.sessions.clone())
            .with_name(SESSION_COOKIE)
            .with_http_only(true)
            // Lax, not Strict: the provider's redirect back to the callback
            // is a cross-site navigation that must carry the cookie.
            .with_same_site(SameSite::Lax)
            .with_secure(self.secure)
            .with_path(path.to_owned())
    }

    /// Deletes expired sessions every five minutes until `shutdown`.
    pub async fn sweep_sessions(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(300)) => {}
            }
            if let Err(e) = self.sessions.writes.delete_expired().await {
                tracing::warn!(error = %e, "cannot delete expired sessions");
            }
        }
    }
}

fn store(pool: sqlx::PgPool) -> anyhow::Result<PostgresStore> {
    PostgresStore::new(pool)
        .with_schema_name("web")
        .and_then(|s| s.with_table_name("sessions"))
        .map_err(|e| anyhow::anyhow!("the session table: {e}"))
}

/// The session table over two pools: every request that carries a cookie
/// reads its session, so reads take the read budget's connections; only
/// signing in, changing and signing out write, on the write budget's. A
/// request with a made-up cookie costs one indexed read, never a writer.
#[derive(Debug, Clone)]
pub struct Sessions {
    reads: PostgresStore,
    writes: PostgresStore,
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.writes.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.writes.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.reads.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.writes.delete(id).await
    }
}
