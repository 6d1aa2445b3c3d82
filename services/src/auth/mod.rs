//! Who is calling. API clients present a JWT access token issued by the
//! configured OpenID Connect provider (`Authorization: Bearer …`); an
//! [`Authenticator`] checks it against the provider's published keys
//! ([`keys`]) and turns it into an [`Identity`]: a user id that fits the
//! service's `user_id` rule, and the roles the token grants.
//!
//! Without an issuer configured the process runs unauthenticated, for
//! development only: `app.rs` then serves only on a loopback address.

mod cache;
mod keys;
pub mod oidc;
mod token;

use std::sync::Arc;
use std::time::Duration;

use domain::{StoreId, UserId};

pub use keys::{is_loopback, KeySet, KeysError};
pub use token::TokenError;

/// Where tokens come from and how they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The issuer's identifier (`iss`), e.g. `https://login.example.com/`;
    /// its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The audience (`aud`) a token must name: this API.
    pub audience: String,
    /// The claim that names the user; its value must fit the `user_id` rule.
    pub user_claim: String,
    /// The claim that carries the roles (a dotted path such as
    /// `realm_access.roles` reaches into an object): an array of strings or
    /// one space-separated string.
    pub roles_claim: String,
    /// The claim that names the stores a member of staff works at (a dotted
    /// path too): an array of store ids or one space- or comma-separated
    /// string. Staff whose token has none work at the default store;
    /// operators reach every store.
    pub stores_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often the keys are fetched again without being asked to.
    pub refresh: Duration,
    /// Certificates (PEM) trusted for the issuer's https beside the system's
    /// (`OIDC_CA_FILE`: a provider behind a private CA).
    pub ca: Option<Vec<u8>>,
}

impl AuthConfig {
    pub const DEFAULT_USER_CLAIM: &'static str = "sub";
    pub const DEFAULT_ROLES_CLAIM: &'static str = "roles";
    pub const DEFAULT_STORES_CLAIM: &'static str = "stores";
    pub const DEFAULT_LEEWAY_SECS: u64 = 30;
    pub const DEFAULT_REFRESH_SECS: u64 = 300;

    /// The defaults for `issuer` and `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> AuthConfig {
        AuthConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            user_claim: Self::DEFAULT_USER_CLAIM.to_owned(),
            roles_claim: Self::DEFAULT_ROLES_CLAIM.to_owned(),
            stores_claim: Self::DEFAULT_STORES_CLAIM.to_owned(),
            leeway: Duration::from_secs(Self::DEFAULT_LEEWAY_SECS),
            refresh: Duration::from_secs(Self::DEFAULT_REFRESH_SECS),
            ca: None,
        }
    }

    /// A client for the issuer's endpoints: `timeout`, no redirects (a key
    /// set or token answer must come from the address asked), and the
    /// certificates of `ca` trusted too.
    pub fn issuer_client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &self.ca {
            for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(builder.build()?)
    }
}

/// The roles a token grants beyond being a signed-in customer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// Staff: the delivery side, and reading anyone's orders.
    pub staff: bool,
    /// Operators: `/metrics` and operators' routes.
    pub operator: bool,
}

/// The stores whose orders a caller may see and move on the delivery side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreScope {
    /// Operators, and everyone when authentication is off.
    Every,
    /// Staff: the stores their token names (the default store when it names
    /// none).
    Only(std::collections::BTreeSet<StoreId>),
}

impl StoreScope {
    /// The most stores a token names that are taken into account.
    pub const MAX: usize = 64;

    pub fn includes(&self, store: &str) -> bool {
        match self {
            StoreScope::Every => true,
            StoreScope::Only(stores) => stores.iter().any(|s| s.as_str() == store),
        }
    }

    /// The stores as a filter of a list (`None`: every store).
    pub fn filter(&self) -> Option<Vec<String>> {
        match self {
            StoreScope::Every => None,
            StoreScope::Only(stores) => Some(stores.iter().map(ToString::to_string).collect()),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub roles: Roles,
    /// Where the caller works (staff) or reaches (operators).
    pub stores: StoreScope,
    /// Unix seconds: when this caller's access ends (the token's `exp`; a
    /// session's end, if sooner). Whatever acts for the caller stops then.
    pub until: i64,
}

/// Checks bearer tokens. Cheap to clone: the key set is shared.
#[derive(Clone)]
pub struct Authenticator {
    config: Arc<AuthConfig>,
    keys: KeySet,
    verified: Arc<cache::Verified>,
}

impl Authenticator {
    /// Fetches the issuer's keys once (a failure is logged, not fatal: the
    /// key set keeps trying, and until it has keys a token is answered 503)
    /// and keeps them fresh until `shutdown`.
    pub async fn start(
        config: AuthConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Authenticator {
        let http = config
            .issuer_client(keys::FETCH_TIMEOUT)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the issuer's client with OIDC_CA_FILE; trusting the system's certificates only");
                reqwest::Client::default()
            });
        let keys = KeySet::new(&config.issuer, http);
        if let Err(e) = keys.refresh().await {
            tracing::warn!(issuer = %config.issuer, error = %e,
                "cannot fetch the identity provider's keys yet; tokens are answered 503 until it answers");
        }
        tokio::spawn(keys.clone().keep_fresh(config.refresh, shutdown));
        Authenticator {
            config: Arc::new(config),
            keys,
            verified: Arc::default(),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The caller `token` was found to be when it was last verified, if it
    /// still is valid and the issuer's keys have not changed since: no
    /// signature check, no lookup beyond a hash and a map.
    pub fn remembered(&self, token: &str) -> Option<Identity> {
        token::remembered(&self.keys, &self.verified, token)
    }

    /// The issuer's key set's version: it moves when the keys' material
    /// changes (what acts for a verified caller judges its token again).
    pub fn keys_version(&self) -> u64 {
        self.keys.version()
    }

    /// Verifies `token` (the part after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        token::verify(&self.config, &self.keys, &self.verified, token).await
    }
}
