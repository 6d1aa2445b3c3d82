//! Sign-in for the pages: OpenID Connect authorization code flow with PKCE
//! (`openidconnect`) against the issuer whose access tokens the API already
//! accepts, and a server-side session (`tower-sessions`, stored in
//! PostgreSQL: `web.sessions`) behind an HttpOnly, SameSite=Lax cookie.
//!
//! - `GET /auth/login?next=/board` starts a sign-in: a fresh state, nonce
//!   and PKCE verifier travel in a sealed cookie of their own (HMAC, for
//!   the callback's path, ten minutes: no session row for a visitor) and the
//!   browser is sent to the provider's login page.
//! - `GET /auth/callback` finishes it: the state must be the cookie's, the
//!   code is exchanged with the verifier, the ID token is checked (signature,
//!   issuer, audience, nonce, access token hash) and the access token is
//!   checked exactly as a bearer token would be ([`crate::auth::Authenticator`]): the
//!   page's caller is who the API would see. The session id is replaced
//!   (no fixation) and the session ends at the access token's `exp`; every
//!   use judges the token again (the issuer's keys may have changed).
//! - `GET /auth/session` says who is signed in and gives the page the
//!   session's CSRF token, which every cookie-authenticated write must echo
//!   in `X-CSRF-Token` ([`crate::http::access`] checks it).
//! - `POST /auth/logout` ends the session and answers where to send the
//!   browser to end the provider's session too.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use openidconnect::CsrfToken;
use serde::Serialize;
use sha2::Digest;
use tower_sessions::cookie::{Cookie, SameSite};
use tower_sessions::{Expiry, Session};

use crate::auth::oidc::{OidcClient, Pending, SignInError, PENDING_FOR};
use crate::http::error::ApiError;
use crate::http::session::{signed_in, SignedIn, USER};
use crate::http::state::AppState;

/// The browser sign-in's settings (`OIDC_WEB_CLIENT_ID`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The client registered at the provider for these pages.
    pub client_id: String,
    pub client_secret: infra::secret::Secret,
    /// Where browsers reach this service (`https://orders.example.com`):
    /// the callback is `{public_url}/auth/callback`. `None`: the address it
    /// listens on (development).
    pub public_url: Option<String>,
}

/// The cookie of a sign-in in flight.
const PENDING_COOKIE: &str = "orders_sign_in";
/// A session never outlives this, whatever the access token says.
const LONGEST: time::Duration = time::Duration::hours(12);
/// The longest `next` kept (a path on this site).
const NEXT_MAX: usize = 200;

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Failed(why) => ApiError::SignInFailed(why),
            SignInError::Unavailable(why) => ApiError::SignInUnavailable(why),
            SignInError::KeysUnavailable => ApiError::IdentityProviderUnavailable,
        }
    }
}

fn session_error(e: tower_sessions::session::Error) -> ApiError {
    ApiError::Unavailable(anyhow::anyhow!("the session store: {e}"))
}

fn sign_in_of(state: &AppState) -> Result<&OidcClient, ApiError> {
    state
        .web
        .as_ref()
        .and_then(|web| web.sign_in.as_ref())
        .ok_or(ApiError::SignInUnavailable(
            "browser sign-in is not configured on this server (OIDC_WEB_CLIENT_ID)",
        ))
}

/// A query parameter's value (the first), if present.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A `next` that stays on this site: a path (`/board`), never another
/// origin (`//evil.example`, `/\evil.example`, `https://…`); `/` otherwise.
fn local_path(next: Option<String>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= NEXT_MAX
                && path.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            path
        }
        _ => "/".to_owned(),
    }
}

/// `GET /auth/login?next=PATH`: sends the browser to the provider. The
/// sign-in in flight travels in a sealed cookie of its own, not a session:
/// nothing is written for a visitor until they have signed in.
pub async fn login(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let sign_in = sign_in_of(&state)?;
    let next = local_path(param(query.as_deref(), "next"));
    let (url, pending) = sign_in.start(next).await?;
    let cookie = pending_cookie(&state, sign_in.seal(&pending), PENDING_FOR);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response())
}

/// The pending sign-in's cookie: only the callback's path, only as long as
/// a sign-in may take (a zero `lifetime` removes it).
fn pending_cookie(state: &AppState, value: String, lifetime: Duration) -> String {
    let secure = state.web.as_ref().is_some_and(|web| web.secure);
    Cookie::build((PENDING_COOKIE, value))
        .path(state.prefix.join("/auth/callback"))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(time::Duration::seconds(
            i64::try_from(lifetime.as_secs()).unwrap_or(0),
        ))
        .build()
        .to_string()
}

/// The pending sign-in the browser brought back, if its cookie is sound.
fn pending_of(headers: &HeaderMap, sign_in: &OidcClient) -> Option<Pending> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == PENDING_COOKIE)
        .find_map(|c| sign_in.open(c.value()))
}

/// `GET /auth/callback?code=…&state=…`: finishes the sign-in. Whatever the
/// outcome, the sign-in in flight is spent: its cookie is removed.
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let sign_in = sign_in_of(&state)?;
    let Some(pending) = pending_of(&headers, sign_in) else {
        return Err(ApiError::SignInFailed(
            "no sign-in is in progress in this browser (it expired, or finished already); start again",
        ));
    };
    let spent = [(
        header::SET_COOKIE,
        pending_cookie(&state, String::new(), Duration::ZERO),
    )];
    let finished = finish(sign_in, &session, pending, query.as_deref()).await;
    // `next` is a path of the product's own: the browser goes to it under
    // the prefix.
    let finished = finished.map(|next| Redirect::to(&state.prefix.join(&next)));
    Ok((spent, finished).into_response())
}

/// The rest of the callback: the provider's answer checked, the session
/// written; where to send the browser (a path of the product's own).
async fn finish(
    sign_in: &OidcClient,
    session: &Session,
    pending: Pending,
    query: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(error) = param(query, "error") {
        tracing::info!(error = %error.chars().take(64).collect::<String>(), "sign-in refused or cancelled at the provider");
        return Ok("/".to_owned());
    }
    let given = param(query, "state").unwrap_or_default();
    if !same(given.as_bytes(), pending.state.as_bytes()) {
        return Err(ApiError::SignInFailed(
            "the sign-in answer does not belong to this browser's sign-in; start again",
        ));
    }
    let code = param(query, "code").unwrap_or_default();
    let next = pending.next.clone();
    let verified = sign_in.finish(pending, &code).await?;
    let identity = verified.identity;
    // The session ends with the access token it was given (its `exp`, as
    // verified), and never later than `LONGEST` from now.
    let longest = time::OffsetDateTime::now_utc() + LONGEST;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(identity.until)
        .map_err(|_| ApiError::SignInFailed("the access token's expiry is out of range"))?
        .min(longest);
    let user = SignedIn {
        user: identity.user.to_string(),
        csrf: CsrfToken::new_random().secret().clone(),
        id_token: verified.id_token,
        access_token: verified.access_token,
        expires_at: expires_at.unix_timestamp(),
    };
    // A new id for the signed-in session: one planted before sign-in is
    // worth nothing after it.
    session.cycle_id().await.map_err(session_error)?;
    session.insert(USER, user).await.map_err(session_error)?;
    session.set_expiry(Some(Expiry::AtDateTime(expires_at)));
    tracing::info!(user = %identity.user, staff = identity.roles.staff, "signed in through the browser");
    Ok(next)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Compare digests: equal length, constant time in the content.
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Who is signed in, for the page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub user_id: String,
    /// `staff`, `operator`.
    pub roles: Vec<&'static str>,
    /// Send it back in `X-CSRF-Token` on every write.
    pub csrf_token: String,
    /// When the session ends (sign in again then).
    pub expires_at: String,
    /// The stores whose orders the holder works on, in the chain's order:
    /// staff's (their token's stores claim; the default store when it names
    /// none), every store for operators; none for customers.
    pub stores: Vec<String>,
}

/// `GET /auth/session`: the signed-in user, or 401 (the session's access
/// token is judged as every use of the session judges it).
pub async fn current(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<SessionView>, ApiError> {
    let user = signed_in(&session)
        .await
        .map_err(ApiError::Unavailable)?
        .ok_or(ApiError::Unauthenticated)?;
    let auth = state
        .access
        .auth
        .as_ref()
        .ok_or(ApiError::Unauthenticated)?;
    let identity = user
        .judge(auth)
        .await
        .map_err(|_| ApiError::IdentityProviderUnavailable)?
        .ok_or(ApiError::Unauthenticated)?;
    let roles = [
        ("staff", identity.roles.staff),
        ("operator", identity.roles.operator),
    ]
    .into_iter()
    .filter_map(|(name, has)| has.then_some(name))
    .collect();
    let expires_at = time::OffsetDateTime::from_unix_timestamp(identity.until)
        .map(crate::view::format_api_time)
        .unwrap_or_default();
    let stores = if identity.roles.staff || identity.roles.operator {
        let chain = crate::stores::load(&state.reads)
            .await
            .map_err(crate::store::StoreError::from)?;
        works_at(&identity.stores, &chain)
    } else {
        Vec::new()
    };
    Ok(Json(SessionView {
        user_id: user.user,
        roles,
        csrf_token: user.csrf,
        expires_at,
        stores,
    }))
}

/// The stores of `scope`: the chain's in its order, then any the token
/// names that the chain does not have (yet), so a board can still be opened
/// for them.
fn works_at(scope: &crate::auth::StoreScope, chain: &domain::Stores) -> Vec<String> {
    let mut stores: Vec<String> = chain
        .all()
        .iter()
        .filter(|s| scope.includes(s.store_id.as_str()))
        .map(|s| s.store_id.to_string())
        .collect();
    if let crate::auth::StoreScope::Only(named) = scope {
        stores.extend(
            named
                .iter()
                .filter(|id| chain.get(id).is_none())
                .map(ToString::to_string),
        );
    }
    stores
}

/// Where to send the browser after signing out.
#[derive(Debug, Serialize)]
pub struct SignedOut {
    pub redirect_to: String,
}

/// `POST /auth/logout`: ends the session (a signed-in session's write: it
/// needs the CSRF token), and every live stream acting for it in every
/// process (`notify::SESSIONS`), and answers the provider's end-session URL,
/// or the customer page.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<SignedOut>, ApiError> {
    let user = signed_in(&session).await.ok().flatten();
    let id = session.id();
    session.flush().await.map_err(session_error)?;
    if let Some(id) = id {
        let ended = crate::http::session::ended_key(&id);
        if let Err(e) = infra::notify::SESSIONS
            .announce_name(&state.pool, &ended)
            .await
        {
            // The session row is gone: every request on it is refused; only
            // streams already open elsewhere run on until their token ends.
            tracing::warn!(error = %e, "cannot announce a sign-out to the live streams");
        }
    }
    let mut redirect_to = state.prefix.home();
    if let (Some(user), Ok(sign_in)) = (user, sign_in_of(&state)) {
        if let Some(url) = sign_in.logout_url(Some(&user.id_token)).await {
            redirect_to = url;
        }
    }
    Ok(Json(SignedOut { redirect_to }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_work_at_their_stores_in_the_chains_order_and_operators_at_every_one() {
        let store = |id: &str| domain::Store {
            store_id: domain::StoreId::parse(id).expect("an id"),
            name: id.to_uppercase(),
            open: true,
        };
        let chain = domain::Stores::new(vec![store("main"), store("gangnam"), store("jamsil")])
            .expect("stores");
        let only = |ids: &[&str]| {
            crate::auth::StoreScope::Only(
                ids.iter()
                    .map(|id| domain::StoreId::parse(id).expect("an id"))
                    .collect(),
            )
        };
        assert_eq!(
            works_at(&only(&["jamsil", "gangnam"]), &chain),
            ["gangnam", "jamsil"]
        );
        // A store the chain does not have (yet) is still the holder's.
        assert_eq!(
            works_at(&only(&["hongdae", "main"]), &chain),
            ["main", "hongdae"]
        );
        assert_eq!(
            works_at(&crate::auth::StoreScope::Every, &chain),
            ["main", "gangnam", "jamsil"]
        );
    }

    #[test]
    fn next_stays_on_this_site() {
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/a b",
            "",
        ] {
            assert_eq!(local_path(Some(bad.to_owned())), "/", "{bad}");
        }
        assert_eq!(local_path(Some("/board".to_owned())), "/board");
        assert_eq!(local_path(Some("/".repeat(NEXT_MAX + 1))), "/");
        assert_eq!(local_path(None), "/");
    }
}
