//! The pages ("Pages" in API.md, the HTTP contract kept beside the repository): `/` for customers and `/board` for staff,
//! served by the service itself with their assets ([`assets`]), the
//! browser sign-in and its sessions ([`signin`]) and the live updates
//! ([`live`]). The pages call the same API, under the same rules, as any
//! client: the session cookie stands in for the bearer token.

pub mod assets;
pub mod feed;
pub mod live;
pub mod signin;
pub mod web;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::http::access::Caller;
use crate::http::error::ApiError;
use crate::http::state::{Apis, AppState};

use assets::Pages;
pub use signin::WebConfig;

pub use web::{Web, SESSION_COOKIE};

/// The pages' routes for the APIs this process serves, their links under
/// `prefix`.
pub fn router(apis: Apis, prefix: &crate::http::PathPrefix) -> Router<AppState> {
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
    router.layer(Extension(Arc::new(Pages::new(prefix))))
}

/// `GET /`: the customer page (it asks `/auth/session` who is signed in).
async fn customer_page(Extension(pages): Extension<Arc<Pages>>, request: HeaderMap) -> Response {
    pages.customer.respond(&request)
}

/// `GET /board`: staff only. Signed out: to the sign-in, and back here;
/// signed in without the staff role: 403, with a page that says so.
async fn board_page(
    State(state): State<AppState>,
    Extension(pages): Extension<Arc<Pages>>,
    caller: Result<Caller, ApiError>,
    request: HeaderMap,
) -> Response {
    match caller {
        Ok(caller) if caller.staff().is_ok() => pages.board.respond(&request),
        Ok(_) => pages
            .forbidden
            .respond_with(StatusCode::FORBIDDEN, &request),
        Err(ApiError::Unauthenticated) => {
            Redirect::to(&state.prefix.join("/auth/login?next=/board")).into_response()
        }
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
