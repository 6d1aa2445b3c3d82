//! The pages (API.md, "Pages"): `/` for customers and `/board` for staff,
//! served by the service itself with their assets ([`assets`]), the
//! browser sign-in and its sessions ([`signin`]) and the live updates
//! ([`live`]). The pages call the same API, under the same rules, as any
//! client: the session cookie stands in for the bearer token.

pub mod assets;
pub mod live;
pub mod signin;

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::{ExpiredDeletion, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

use crate::http::access::Caller;
use crate::http::error::ApiError;
use crate::http::{Apis, AppState};

pub use signin::WebConfig;

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
    pub live: live::Live,
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
            live: live::Live::default(),
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

/// The pages' routes for the APIs this process serves.
pub fn router(apis: Apis) -> Router<AppState> {
    let mut router = Router::new()
        .route("/assets/{name}", get(assets::serve))
        .route("/auth/login", get(signin::login))
        .route("/auth/callback", get(signin::callback))
        .route("/auth/session", get(signin::current))
        .route("/auth/logout", post(signin::logout));
    if matches!(apis, Apis::Order | Apis::All) {
        router = router
            .route("/", get(customer_page))
            .route("/events/orders", get(live::orders));
    }
    if matches!(apis, Apis::Delivery | Apis::All) {
        router = router
            .route("/board", get(board_page))
            .route("/events/board", get(live::board));
    }
    router
}

/// `GET /`: the customer page (it asks `/auth/session` who is signed in).
async fn customer_page(request: HeaderMap) -> Response {
    assets::CUSTOMER_PAGE.respond(&request)
}

/// `GET /board`: staff only. Signed out: to the sign-in, and back here;
/// signed in without the staff role: 403, with a page that says so.
async fn board_page(caller: Result<Caller, ApiError>, request: HeaderMap) -> Response {
    match caller {
        Ok(caller) if caller.staff().is_ok() => assets::BOARD_PAGE.respond(&request),
        Ok(_) => assets::FORBIDDEN_PAGE.respond_with(StatusCode::FORBIDDEN, &request),
        Err(ApiError::Unauthenticated) => Redirect::to("/auth/login?next=/board").into_response(),
        Err(other) => other.into_response(),
    }
}

/// The headers every answer carries: a Content-Security-Policy that allows
/// only this origin's scripts and styles (no inline script or style, no
/// `eval`), no framing, no MIME sniffing, no referrer to other sites.
pub fn security_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                 object-src 'none'",
            ),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ]
}
