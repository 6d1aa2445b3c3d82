//! Who may do what ("Who may do what" in API.md, the HTTP contract kept beside the repository): every request's bearer
//! token is checked once, here, by [`authenticate`], which also applies the
//! per-caller rate limit; handlers then take a [`Caller`] and ask it for the
//! permission they need. Routes that take no `Caller` (the operations
//! routes, the greeting) stay open.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::UserId;

use super::error::ApiError;
pub use super::limits::{Access, RateLimit, RateLimitConfig, RateLimits};
use super::peer::ClientAddr;
use super::state::AppState;
use crate::auth::{Authenticator, Identity, StoreScope, TokenError};

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

/// A route open to anyone that tells a caller more (`/readyz` tells an
/// operator why): `None` without credentials, or with credentials refused.
impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
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

    /// Reading `user`'s orders: that user (all of them), or staff (those of
    /// the stores they work at); anyone else gets 404. The answer is the
    /// stores whose orders the caller may read.
    pub fn reads_for(&self, user: &UserId) -> Result<StoreScope, ApiError> {
        match self {
            Caller::Unchecked => Ok(StoreScope::Every),
            Caller::Signed(id) if id.user == *user => Ok(StoreScope::Every),
            Caller::Signed(id) if id.roles.staff => Ok(id.stores.clone()),
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

    /// The stores whose orders the caller may see and move on the delivery
    /// side (every store without authentication).
    pub fn stores(&self) -> StoreScope {
        match self {
            Caller::Unchecked => StoreScope::Every,
            Caller::Signed(id) => id.stores.clone(),
        }
    }

    /// The stores a delivery list or stream shows: one of the caller's
    /// (`asked`, a `?store=` value; another store is 403), or all of them.
    pub fn stores_asked(&self, asked: Option<&str>) -> Result<StoreScope, ApiError> {
        let scope = self.stores();
        let Some(asked) = asked.map(str::trim) else {
            return Ok(scope);
        };
        let store = domain::StoreId::parse(asked).map_err(|e| ApiError::InvalidQuery {
            field: "store",
            message: e.to_string(),
        })?;
        if !scope.includes(store.as_str()) {
            return Err(ApiError::Forbidden(
                "staff see the orders of the stores they work at",
            ));
        }
        Ok(StoreScope::Only(std::iter::once(store).collect()))
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
/// cookie of a signed-in page), and the caller's rate limits, ordered so
/// that a refusal costs less than an acceptance:
///
/// 1. a token verified before is taken from the cache (a hash and a map
///    lookup);
/// 2. anything costlier (a signature check, a session read) is first
///    charged to the client's address ([`super::peer`]), as is a request
///    without credentials: one address sending forged tokens or made-up
///    cookies is refused before it spends a signature check or a database
///    read;
/// 3. a verified caller is then charged to its own budget.
///
/// A refused token is not answered here: a route that needs no caller
/// (`/healthz`) serves the request anyway; one that does answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    let mut gate = Gate::new(&state, client);
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let mut credentials = None;
    let mut proof = None;
    if let (Some(auth), Some(value)) = (&state.access.auth, authorization) {
        credentials = Some(match bearer(&value) {
            None => Credentials::NotBearer,
            Some(token) => {
                proof = Some(Proof {
                    token: token.to_owned(),
                    session: None,
                });
                match auth.remembered(token) {
                    Some(identity) => Credentials::Verified(identity),
                    None => {
                        if let Err(wait) = gate.charge_client() {
                            return refused(wait);
                        }
                        verify(auth, token).await
                    }
                }
            }
        });
    }
    // No bearer token: the pages' session cookie, if any. A write on it
    // must carry the session's CSRF token (another site's page can make the
    // browser send the cookie, never read the token).
    if let (None, Some(auth)) = (&credentials, &state.access.auth) {
        let session = req.extensions().get::<tower_sessions::Session>().cloned();
        if let Some((session, id)) = session.and_then(|s| s.id().map(|id| (s, id))) {
            if let Err(wait) = gate.charge_client() {
                return refused(wait);
            }
            match crate::http::session::signed_in(&session).await {
                Ok(Some(user)) => {
                    if !req.method().is_safe() && !user.csrf_matches(req.headers()) {
                        return ApiError::CsrfRejected.into_response();
                    }
                    credentials = match user.judge(auth).await {
                        Ok(Some(identity)) => {
                            proof = Some(Proof {
                                token: user.access_token.clone(),
                                session: Some(crate::http::session::ended_key(&id)),
                            });
                            Some(Credentials::Verified(identity))
                        }
                        Ok(None) => None,
                        Err(why) => Some(Credentials::Refused(why)),
                    };
                }
                Ok(None) => {}
                Err(e) => return ApiError::Unavailable(e).into_response(),
            }
        }
    }
    let charged = match &credentials {
        Some(Credentials::Verified(identity)) => gate.charge_user(&identity.user),
        _ => gate.charge_client(),
    };
    if let Err(wait) = charged {
        return refused(wait);
    }
    if let Some(Credentials::Verified(_)) = &credentials {
        if let Some(proof) = proof {
            req.extensions_mut().insert(proof);
        }
    }
    if let Some(credentials) = credentials {
        req.extensions_mut().insert(credentials);
    }
    req.extensions_mut()
        .insert(crate::timing::AuthTook(started.elapsed()));
    next.run(req).await
}

/// How a verified caller proved who it is, for what acts for it longer
/// than one request (a live stream): the access token to judge again when
/// the issuer's keys change, and the session (by [`super::session::ended_key`])
/// whose sign-out ends it.
#[derive(Debug, Clone)]
pub struct Proof {
    pub token: String,
    pub session: Option<String>,
}

/// The rate limits one request is charged to, each at most once.
struct Gate<'a> {
    limits: Option<&'a RateLimits>,
    /// The client's bucket (its address, IPv6 by prefix).
    bucket: Option<IpAddr>,
    client_charged: bool,
}

impl<'a> Gate<'a> {
    fn new(state: &'a AppState, client: Option<IpAddr>) -> Gate<'a> {
        Gate {
            limits: state.access.limits.as_deref(),
            bucket: client.map(|ip| state.access.peers.bucket(ip)),
            client_charged: false,
        }
    }

    /// Charges the client's address, once per request; `Err(wait)` when it
    /// is over its budget.
    fn charge_client(&mut self) -> Result<(), Duration> {
        if self.client_charged {
            return Ok(());
        }
        self.client_charged = true;
        let (Some(limits), Some(bucket)) = (self.limits, self.bucket) else {
            return Ok(());
        };
        limits.check_peer(bucket)
    }

    /// Charges a verified caller's own budget.
    fn charge_user(&mut self, user: &UserId) -> Result<(), Duration> {
        match self.limits {
            Some(limits) => limits.check_user(user),
            None => Ok(()),
        }
    }
}

/// The answer to a caller over a budget.
fn refused(wait: Duration) -> Response {
    ApiError::RateLimited { retry_after: wait }.into_response()
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(value: &HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

async fn verify(auth: &Authenticator, token: &str) -> Credentials {
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
        TokenError::NotAccessToken => "not_access_token",
        TokenError::KeysUnavailable => "keys_unavailable",
    }
}
