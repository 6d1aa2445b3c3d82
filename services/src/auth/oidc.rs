//! The OpenID Connect client of the pages' sign-in: the provider's discovery
//! document (cached), the authorization request with PKCE, state and nonce,
//! and the code exchange with every check of what comes back (the ID
//! token's signature, issuer, audience and nonce, the access token's hash,
//! and the access token itself exactly as a bearer token is checked by the
//! [`Authenticator`]). The HTTP side (sessions, redirects) is `http::pages::signin`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, RequestTokenError, TokenResponse,
};
use serde::{Deserialize, Serialize};

use super::{Authenticator, Identity, TokenError};

/// How long the provider's discovery document is trusted before it is
/// fetched again (its keys rotate).
const METADATA_TTL: Duration = Duration::from_secs(300);
/// The longest authorization code accepted.
const CODE_MAX: usize = 2048;

/// Why a sign-in did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The browser's answer, or what the provider sent, is not acceptable:
    /// start again.
    #[error("{0}")]
    Failed(&'static str),
    /// The provider cannot be reached (or answers nonsense): try later.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The provider's keys cannot be read to check the access token.
    #[error("the identity provider's keys cannot be read")]
    KeysUnavailable,
}

const UNREACHABLE: SignInError =
    SignInError::Unavailable("the identity provider cannot be reached; try again shortly");

/// A sign-in in flight, as the browser keeps it (in a sealed cookie,
/// [`OidcClient::seal`]) until the provider sends the browser back: no row
/// is written for a visitor who has not signed in.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    nonce: String,
    verifier: String,
    /// Where to send the browser once signed in (a path on this site).
    pub next: String,
    /// Unix seconds: when the sign-in started.
    started: i64,
}

/// How long a started sign-in may take.
pub const PENDING_FOR: Duration = Duration::from_secs(600);

/// What a finished sign-in proved.
#[derive(Debug)]
pub struct Verified {
    /// The caller the access token stands for, as the API would see it.
    pub identity: Identity,
    /// The provider's ID token, for ending the provider's session too.
    pub id_token: String,
    /// The access token: the session keeps it, to judge it again as a
    /// bearer token is judged (after the issuer's keys change).
    pub access_token: String,
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

/// The pages' client at the provider. Cheap to clone.
#[derive(Clone)]
pub struct OidcClient {
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

impl OidcClient {
    /// The client `client_id` of `issuer`, for a service reached at
    /// `public_url` (no trailing slash).
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
        public_url: &str,
        authenticator: Authenticator,
    ) -> anyhow::Result<OidcClient> {
        let public_url = public_url.trim_end_matches('/');
        let http = authenticator
            .config()
            .issuer_client(Duration::from_secs(10))?;
        Ok(OidcClient {
            inner: Arc::new(Inner {
                issuer: IssuerUrl::new(issuer.to_owned())?,
                client_id: ClientId::new(client_id.to_owned()),
                client_secret: ClientSecret::new(client_secret.to_owned()),
                redirect: RedirectUrl::new(format!("{public_url}/auth/callback"))?,
                after_logout: PostLogoutRedirectUrl::new(format!("{public_url}/"))?,
                http,
                metadata: tokio::sync::Mutex::new(None),
                authenticator,
            }),
        })
    }

    /// `pending` as a cookie value the browser carries to the callback:
    /// `payload.mac`, both base64url, the MAC an HMAC-SHA-256 under a key
    /// derived from the client's secret (every instance of the service
    /// shares it, so any of them finishes a sign-in another started). The
    /// browser can read what it holds (its own sign-in's state and PKCE
    /// verifier, useless without the code the provider sends only to it),
    /// and can change nothing.
    pub fn seal(&self, pending: &Pending) -> String {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = engine.encode(serde_json::to_vec(pending).unwrap_or_default());
        let mac = engine.encode(self.mac(payload.as_bytes()));
        format!("{payload}.{mac}")
    }

    /// The sign-in a cookie of [`OidcClient::seal`]'s holds, if its MAC is
    /// this service's and it is not older than [`PENDING_FOR`].
    pub fn open(&self, sealed: &str) -> Option<Pending> {
        use base64::Engine;
        use hmac::Mac;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, mac) = sealed.split_once('.')?;
        let mac = engine.decode(mac).ok()?;
        let mut check = self.hmac();
        check.update(payload.as_bytes());
        check.verify_slice(&mac).ok()?;
        let pending: Pending = serde_json::from_slice(&engine.decode(payload).ok()?).ok()?;
        let age = time::OffsetDateTime::now_utc().unix_timestamp() - pending.started;
        let longest = i64::try_from(PENDING_FOR.as_secs()).unwrap_or(i64::MAX);
        (0..=longest).contains(&age).then_some(pending)
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = self.hmac();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// HMAC-SHA-256 under the key for sign-in cookies: itself an HMAC of a
    /// fixed label under the client's secret, so the secret is used for
    /// nothing else as it is.
    fn hmac(&self) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        type HmacSha256 = hmac::Hmac<sha2::Sha256>;
        let key = {
            let mut derive =
                <HmacSha256 as Mac>::new_from_slice(self.inner.client_secret.secret().as_bytes())
                    .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
            derive.update(b"orders: the pending sign-in's cookie, v1");
            derive.finalize().into_bytes()
        };
        <HmacSha256 as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()))
    }

    /// Where the provider sends browsers back.
    pub fn redirect_uri(&self) -> &str {
        self.inner.redirect.as_str()
    }

    /// Starts a sign-in: the provider's URL to send the browser to, and
    /// what the browser's session keeps until it comes back.
    pub async fn start(&self, next: String) -> Result<(String, Pending), SignInError> {
        let metadata = self.metadata(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&metadata)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next,
            started: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        Ok((url.to_string(), pending))
    }

    /// Finishes a sign-in with the `code` the provider sent back (the
    /// caller has checked the state): exchanges it with the PKCE verifier
    /// and checks everything that comes back.
    pub async fn finish(&self, pending: Pending, code: &str) -> Result<Verified, SignInError> {
        if code.is_empty() || code.len() > CODE_MAX {
            return Err(SignInError::Failed(
                "the identity provider sent no code; start again",
            ));
        }
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| {
                SignInError::Unavailable("the identity provider publishes no token endpoint")
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.inner.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => {
                    tracing::info!(error = %answer.error(), "the identity provider refused the sign-in code");
                    SignInError::Failed("the identity provider refused the sign-in; start again")
                }
                other => {
                    tracing::warn!(error = %other, "cannot exchange the sign-in code");
                    UNREACHABLE
                }
            })?;
        let id_token = tokens.id_token().ok_or(SignInError::Failed(
            "the identity provider sent no ID token",
        ))?;
        let nonce = Nonce::new(pending.nonce);
        // Its keys may have rotated since the document was read: once more
        // with a fresh one before refusing.
        let verified = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .cloned();
        let (client, claims) = match verified {
            Ok(claims) => (client, claims),
            Err(first) => {
                let client = self.client(&*self.metadata(true).await?);
                let claims = {
                    let verifier = client.id_token_verifier();
                    let claims = id_token.claims(&verifier, &nonce).map_err(|e| {
                        tracing::info!(error = %first, again = %e, "refused an ID token");
                        SignInError::Failed("the identity provider's ID token did not verify")
                    })?;
                    claims.clone()
                };
                (client, claims)
            }
        };
        let verifier = client.id_token_verifier();
        if let Some(expected) = claims.access_token_hash() {
            let actual = id_token
                .signing_alg()
                .ok()
                .zip(id_token.signing_key(&verifier).ok())
                .and_then(|(alg, key)| {
                    AccessTokenHash::from_token(tokens.access_token(), alg, key).ok()
                });
            if actual.as_ref() != Some(expected) {
                return Err(SignInError::Failed(
                    "the access token does not match the ID token",
                ));
            }
        }
        let identity = self
            .check_access_token(tokens.access_token().secret())
            .await?;
        Ok(Verified {
            identity,
            id_token: id_token.to_string(),
            access_token: tokens.access_token().secret().clone(),
        })
    }

    /// Where to send the browser to end its session at the provider too
    /// (`None`: the provider has no end-session endpoint).
    pub async fn logout_url(&self, id_token: Option<&str>) -> Option<String> {
        let metadata = self.metadata(false).await.ok()?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request = LogoutRequest::from(end_session)
            .set_client_id(self.inner.client_id.clone())
            .set_post_logout_redirect_uri(self.inner.after_logout.clone());
        if let Some(hint) = id_token.and_then(|t| t.parse::<CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&hint);
        }
        Some(request.http_get_url().to_string())
    }

    /// The access token, checked exactly as a bearer token is.
    async fn check_access_token(&self, token: &str) -> Result<Identity, SignInError> {
        self.inner
            .authenticator
            .verify(token)
            .await
            .map_err(|why| match why {
                TokenError::KeysUnavailable => SignInError::KeysUnavailable,
                why => {
                    tracing::info!(reason = %why, "refused the access token of a browser sign-in");
                    SignInError::Failed(
                        "the identity provider's access token is not one this service accepts",
                    )
                }
            })
    }

    /// The provider's discovery document (and keys), fetched at most every
    /// [`METADATA_TTL`] unless `fresh`.
    async fn metadata(&self, fresh: bool) -> Result<Arc<ProviderMetadataWithLogout>, SignInError> {
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
            UNREACHABLE
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
