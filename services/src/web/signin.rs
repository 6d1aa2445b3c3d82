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

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use domain::UserId;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, RequestTokenError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tower_sessions::{Expiry, Session};

use crate::auth::{Authenticator, Identity, Roles, TokenError};
use crate::http::error::ApiError;
use crate::http::AppState;

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

/// The session key of a signed-in user.
const USER: &str = "user";
/// The session key of a sign-in in flight.
const PENDING: &str = "sign_in";
/// How long a started sign-in may take.
const PENDING_FOR: time::Duration = time::Duration::minutes(10);
/// A session never outlives this, whatever the access token says.
const LONGEST: Duration = Duration::from_secs(12 * 3600);
/// How long the provider's discovery document is trusted before it is
/// fetched again (its keys rotate).
const METADATA_TTL: Duration = Duration::from_secs(300);
/// The longest `next` kept (a path on this site).
const NEXT_MAX: usize = 200;

/// A signed-in browser, as its session holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    user: String,
    staff: bool,
    operator: bool,
    /// Echoed by the page in `X-CSRF-Token` on every write.
    csrf: String,
    /// The provider's ID token, for ending the provider's session too.
    id_token: String,
    /// Unix seconds: the access token's end.
    expires_at: i64,
}

impl SignedIn {
    /// The caller this session stands for; `None` when it expired or no
    /// longer names a valid user.
    pub fn identity(&self) -> Option<Identity> {
        if self.expires_at <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return None;
        }
        Some(Identity {
            user: UserId::parse(&self.user).ok()?,
            roles: Roles {
                staff: self.staff,
                operator: self.operator,
            },
        })
    }

    /// Whether `headers` carry this session's CSRF token (compared in
    /// constant time).
    pub fn csrf_matches(&self, headers: &HeaderMap) -> bool {
        let Some(sent) = headers.get(CSRF_HEADER).map(|v| v.as_bytes()) else {
            return false;
        };
        let expected = self.csrf.as_bytes();
        sent.len() == expected.len()
            && sent
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The header a page's writes carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in user of `session`, if any (and not expired).
pub async fn signed_in(session: &Session) -> Result<Option<SignedIn>, anyhow::Error> {
    let user: Option<SignedIn> = session
        .get(USER)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the session: {e}"))?;
    Ok(user.filter(|u| u.identity().is_some()))
}

/// A sign-in in flight.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

/// The client as discovery builds it: an authorization endpoint, maybe a
/// token and a userinfo endpoint.
type WebClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider's side of the pages' sign-in: its discovery document
/// (cached), the client, and the access token check.
#[derive(Clone)]
pub struct SignIn {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    after_logout: PostLogoutRedirectUrl,
    /// Redirects are not followed (a provider's answer that redirects is
    /// an error, not an invitation to fetch another URL).
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(Instant, Arc<ProviderMetadataWithLogout>)>>,
    authenticator: Authenticator,
}

impl SignIn {
    /// The sign-in of a service reached at `public_url` (no trailing slash).
    pub fn new(
        config: &WebConfig,
        issuer: &str,
        public_url: &str,
        authenticator: Authenticator,
    ) -> anyhow::Result<SignIn> {
        let public_url = public_url.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(SignIn {
            inner: Arc::new(Inner {
                issuer: IssuerUrl::new(issuer.to_owned())?,
                client_id: ClientId::new(config.client_id.clone()),
                client_secret: ClientSecret::new(config.client_secret.clone()),
                redirect: RedirectUrl::new(format!("{public_url}/auth/callback"))?,
                after_logout: PostLogoutRedirectUrl::new(format!("{public_url}/"))?,
                http,
                metadata: tokio::sync::Mutex::new(None),
                authenticator,
            }),
        })
    }

    /// Where the provider sends browsers back.
    pub fn redirect_uri(&self) -> &str {
        self.inner.redirect.as_str()
    }

    /// The provider's discovery document (and keys), fetched at most every
    /// [`METADATA_TTL`] unless `fresh`.
    async fn metadata(&self, fresh: bool) -> Result<Arc<ProviderMetadataWithLogout>, ApiError> {
        let mut cached = self.inner.metadata.lock().await;
        if let Some((at, metadata)) = cached.as_ref() {
            if !fresh && at.elapsed() < METADATA_TTL {
                return Ok(metadata.clone());
            }
        }
        let metadata = ProviderMetadataWithLogout::discover_async(
            self.inner.issuer.clone(),
            &self.inner.http,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read the identity provider's discovery document");
            ApiError::SignInUnavailable(
                "the identity provider cannot be reached; try again shortly",
            )
        })?;
        let metadata = Arc::new(metadata);
        *cached = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(&self, metadata: &ProviderMetadataWithLogout) -> WebClient {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            self.inner.client_id.clone(),
            Some(self.inner.client_secret.clone()),
        )
        .set_redirect_uri(self.inner.redirect.clone())
    }
}

fn session_error(e: tower_sessions::session::Error) -> ApiError {
    ApiError::Unavailable(anyhow::anyhow!("the session store: {e}"))
}

fn sign_in_of(state: &AppState) -> Result<&SignIn, ApiError> {
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
    let metadata = sign_in.metadata(false).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf_state, nonce) = sign_in
        .client(&metadata)
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let pending = Pending {
        state: csrf_state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next,
    };
    session
        .insert(PENDING, pending)
        .await
        .map_err(session_error)?;
    if signed_in(&session).await.ok().flatten().is_none() {
        session.set_expiry(Some(Expiry::OnInactivity(PENDING_FOR)));
    }
    Ok(Redirect::to(url.as_str()).into_response())
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
    let Some(code) = param(query, "code").filter(|c| !c.is_empty() && c.len() <= 2048) else {
        return Err(ApiError::SignInFailed(
            "the identity provider sent no code; start again",
        ));
    };
    let metadata = sign_in.metadata(false).await?;
    let client = sign_in.client(&metadata);
    let exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|_| {
            ApiError::SignInUnavailable("the identity provider publishes no token endpoint")
        })?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier));
    let tokens = exchange
        .request_async(&sign_in.inner.http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => {
                tracing::info!(error = %answer.error(), "the identity provider refused the sign-in code");
                ApiError::SignInFailed("the identity provider refused the sign-in; start again")
            }
            other => {
                tracing::warn!(error = %other, "cannot exchange the sign-in code");
                ApiError::SignInUnavailable(
                    "the identity provider cannot be reached; try again shortly",
                )
            }
        })?;
    let id_token = tokens.id_token().ok_or(ApiError::SignInFailed(
        "the identity provider sent no ID token",
    ))?;
    let nonce = Nonce::new(pending.nonce);
    // Its keys may have rotated since the document was read: once more with
    // a fresh one before refusing.
    let verified = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .cloned();
    let (client, claims) = match verified {
        Ok(claims) => (client, claims),
        Err(first) => {
            let metadata = sign_in.metadata(true).await?;
            let client = sign_in.client(&metadata);
            let claims = {
                let verifier = client.id_token_verifier();
                let claims = id_token.claims(&verifier, &nonce).map_err(|e| {
                    tracing::info!(error = %first, again = %e, "refused an ID token");
                    ApiError::SignInFailed("the identity provider's ID token did not verify")
                })?;
                claims.clone()
            };
            (client, claims)
        }
    };
    if let Some(expected) = claims.access_token_hash() {
        let verifier = client.id_token_verifier();
        let actual = id_token
            .signing_alg()
            .ok()
            .zip(id_token.signing_key(&verifier).ok())
            .and_then(|(alg, key)| {
                AccessTokenHash::from_token(tokens.access_token(), alg, key).ok()
            });
        if actual.as_ref() != Some(expected) {
            return Err(ApiError::SignInFailed(
                "the access token does not match the ID token",
            ));
        }
    }
    let identity = sign_in
        .inner
        .authenticator
        .verify(tokens.access_token().secret())
        .await
        .map_err(|why| match why {
            TokenError::KeysUnavailable => ApiError::IdentityProviderUnavailable,
            why => {
                tracing::info!(reason = %why, "refused the access token of a browser sign-in");
                ApiError::SignInFailed(
                    "the identity provider's access token is not one this service accepts",
                )
            }
        })?;
    let lifetime = tokens
        .expires_in()
        .unwrap_or(Duration::from_secs(3600))
        .min(LONGEST);
    let expires_at = time::OffsetDateTime::now_utc() + lifetime;
    let user = SignedIn {
        user: identity.user.to_string(),
        staff: identity.roles.staff,
        operator: identity.roles.operator,
        csrf: CsrfToken::new_random().secret().clone(),
        id_token: id_token.to_string(),
        expires_at: expires_at.unix_timestamp(),
    };
    // A new id for the signed-in session: one planted before sign-in is
    // worth nothing after it.
    session.cycle_id().await.map_err(session_error)?;
    session.insert(USER, user).await.map_err(session_error)?;
    session.set_expiry(Some(Expiry::AtDateTime(expires_at)));
    tracing::info!(user = %identity.user, staff = identity.roles.staff, "signed in through the browser");
    Ok(Redirect::to(&pending.next).into_response())
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
        if let Ok(metadata) = sign_in.metadata(false).await {
            if let Some(end) = metadata.additional_metadata().end_session_endpoint.clone() {
                let mut request = LogoutRequest::from(end)
                    .set_client_id(sign_in.inner.client_id.clone())
                    .set_post_logout_redirect_uri(sign_in.inner.after_logout.clone());
                if let Ok(id_token) = user.id_token.parse::<CoreIdToken>() {
                    request = request.set_id_token_hint(&id_token);
                }
                redirect_to = request.http_get_url().to_string();
            }
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

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let user = SignedIn {
            user: "alice".into(),
            staff: false,
            operator: false,
            csrf: "token-123".into(),
            id_token: String::new(),
            expires_at: i64::MAX,
        };
        let mut headers = HeaderMap::new();
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-12".parse().expect("a header value"));
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-123".parse().expect("a header value"));
        assert!(user.csrf_matches(&headers));
        let expired = SignedIn {
            expires_at: 0,
            ..user
        };
        assert!(expired.identity().is_none());
    }
}
