//! The assembly: what one `orders` process runs, built from its
//! configuration in one place. `main` and the test harness both call
//! [`App::build`] and [`App::run`], so the tests run the wiring production
//! runs (pools, HTTP server, relay, projection workers, their shutdown).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use infra::kafka::KafkaSource;
use projections::runner::WorkerOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthConfig, Authenticator};
use crate::db::Pools;
use crate::http::access::{Access, RateLimitConfig, RateLimits};
use crate::http::tls::TlsFiles;
use crate::http::{self, Apis, AppState, Shared};
use crate::relay::{self, RelayOptions};
use crate::workers;
use projections::Registered;

/// The HTTP side of a process.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub apis: Apis,
    /// The path the whole product is served under (`PATH_PREFIX`).
    pub path_prefix: crate::http::PathPrefix,
    /// Requests handled at once; more are answered 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// A request still running after this is answered 503.
    pub request_timeout: Duration,
    /// How long a read that asks for its own writes waits for the read model.
    pub read_wait: Duration,
    /// Whose tokens are accepted; `None`: unauthenticated, on a loopback
    /// address only.
    pub auth: Option<AuthConfig>,
    pub rate_limits: RateLimitConfig,
    /// Which proxies' forwarding headers are believed, and how IPv6
    /// addresses share a rate limit.
    pub peers: crate::http::peer::Peers,
    /// Live streams open at once, per signed-in user and in all.
    pub max_streams_per_user: usize,
    pub max_streams: usize,
    /// HTTPS with these files; `None`: plain HTTP (TLS ends at a proxy, or
    /// on loopback).
    pub tls: Option<TlsFiles>,
    /// The shop's clock: pickup numbers start again at its midnight.
    pub pickup_offset: time::UtcOffset,
    /// The pages' sign-in client; `None`: the pages show, sign-in is off.
    pub web: Option<crate::http::pages::WebConfig>,
}

impl ServeConfig {
    /// The defaults, listening on `addr`.
    pub fn on(addr: SocketAddr) -> ServeConfig {
        ServeConfig {
            addr,
            apis: Apis::All,
            path_prefix: crate::http::PathPrefix::default(),
            max_in_flight: Shared::DEFAULT_MAX_IN_FLIGHT as usize,
            request_timeout: Duration::from_secs(Shared::DEFAULT_REQUEST_TIMEOUT_SECS),
            read_wait: Shared::DEFAULT_READ_WAIT,
            auth: None,
            rate_limits: RateLimitConfig::default(),
            peers: crate::http::peer::Peers::default(),
            max_streams_per_user: crate::http::pages::feed::Caps::DEFAULT_PER_USER,
            max_streams: crate::http::pages::feed::Caps::DEFAULT_TOTAL,
            tls: None,
            pickup_offset: time::UtcOffset::UTC,
            web: None,
        }
    }
}

/// Everything one process runs: any of the HTTP APIs, the relay, projection
/// workers.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub serve: Option<ServeConfig>,
    pub relay: Option<RelayOptions>,
    /// The projection workers to run.
    pub projections: Vec<Registered>,
    pub worker: WorkerOptions,
    /// Where the delivery projection reads (and `/readyz` checks).
    pub kafka: Option<KafkaSource>,
}

/// The HTTP side, bound.
struct Server {
    listener: TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    state: AppState,
}

/// A process, built and bound (its port is known), not yet running.
pub struct App {
    pools: Pools,
    config: Config,
    server: Option<Server>,
    /// Stops what `build` started in the background (the key refresher,
    /// the rate limiters' sweeper) once the process stops.
    background: CancellationToken,
}

impl App {
    /// Checks the log's clock and binds the HTTP listener, if any.
    ///
    /// Refuses a part that writes or reads the log when new events would
    /// sort before stored ones (a database restored into another cluster).
    pub async fn build(pools: Pools, config: Config) -> anyhow::Result<App> {
        let mut conn = pools.writes.acquire().await?;
        projections::clock::ensure_in_order(&mut conn).await?;
        drop(conn);
        let background = CancellationToken::new();
        let server = match &config.serve {
            Some(serve) => {
                refuse_open_network(serve)?;
                let tls = match &serve.tls {
                    Some(files) => {
                        let config = files.load().await?;
                        tokio::spawn(files.clone().watch(config.clone(), background.clone()));
                        Some(config)
                    }
                    None => None,
                };
                let listener = TcpListener::bind(serve.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", serve.addr))?;
                let mut state = Shared::new(&pools, listener.local_addr()?.port());
                state.kafka = config.kafka.clone();
                state.max_in_flight = serve.max_in_flight;
                state.request_timeout = serve.request_timeout;
                state.read_wait = serve.read_wait;
                state.prefix = serve.path_prefix.clone();
                state.orders = state.orders.clone().with_day_offset(serve.pickup_offset);
                state.access = access(serve, &background).await;
                state.web = Some(web(serve, &state, &pools, listener.local_addr()?)?);
                Some(Server {
                    listener,
                    tls,
                    state: AppState::from(state),
                })
            }
            None => None,
        };
        Ok(App {
            pools,
            config,
            server,
            background,
        })
    }

    /// The port the HTTP server listens on, if it serves.
    pub fn port(&self) -> Option<u16> {
        self.server.as_ref().map(|server| server.state.port)
    }

    /// Runs every part until `shutdown`, then stops them all and waits for
    /// them. A projection worker that ends on its own (a corrupt event it
    /// refuses to skip) takes the process down with it, so a supervisor
    /// notices and restarts.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            pools,
            config,
            server,
            background,
        } = self;
        let _stop_background = background.drop_guard();
        if !config.projections.is_empty() {
            tracing::info!(projections = ?config.projections, "starting projection workers");
        }
        let mut workers = workers::spawn(
            &pools,
            &config.projections,
            &config.worker,
            config.kafka.as_ref(),
            &shutdown,
        );
        let relay = config.relay.map(|options| {
            tokio::spawn(relay::run(pools.workers.clone(), options, shutdown.clone()))
        });
        let apis = config.serve.map_or(Apis::All, |s| s.apis);
        let server = server.map(|s| {
            tokio::spawn(http::serve(
                s.listener,
                s.tls,
                s.state,
                apis,
                shutdown.clone(),
            ))
        });
        // A worker that ends because shutdown was asked for is not a failure:
        // the signal wakes this task and the workers at once, and they may
        // finish first.
        let mut failure = None;
        tokio::select! {
            () = shutdown.cancelled() => {}
            Some(ended) = workers.join_next() => {
                failure = match ended {
                    Ok(Ok(())) if shutdown.is_cancelled() => None,
                    Ok(Ok(())) => Some(anyhow::anyhow!("a projection worker stopped unexpectedly")),
                    Ok(Err(e)) => Some(anyhow::Error::new(e).context("a projection worker failed")),
                    Err(e) => Some(anyhow::Error::new(e).context("a projection worker panicked")),
                };
                shutdown.cancel();
            }
        }
        while workers.join_next().await.is_some() {}
        if let Some(relay) = relay {
            relay.await.context("the relay task failed")?;
        }
        if let Some(server) = server {
            server.await.context("the HTTP server task failed")??;
        }
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Refuses to serve beyond this machine without authentication: without an
/// issuer anyone who can reach the port could read and change every order.
fn refuse_open_network(serve: &ServeConfig) -> anyhow::Result<()> {
    if serve.auth.is_some() {
        return Ok(());
    }
    if !serve.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve on {} without authentication: set OIDC_ISSUER (and OIDC_AUDIENCE) \
             to the OpenID Connect issuer whose tokens the API accepts, or listen on a loopback \
             address (127.0.0.1) for development",
            serve.addr
        );
    }
    tracing::warn!(addr = %serve.addr,
        "no OIDC_ISSUER configured: the API is unauthenticated (development only), serving on loopback only");
    Ok(())
}

/// The pages: their sessions, their live updates, and their sign-in when
/// an issuer and a web client are configured.
fn web(
    serve: &ServeConfig,
    state: &Shared,
    pools: &Pools,
    bound: SocketAddr,
) -> anyhow::Result<crate::http::pages::Web> {
    let public_url = match serve.web.as_ref().and_then(|w| w.public_url.clone()) {
        Some(url) => url,
        None => {
            // Where this machine's browser reaches the listener.
            let ip = match bound.ip() {
                ip if !ip.is_unspecified() => ip,
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            let scheme = if serve.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
        }
    };
    let sign_in = match (&serve.auth, &state.access.auth, &serve.web) {
        (Some(auth), Some(authenticator), Some(web)) => {
            let sign_in = crate::auth::oidc::OidcClient::new(
                &auth.issuer,
                &web.client_id,
                web.client_secret.expose(),
                &format!("{public_url}{}", serve.path_prefix.as_str()),
                authenticator.clone(),
            )?;
            tracing::info!(client = %web.client_id, redirect_uri = sign_in.redirect_uri(),
                "the pages sign in through the issuer");
            Some(sign_in)
        }
        (Some(_), _, None) => {
            tracing::info!("no OIDC_WEB_CLIENT_ID: the pages are served, browser sign-in is off");
            None
        }
        _ => None,
    };
    let secure = serve.tls.is_some() || public_url.starts_with("https://");
    let live = crate::http::pages::feed::Live::new(crate::http::pages::feed::Caps::new(
        serve.max_streams_per_user,
        serve.max_streams,
    ));
    crate::http::pages::Web::new(pools, sign_in, secure, live)
}

/// The token checks and rate limits of `serve`, their background work
/// stopped by `background`.
async fn access(serve: &ServeConfig, background: &CancellationToken) -> Access {
    let auth = match &serve.auth {
        Some(config) => {
            tracing::info!(issuer = %config.issuer, audience = %config.audience,
                "accepting bearer tokens from this issuer");
            Some(Authenticator::start(config.clone(), background.clone()).await)
        }
        None => None,
    };
    let limits = RateLimits::new(serve.rate_limits).map(std::sync::Arc::new);
    if let Some(limits) = &limits {
        tokio::spawn(limits.clone().forget_idle(background.clone()));
    }
    if !serve.peers.trusted.is_empty() {
        tracing::info!(proxies = ?serve.peers.trusted,
            "taking client addresses from these proxies' forwarding headers");
    }
    Access {
        auth,
        limits,
        peers: serve.peers.clone(),
    }
}
