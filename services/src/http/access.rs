//! Who may do what (API.md, "Who may do what"): every request's bearer
//! token is checked once, here, by [`authenticate`], which also applies the
//! per-caller rate limit; handlers then take a [`Caller`] and ask it for the
//! permission they need. Routes that take no `Caller` (the operations
//! routes, the greeting) stay open.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ApiError;
use super::AppState;
use crate::auth::{Authenticator, Identity, TokenError};

/// How callers are checked and limited, shared by every request.
#[derive(Clone, Default)]
pub struct Access {
    /// `None`: no issuer configured, development on loopback only; every
    /// request may do everything, as before authentication existed.
    pub auth: Option<Authenticator>,
    pub limits: Option<Arc<RateLimits>>,
}

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

/// Requests per second and burst, per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `None` (no limit) when `per_second` is 0; a burst below the rate is
    /// raised to it.
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
        Some(RateLimit { per_second, burst })
    }
}

/// The configured limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Per signed-in user.
    pub users: Option<RateLimit>,
    /// Per peer address, for requests without a valid token.
    pub peers: Option<RateLimit>,
}

/// The limiters: one budget per signed-in user, one per peer address for
/// requests without a valid token.
pub struct RateLimits {
    users: Option<DefaultKeyedRateLimiter<UserId>>,
    peers: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    /// The limiters, or `None` when nothing is limited.
    pub fn new(config: RateLimitConfig) -> Option<RateLimits> {
        let quota = |l: RateLimit| Quota::per_second(l.per_second).allow_burst(l.burst);
        if config.users.is_none() && config.peers.is_none() {
            return None;
        }
        Some(RateLimits {
            users: config
                .users
                .map(|l| DefaultKeyedRateLimiter::keyed(quota(l))),
            peers: config
                .peers
                .map(|l| DefaultKeyedRateLimiter::keyed(quota(l))),
        })
    }

    /// `Err(wait)` when the caller is over its budget.
    fn check(
        &self,
        credentials: Option<&Credentials>,
        peer: Option<IpAddr>,
    ) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        let denied = match (credentials, peer) {
            (Some(Credentials::Verified(id)), _) => self
                .users
                .as_ref()
                .and_then(|users| users.check_key(&id.user).err()),
            (_, Some(ip)) => self
                .peers
                .as_ref()
                .and_then(|peers| peers.check_key(&ip).err()),
            (_, None) => None,
        };
        match denied {
            Some(not_until) => Err(not_until.wait_time_from(now)),
            None => Ok(()),
        }
    }

    /// Forgets callers whose budget is full again, every minute until
    /// `shutdown` (the limiters' memory stays bounded by recent callers).
    pub async fn forget_idle(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            if let Some(users) = &self.users {
                users.retain_recent();
                users.shrink_to_fit();
            }
            if let Some(peers) = &self.peers {
                peers.retain_recent();
                peers.shrink_to_fit();
            }
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
            match crate::web::signin::signed_in(&session).await {
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
        if let Err(wait) = limits.check(credentials.as_ref(), peer) {
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
