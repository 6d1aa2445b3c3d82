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

/// A sign-in in flight, as the browser's session keeps it until the
/// provider sends the browser back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    nonce: String,
    verifier: String,
    /// Where to send the browser once signed in (a path on this site).
    pub next: String,
}

/// What a finished sign-in proved.
#[derive(Debug)]
pub struct Verified {
    /// The caller the access token stands for, as the API would see it.
    pub identity: Identity,
    /// The provider's ID token, for ending the provider's session too.
    pub id_token: String,
    /// How long the provider says the access token lives.
    pub expires_in: Option<Duration>,
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
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
            expires_in: tokens.expires_in(),
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
