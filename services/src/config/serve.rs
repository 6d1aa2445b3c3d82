//! How `serve` (and `all`) serves HTTP: the address, the APIs, the path
//! prefix, the limits on requests and live streams, TLS, the shop's clock,
//! and the client the pages sign in with.

use std::net::SocketAddr;

use clap::Args;

use super::AccessArgs;
use crate::app::ServeConfig;
use crate::http::Apis;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Which APIs to serve.
    #[arg(long, value_enum, default_value_t = Apis::All)]
    pub api: Apis,
    /// Serve the whole product under this path (`/coffee`): every route,
    /// the pages' links, redirects, cookies and the OpenAPI `servers` begin
    /// with it. Default: none (paths as API.md writes them).
    #[arg(long, env = "PATH_PREFIX", default_value = "", value_parser = path_prefix)]
    pub path_prefix: crate::http::PathPrefix,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = crate::http::Shared::DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Seconds after which a request still running is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = crate::http::Shared::DEFAULT_REQUEST_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_secs: u64,
    /// Live streams (`/events/…`) one signed-in user may have open at once;
    /// more are answered 429 with `Retry-After`.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = crate::http::pages::feed::Caps::DEFAULT_PER_USER as u32,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams_per_user: u32,
    /// Live streams open at once in this process; more are answered 503
    /// with `Retry-After`.
    #[arg(long, env = "MAX_STREAMS", default_value_t = crate::http::pages::feed::Caps::DEFAULT_TOTAL as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams: u32,
    /// Serve HTTPS with this certificate chain (PEM; reloaded when it
    /// changes). Without it the API speaks plain HTTP: terminate TLS at a
    /// proxy in front of it.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// The shop's clock, as an offset from UTC (`+09:00`): pickup numbers
    /// start again at 1 at its midnight.
    #[arg(long, env = "PICKUP_UTC_OFFSET", default_value = "+00:00", value_parser = utc_offset)]
    pub pickup_utc_offset: time::UtcOffset,
    /// The OpenID Connect client the pages sign in with (authorization
    /// code + PKCE, at the OIDC_ISSUER). Without it the pages are served but
    /// browser sign-in is off.
    #[arg(long, env = "OIDC_WEB_CLIENT_ID", requires = "oidc_web_client_secret")]
    pub oidc_web_client_id: Option<String>,
    /// That client's secret.
    #[arg(long, env = "OIDC_WEB_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_web_client_secret: Option<infra::secret::Secret>,
    /// Where browsers reach this service (`https://orders.example.com`): the
    /// sign-in's callback is PUBLIC_URL/auth/callback, and an https URL makes
    /// the session cookie Secure. Default: the address it listens on.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub access: AccessArgs,
}

fn path_prefix(text: &str) -> Result<crate::http::PathPrefix, String> {
    crate::http::PathPrefix::parse(text)
}

/// `+09:00`, `-05:30`, `+00:00`.
fn utc_offset(text: &str) -> Result<time::UtcOffset, String> {
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    time::UtcOffset::parse(text.trim(), &format)
        .map_err(|_| "an offset from UTC such as +09:00 or -05:30".to_owned())
}

impl ServeArgs {
    fn web(&self) -> anyhow::Result<Option<crate::http::pages::WebConfig>> {
        let public_url = match self.public_url.as_deref().map(str::trim) {
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("PUBLIC_URL {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    anyhow::bail!("PUBLIC_URL must be an http or https URL such as https://orders.example.com");
                }
                // The prefix is PATH_PREFIX's to say; a PUBLIC_URL that
                // names it too must name the same.
                let path = parsed.path().trim_end_matches('/');
                if !path.is_empty() && path != self.path_prefix.as_str() {
                    anyhow::bail!(
                        "PUBLIC_URL's path {path:?} is not PATH_PREFIX ({:?}): give PUBLIC_URL as the origin (https://orders.example.com) and the path as PATH_PREFIX",
                        self.path_prefix.as_str()
                    );
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    anyhow::bail!("PUBLIC_URL must not have a query or fragment");
                }
                Some(parsed.origin().ascii_serialization())
            }
            None => None,
        };
        Ok(
            match (&self.oidc_web_client_id, &self.oidc_web_client_secret) {
                (Some(id), Some(secret)) => Some(crate::http::pages::WebConfig {
                    client_id: id.clone(),
                    client_secret: secret.clone(),
                    public_url,
                }),
                _ => None,
            },
        )
    }

    pub fn config(&self) -> anyhow::Result<ServeConfig> {
        Ok(ServeConfig {
            apis: self.api,
            path_prefix: self.path_prefix.clone(),
            max_in_flight: usize::try_from(self.max_in_flight).unwrap_or(usize::MAX),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            auth: self.access.auth()?,
            rate_limits: self.access.limits(),
            peers: self.access.peers(),
            max_streams_per_user: usize::try_from(self.max_streams_per_user).unwrap_or(usize::MAX),
            max_streams: usize::try_from(self.max_streams).unwrap_or(usize::MAX),
            pickup_offset: self.pickup_utc_offset,
            web: self.web()?,
            tls: match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            ..ServeConfig::on(self.http_addr)
        })
    }
}

/// `serve` with the pages' sign-in configured, its client secret `secret`:
/// the command line the tests parse.
#[cfg(test)]
pub(crate) fn serve_with_pages(secret: &str) -> [&str; 7] {
    [
        "serve",
        "--oidc-issuer",
        "https://login.example.com",
        "--oidc-web-client-id",
        "orders-web",
        "--oidc-web-client-secret",
        secret,
    ]
}

#[cfg(test)]
mod prefix_tests {
    use clap::Parser;

    fn serve(args: &[&str]) -> anyhow::Result<crate::app::ServeConfig> {
        let base = super::serve_with_pages("web-secret");
        let cli = crate::config::Cli::try_parse_from(
            std::iter::once(&"orders").chain(base.iter()).chain(args),
        )?;
        match &cli.command {
            crate::config::Cmd::Serve(serve) => serve.config(),
            _ => anyhow::bail!("not serve"),
        }
    }

    #[test]
    fn the_prefix_is_one_setting_and_public_url_may_only_repeat_it() {
        let none = serve(&[]).expect("no prefix");
        assert!(none.path_prefix.is_empty());
        let coffee = serve(&["--path-prefix", "/coffee/"]).expect("a prefix");
        assert_eq!(coffee.path_prefix.as_str(), "/coffee");
        for (url, origin) in [
            ("https://shop.example", "https://shop.example"),
            ("https://shop.example/coffee", "https://shop.example"),
            (
                "https://shop.example:8443/coffee/",
                "https://shop.example:8443",
            ),
        ] {
            let config = serve(&["--path-prefix", "/coffee", "--public-url", url]).expect(url);
            let web = config.web.expect("the pages' sign-in");
            assert_eq!(web.public_url.as_deref(), Some(origin), "{url}");
        }
        for bad in [
            "https://shop.example/tea",
            "https://shop.example/coffee?x=1",
        ] {
            assert!(
                serve(&["--path-prefix", "/coffee", "--public-url", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(serve(&["--public-url", "https://shop.example/coffee"]).is_err());
        assert!(serve(&["--path-prefix", "coffee"]).is_err());
        assert!(serve(&["--path-prefix", "/../admin"]).is_err());
    }
}
