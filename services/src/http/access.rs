//! Who may do what ("Who may do what" in API.md, the HTTP contract kept beside the repository): every request's bearer
//! token is checked once, here, by [`authenticate`], which also applies the
//! per-caller rate limit; handlers then take a [`Caller`] and ask it for the
//! permission they need. Routes that take no `Caller` (the operations
//! routes, the greeting) stay open.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::UserId;

use super::error::ApiError;
pub use super::limits::{Access, RateLimit, RateLimitConfig, RateLimits};
use super::state::AppState;
use crate::auth::{Authenticator, Identity, TokenError};

/// A request's caller, as [`authenticate`] found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off (development).
    Unchecked,
    Signed(Identity),
}

/// What `authenticate` left for the handler.
#[derive(Debug, Clone)]
enum Credentials {
    Verified(Identity),
    Refused(TokenError),
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.access.auth.is_none() {
            return Ok(Caller::Unchecked);
        }
        match parts.extensions.get::<Credentials>() {
            Some(Credentials::Verified(identity)) => Ok(Caller::Signed(identity.clone())),
            Some(Credentials::Refused(TokenError::KeysUnavailable)) => {
                Err(ApiError::IdentityProviderUnavailable)
            }
            Some(Credentials::Refused(why)) => Err(ApiError::InvalidToken(*why)),
            Some(Credentials::NotBearer) => Err(ApiError::NotBearer),
            None => Err(ApiError::Unauthenticated),
        }
    }
}

/// Who an event's metadata says asked: `customer:<id>` or `staff:<id>`
/// (`staff` alone, and the path's user, without authentication).
pub type Actor = String;

impl Caller {
    /// Acting on `user`'s own orders (placing, cancelling): only that user.
    /// Another customer gets 404, exactly as for a missing order; staff, who
    /// may see that the user exists, get 403 (they move orders on the
    /// delivery side).
    pub fn acts_for(&self, user: &UserId) -> Result<Actor, ApiError> {
        match self {
            Caller::Unchecked => Ok(format!("customer:{user}")),
            Caller::Signed(id) if id.user == *user => Ok(format!("customer:{user}")),
            Caller::Signed(id) if id.roles.staff => Err(ApiError::Forbidden(
                "only the customer may place or cancel their own orders; staff move orders on /delivery-ms",
            )),
            Caller::Signed(_) => Err(ApiError::OrderNotFound),
        }
    }

    /// Reading `user`'s orders: that user, or staff; anyone else gets 404.
    pub fn reads_for(&self, user: &UserId) -> Result<(), ApiError> {
        match self {
            Caller::Unchecked => Ok(()),
            Caller::Signed(id) if id.user == *user || id.roles.staff => Ok(()),
            Caller::Signed(_) => Err(ApiError::OrderNotFound),
        }
    }

    /// The delivery side: staff only (403 otherwise).
    pub fn staff(&self) -> Result<Actor, ApiError> {
        match self {
            Caller::Unchecked => Ok("staff".to_owned()),
            Caller::Signed(id) if id.roles.staff => Ok(format!("staff:{}", id.user)),
            Caller::Signed(_) => Err(ApiError::Forbidden("this request needs the staff role")),
        }
    }

    /// Operators' routes (`/metrics`): operators only (403 otherwise).
    pub fn operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Unchecked => Ok(()),
            Caller::Signed(id) if id.roles.operator => Ok(()),
            Caller::Signed(_) => Err(ApiError::Forbidden("this request needs the operator role")),
        }
    }
}

/// Checks the bearer token, if the request has one (else the session
/// cookie of a signed-in page), and the caller's rate limit. A refused token is not answered here: a route that needs no
/// caller (`/healthz`) serves the request anyway; one that does answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let mut credentials = match (&state.access.auth, authorization) {
        (Some(auth), Some(value)) => Some(credentials(auth, &value).await),
        _ => None,
    };
    // No bearer token: the pages' session cookie, if any. A write on it
    // must carry the session's CSRF token (another site's page can make the
    // browser send the cookie, never read the token).
    if credentials.is_none() && state.access.auth.is_some() {
        if let Some(session) = req.extensions().get::<tower_sessions::Session>().cloned() {
            match crate::http::session::signed_in(&session).await {
                Ok(Some(user)) => {
                    if !req.method().is_safe() && !user.csrf_matches(req.headers()) {
                        return ApiError::CsrfRejected.into_response();
                    }
                    credentials = user.identity().map(Credentials::Verified);
                }
                Ok(None) => {}
                Err(e) => return ApiError::Unavailable(e).into_response(),
            }
        }
    }
    if let Some(limits) = &state.access.limits {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let user = match &credentials {
            Some(Credentials::Verified(id)) => Some(&id.user),
            _ => None,
        };
        if let Err(wait) = limits.check(user, peer) {
            return ApiError::RateLimited { retry_after: wait }.into_response();
        }
    }
    if let Some(credentials) = credentials {
        req.extensions_mut().insert(credentials);
    }
    next.run(req).await
}

async fn credentials(auth: &Authenticator, value: &HeaderValue) -> Credentials {
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Credentials::NotBearer;
    };
    match auth.verify(token).await {
        Ok(identity) => Credentials::Verified(identity),
        Err(why) => {
            tracing::debug!(reason = %why, "refused a bearer token");
            metrics::counter!("http_tokens_refused_total", "reason" => refusal_label(why))
                .increment(1);
            Credentials::Refused(why)
        }
    }
}

/// A short, fixed label per refusal, for the metric.
fn refusal_label(why: TokenError) -> &'static str {
    match why {
        TokenError::Malformed => "malformed",
        TokenError::Algorithm => "algorithm",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Signature => "signature",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::Issuer => "issuer",
        TokenError::Audience => "audience",
        TokenError::MissingClaim => "missing_claim",
        TokenError::User => "user",
        TokenError::KeysUnavailable => "keys_unavailable",
    }
}
