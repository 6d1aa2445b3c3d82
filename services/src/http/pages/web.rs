//! What the pages need at run time ([`Web`]): the sign-in client, the
//! session store and its cookie, and the live feed's hub.

use std::time::Duration;

use tower_sessions::cookie::SameSite;
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
    pub sessions: PostgresStore,
    /// Cookies only over TLS.
    pub secure: bool,
    pub live: feed::Live,
}

impl Web {
    pub fn new(
        pool: sqlx::PgPool,
        sign_in: Option<crate::auth::oidc::OidcClient>,
        secure: bool,
    ) -> anyhow::Result<Web> {
        let sessions = PostgresStore::new(pool)
            .with_schema_name("web")
            .and_then(|s| s.with_table_name("sessions"))
            .map_err(|e| anyhow::anyhow!("the session table: {e}"))?;
        Ok(Web {
            sign_in,
            sessions,
            secure,
            live: feed::Live::default(),
        })
    }

    /// The session layer: an HttpOnly, SameSite=Lax cookie (Secure under
    /// TLS) naming a row of `web.sessions`. A session is stored only once
    /// something is put in it: API clients with bearer tokens never get one.
    pub fn session_layer(&self) -> SessionManagerLayer<PostgresStore> {
        SessionManagerLayer::new(self.sessions.clone())
            .with_name(SESSION_COOKIE)
            .with_http_only(true)
            // Lax, not Strict: the provider's redirect back to the callback
            // is a cross-site navigation that must carry the cookie.
            .with_same_site(SameSite::Lax)
            .with_secure(self.secure)
            .with_path("/")
    }

    /// Deletes expired sessions every five minutes until `shutdown`.
    pub async fn sweep_sessions(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(300)) => {}
            }
            if let Err(e) = self.sessions.delete_expired().await {
                tracing::warn!(error = %e, "cannot delete expired sessions");
            }
        }
    }
}
