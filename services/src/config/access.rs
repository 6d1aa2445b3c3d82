//! Who may call the API and how often: the OpenID Connect issuer whose
//! tokens are accepted, and the rate limits.

use clap::Args;

use crate::auth::AuthConfig;
use crate::http::access::{RateLimit, RateLimitConfig};

#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// The OpenID Connect issuer whose access tokens the API accepts (its
    /// `iss`; https, or http on a loopback host). Without it the API runs
    /// unauthenticated, for development, and serves only on a loopback
    /// address.
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud`) a token must name: this API.
    #[arg(long, env = "OIDC_AUDIENCE", default_value = "orders-api")]
    pub oidc_audience: String,
    /// The claim that names the user (its value must fit the user id rule:
    /// 1 to 100 letters, digits, `-`, `_`, `.`), e.g. `preferred_username`.
    #[arg(long, env = "OIDC_USER_CLAIM", default_value = AuthConfig::DEFAULT_USER_CLAIM)]
    pub oidc_user_claim: String,
    /// The claim with the roles (`staff`, `operator`): an array or a
    /// space-separated string; a dotted path reaches into an object
    /// (`realm_access.roles`).
    #[arg(long, env = "OIDC_ROLES_CLAIM", default_value = AuthConfig::DEFAULT_ROLES_CLAIM)]
    pub oidc_roles_claim: String,
    /// Seconds of clock skew allowed on a token's `exp` and `nbf`.
    #[arg(long, env = "OIDC_LEEWAY_SECS", default_value_t = AuthConfig::DEFAULT_LEEWAY_SECS,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub oidc_leeway_secs: u64,
    /// Seconds between fetches of the issuer's keys (a token naming an
    /// unknown key also fetches them, at most every 10 s).
    #[arg(long, env = "OIDC_KEYS_REFRESH_SECS", default_value_t = AuthConfig::DEFAULT_REFRESH_SECS,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub oidc_keys_refresh_secs: u64,
    /// Requests per second each signed-in user may send (0: no limit).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,
    /// Requests a signed-in user may send at once above the rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Requests per second from one address without a valid token (0: no
    /// limit). Behind a proxy every caller has the proxy's address: raise it.
    #[arg(long, env = "RATE_LIMIT_PEER_PER_SECOND", default_value_t = 50)]
    pub rate_limit_peer_per_second: u32,
    /// Requests one address without a valid token may send at once.
    #[arg(long, env = "RATE_LIMIT_PEER_BURST", default_value_t = 100)]
    pub rate_limit_peer_burst: u32,
}

impl AccessArgs {
    /// The issuer's settings, if one is configured.
    pub fn auth(&self) -> anyhow::Result<Option<AuthConfig>> {
        let Some(issuer) = self.oidc_issuer.as_deref().map(str::trim) else {
            return Ok(None);
        };
        check_issuer(issuer)?;
        Ok(Some(AuthConfig {
            user_claim: self.oidc_user_claim.clone(),
            roles_claim: self.oidc_roles_claim.clone(),
            leeway: std::time::Duration::from_secs(self.oidc_leeway_secs),
            refresh: std::time::Duration::from_secs(self.oidc_keys_refresh_secs),
            ..AuthConfig::new(issuer, self.oidc_audience.clone())
        }))
    }

    pub fn limits(&self) -> RateLimitConfig {
        RateLimitConfig {
            users: RateLimit::new(self.rate_limit_per_second, self.rate_limit_burst),
            peers: RateLimit::new(self.rate_limit_peer_per_second, self.rate_limit_peer_burst),
        }
    }
}

/// An issuer the keys can be fetched from safely: https, or plain http to
/// this machine only (the local provider): keys fetched over a network in
/// clear could be replaced on the way.
pub fn check_issuer(issuer: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(issuer)
        .map_err(|e| anyhow::anyhow!("OIDC_ISSUER {issuer:?} is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!(
            "OIDC_ISSUER must be an https URL (plain http only on a loopback host): {issuer}"
        ),
    }
}
