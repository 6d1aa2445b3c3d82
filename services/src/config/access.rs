//! Who may call the API and how often: the OpenID Connect issuer whose
//! tokens are accepted, and the rate limits.

use clap::Args;

use crate::auth::AuthConfig;
use crate::http::access::{RateLimit, RateLimitConfig};
use crate::http::peer::Peers;

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
    /// Certificates (a PEM file) to trust for the issuer's https besides the
    /// system's: a provider whose certificate a private CA signed.
    #[arg(long, env = "OIDC_CA_FILE")]
    pub oidc_ca_file: Option<std::path::PathBuf>,
    /// The claim that names the user (its value must fit the user id rule:
    /// 1 to 100 letters, digits, `-`, `_`, `.`). Keep `sub`: it is the one
    /// claim the provider never lets a user change. A claim users can set
    /// themselves (`preferred_username`, `email`) lets one user rename
    /// themselves into another's id and take over that user's orders.
    #[arg(long, env = "OIDC_USER_CLAIM", default_value = AuthConfig::DEFAULT_USER_CLAIM)]
    pub oidc_user_claim: String,
    /// The claim with the roles (`staff`, `operator`): an array or a
    /// space-separated string; a dotted path reaches into an object
    /// (`realm_access.roles`).
    #[arg(long, env = "OIDC_ROLES_CLAIM", default_value = AuthConfig::DEFAULT_ROLES_CLAIM)]
    pub oidc_roles_claim: String,
    /// The claim with the stores a member of staff works at: an array of
    /// store ids or a space- or comma-separated string; a dotted path
    /// reaches into an object. Staff whose token has none work at the
    /// default store; operators reach every store.
    #[arg(long, env = "OIDC_STORES_CLAIM", default_value = AuthConfig::DEFAULT_STORES_CLAIM)]
    pub oidc_stores_claim: String,
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
    /// IPv6 clients share the per-address limit by this prefix: one client
    /// holds a whole /64, and would get a fresh budget per address of it.
    #[arg(long, env = "RATE_LIMIT_IPV6_PREFIX", default_value_t = Peers::DEFAULT_IPV6_PREFIX,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub rate_limit_ipv6_prefix: u8,
    /// The proxies (load balancers) in front of this service, as addresses
    /// or networks, comma-separated (`10.0.0.5,10.0.1.0/24`): a request from
    /// one of them is counted by the client address it states in
    /// `Forwarded` or `X-Forwarded-For`. Those headers from anyone else are
    /// ignored. Without it, every caller behind a proxy shares its address.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `10.0.0.5` (one address) or `10.0.1.0/24`.
fn proxy_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a network such as 10.0.1.0/24"))
}

impl AccessArgs {
    /// The issuer's settings, if one is configured.
    pub fn auth(&self) -> anyhow::Result<Option<AuthConfig>> {
        let Some(issuer) = self.oidc_issuer.as_deref().map(str::trim) else {
            return Ok(None);
        };
        check_issuer(issuer)?;
        let ca = match &self.oidc_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("OIDC_CA_FILE {}: cannot read it: {e}", path.display())
                })?;
                let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    anyhow::anyhow!("OIDC_CA_FILE {}: not PEM certificates: {e}", path.display())
                })?;
                if certificates.is_empty() {
                    anyhow::bail!("OIDC_CA_FILE {} holds no certificate", path.display());
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Some(AuthConfig {
            ca,
            user_claim: self.oidc_user_claim.clone(),
            roles_claim: self.oidc_roles_claim.clone(),
            stores_claim: self.oidc_stores_claim.clone(),
            leeway: std::time::Duration::from_secs(self.oidc_leeway_secs),
            refresh: std::time::Duration::from_secs(self.oidc_keys_refresh_secs),
            ..AuthConfig::new(issuer, self.oidc_audience.clone())
        }))
    }

    pub fn peers(&self) -> Peers {
        Peers {
            trusted: self.trusted_proxies.clone(),
            ipv6_prefix: self.rate_limit_ipv6_prefix,
        }
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
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::auth::is_loopback(&url) => Ok(()),
        _ => anyhow::bail!(
            "OIDC_ISSUER must be an https URL (plain http only on a loopback host): {issuer}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        access: super::AccessArgs,
    }

    #[test]
    fn the_user_claim_help_warns_against_claims_users_can_change() {
        let help = Cli::command().render_long_help().to_string();
        let about = help
            .split("--oidc-user-claim")
            .nth(1)
            .and_then(|rest| rest.split("--oidc-roles-claim").next())
            .unwrap_or_default();
        for words in ["Keep `sub`", "preferred_username", "take over"] {
            assert!(about.contains(words), "{words:?} missing from:\n{about}");
        }
    }
}
