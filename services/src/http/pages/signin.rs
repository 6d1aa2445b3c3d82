//! Sign-in for the pages: OpenID Connect authorization code flow with PKCE
//! (`openidconnect`) against the issuer whose access tokens the API already
//! accepts, and a server-side session (`tower-sessions`, stored in
//! PostgreSQL: `web.sessions`) behind an HttpOnly, SameSite=Lax cookie.
//!
//! - `GET /auth/login?next=/board` starts a sign-in: a fresh state, nonce
//!   and PKCE verifier are kept in the browser's session and the browser is
//!   sent to the provider's login page.
//! - `GET /auth/callback` finishes it: the state must be the session's, the
//!   code is exchanged with the verifier, the ID token is checked (signature,
//!   issuer, audience, nonce, access token hash) and the access token is
//!   checked exactly as a bearer token would be ([`Authenticator`]): the
//!   page's caller is who the API would see. The session id is replaced
//!   (no fixation) and the session lives as long as the access token.
//! - `GET /auth/session` says who is signed in and gives the page the
//!   session's CSRF token, which every cookie-authenticated write must echo
//!   in `X-CSRF-Token` ([`crate::http::access`] checks it).
//! - `POST /auth/logout` ends the session and answers where to send the
//!   browser to end the provider's session too.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use openidconnect::CsrfToken;
use serde::Serialize;
use sha2::Digest;
use tower_sessions::{Expiry, Session};

use crate::auth::oidc::{OidcClient, Pending, SignInError};
use crate::http::error::ApiError;
use crate::http::session::{signed_in, SignedIn, USER};
use crate::http::state::AppState;

/// The browser sign-in's settings (`OIDC_WEB_CLIENT_ID`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The client registered at the provider for these pages.
    pub client_id: String,
    pub client_secret: String,
    /// Where browsers reach this service (`https://orders.example.com`):
    /// the callback is `{public_url}/auth/callback`. `None`: the address it
    /// listens on (development).
    pub public_url: Option<String>,
}

/// The session key of a sign-in in flight.
const PENDING: &str = "sign_in";
/// How long a started sign-in may take.
const PENDING_FOR: time::Duration = time::Duration::minutes(10);
/// A session never outlives this, whatever the access token says.
const LONGEST: Duration = Duration::from_secs(12 * 3600);
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

/// `GET /auth/login?next=PATH`: sends the browser to the provider.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let sign_in = sign_in_of(&state)?;
    let next = local_path(param(query.as_deref(), "next"));
    let (url, pending) = sign_in.start(next).await?;
    session
        .insert(PENDING, pending)
        .await
        .map_err(session_error)?;
    if signed_in(&session).await.ok().flatten().is_none() {
        session.set_expiry(Some(Expiry::OnInactivity(PENDING_FOR)));
    }
    Ok(Redirect::to(&url).into_response())
}

/// `GET /auth/callback?code=…&state=…`: finishes the sign-in.
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let sign_in = sign_in_of(&state)?;
    let query = query.as_deref();
    let pending: Option<Pending> = session.remove(PENDING).await.map_err(session_error)?;
    let Some(pending) = pending else {
        return Err(ApiError::SignInFailed(
            "no sign-in is in progress in this browser (it expired, or finished already); start again",
        ));
    };
    if let Some(error) = param(query, "error") {
        tracing::info!(error = %error.chars().take(64).collect::<String>(), "sign-in refused or cancelled at the provider");
        return Ok(Redirect::to("/").into_response());
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
    let lifetime = verified
        .expires_in
        .unwrap_or(Duration::from_secs(3600))
        .min(LONGEST);
    let expires_at = time::OffsetDateTime::now_utc() + lifetime;
    let user = SignedIn {
        user: identity.user.to_string(),
        staff: identity.roles.staff,
        operator: identity.roles.operator,
        csrf: CsrfToken::new_random().secret().clone(),
        id_token: verified.id_token,
        expires_at: expires_at.unix_timestamp(),
    };
    // A new id for the signed-in session: one planted before sign-in is
    // worth nothing after it.
    session.cycle_id().await.map_err(session_error)?;
    session.insert(USER, user).await.map_err(session_error)?;
    session.set_expiry(Some(Expiry::AtDateTime(expires_at)));
    tracing::info!(user = %identity.user, staff = identity.roles.staff, "signed in through the browser");
    Ok(Redirect::to(&next).into_response())
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
}

/// `GET /auth/session`: the signed-in user, or 401.
pub async fn current(session: Session) -> Result<Json<SessionView>, ApiError> {
    let user = signed_in(&session)
        .await
        .map_err(ApiError::Unavailable)?
        .ok_or(ApiError::Unauthenticated)?;
    let roles = [("staff", user.staff), ("operator", user.operator)]
        .into_iter()
        .filter_map(|(name, has)| has.then_some(name))
        .collect();
    let expires_at = time::OffsetDateTime::from_unix_timestamp(user.expires_at)
        .map(crate::view::format_api_time)
        .unwrap_or_default();
    Ok(Json(SessionView {
        user_id: user.user,
        roles,
        csrf_token: user.csrf,
        expires_at,
    }))
}

/// Where to send the browser after signing out.
#[derive(Debug, Serialize)]
pub struct SignedOut {
    pub redirect_to: String,
}

/// `POST /auth/logout`: ends the session (a signed-in session's write: it
/// needs the CSRF token) and answers the provider's end-session URL, or `/`.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<SignedOut>, ApiError> {
    let user = signed_in(&session).await.ok().flatten();
    session.flush().await.map_err(session_error)?;
    let mut redirect_to = "/".to_owned();
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
