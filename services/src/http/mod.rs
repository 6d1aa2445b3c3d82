//! The HTTP APIs (axum): one shared state, a `router()` per resource, and the
//! middleware every request passes through (trailing-slash normalisation,
//! request ids, tracing, body limit).

pub mod access;
mod delivery;
pub mod docs;
pub mod error;
mod extract;
mod limits;
mod menu;
mod ops;
mod order_body;
mod orders;
pub mod pages;
pub mod peer;
pub(crate) mod prefix;
mod readiness;
pub mod session;
mod state;
pub mod tls;

pub use prefix::PathPrefix;
pub use state::{Apis, AppState, Shared};

use std::io;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Router, ServiceExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::commands::{Handled, Outcome};
use error::ApiError;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The request id header: accepted from the client or generated, returned in
/// the response, recorded as the correlation id of the events it causes.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The global log position of a write, for read-your-writes on the read models.
pub const LOG_POSITION: HeaderName = HeaderName::from_static("x-log-position");

/// The application: every route of the selected APIs plus operations.
pub fn router(state: AppState, apis: Apis) -> Router {
    // Record from the first request on, not from the first scrape.
    crate::metrics::handle();
    let (mut router, mut spec) = routes_and_document(apis);
    if state.web.is_some() {
        router = router.merge(crate::http::pages::router(apis, &state.prefix));
    }
    // Under a prefix, everything moves there (API.md): a path outside it
    // is answered by the fallback, 404.
    if !state.prefix.is_empty() {
        spec.servers = Some(vec![utoipa::openapi::Server::new(state.prefix.as_str())]);
        router = Router::new().nest(state.prefix.as_str(), router);
    }
    let router = router
        .layer(axum::Extension(std::sync::Arc::new(spec)))
        .route_layer(axum::middleware::from_fn_with_state(
            state.prefix.clone(),
            crate::metrics::track,
        ))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Every request's token is checked once, and its caller's rate
        // limit applied, before any handler (access.rs).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    // The pages' sessions, read by `authenticate` when a request has no
    // bearer token.
    let router = match &state.web {
        Some(web) => router.layer(web.session_layer(state.prefix.cookie_path())),
        None => router,
    };
    let router =
        crate::http::pages::security_headers()
            .into_iter()
            .fold(router, |router, (name, value)| {
                router.layer(
                    tower_http::set_header::SetResponseHeaderLayer::if_not_present(name, value),
                )
            });
    around_every_request(router, &state).with_state(state)
}

/// What every request passes through first, outermost last: its request id
/// and trace span, the load shedding and the deadline, and who the client is.
fn around_every_request(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router
        // Who the client is, before anything else looks at the request
        // (peer.rs): the limits and the log name the same address.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            peer::find_client,
        ))
        // Inside the concurrency limit: a request cut off frees its slot.
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            deadline,
        ))
        // Shed load instead of queueing it: beyond `max_in_flight` requests
        // at once the answer is an immediate 503; none runs longer than
        // `request_timeout`.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(edge_error))
                .load_shed()
                // Global: axum layers every route separately, and a plain
                // concurrency limit would give each route its own budget.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    state.max_in_flight.max(1),
                )),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // The path, never the query: a sign-in's callback carries its code
            // and state there, and no secret belongs in a log line.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id,
                client = tracing::field::Empty)
        }).on_response(DefaultOnResponse::new().level(Level::INFO)))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unsafe_request_id))
}

/// Answers a request still running after `timeout` with 503, telling the
/// truth about it: if a write had been sent to the database
/// ([`crate::store::WriteSent`]), it may have committed, so the answer is
/// `/problems/outcome-unknown` (retry with the same `Idempotency-Key`),
/// never a plain timeout that invites a retry without one.
async fn deadline(
    axum::extract::State(timeout): axum::extract::State<std::time::Duration>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let sent = crate::store::WriteSent::default();
    let running = crate::store::WRITE_SENT.scope(sent.clone(), next.run(req));
    match tokio::time::timeout(timeout, running).await {
        Ok(response) => response,
        Err(_) if sent.was_sent() => ApiError::OutcomeUnknown.into_response(),
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// The longest `X-Request-Id` a client may choose.
pub const REQUEST_ID_MAX: usize = 128;

/// A client's `X-Request-Id` travels into logs, event metadata and Kafka
/// headers: one longer than [`REQUEST_ID_MAX`] or with characters outside
/// `A-Z a-z 0-9 - _ . : / + =` is dropped here, so that a fresh one is
/// generated (the response's `X-Request-Id` says which id was used).
async fn drop_unsafe_request_id(mut req: Request) -> Request {
    let safe = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= REQUEST_ID_MAX
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
    };
    let values: Vec<&axum::http::HeaderValue> = req.headers().get_all(REQUEST_ID).iter().collect();
    let all_safe = match values.as_slice() {
        [] => true,
        [one] => safe(one),
        _ => false,
    };
    if !all_safe {
        tracing::debug!("replacing a client's X-Request-Id that is too long or not plain text");
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// The routes of the selected APIs, each registered with its OpenAPI
/// description: what is mounted is what is documented.
/// The selected APIs' routes and their OpenAPI document, with what every
/// route shares added once the routes are in it.
fn routes_and_document(apis: Apis) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut spec) = api_router(apis).split_for_parts();
    utoipa::Modify::modify(&docs::CallerResponses, &mut spec);
    (router, spec)
}

pub fn api_router(apis: Apis) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    let mut router = utoipa_axum::router::OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(ops::router());
    if matches!(apis, Apis::Order | Apis::All) {
        router = router.merge(orders::router()).merge(menu::router());
    }
    if matches!(apis, Apis::Delivery | Apis::All) {
        router = router.merge(delivery::router());
    }
    router
}

/// The answer when the edge layers refuse a request.
async fn edge_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else {
        ApiError::Internal(anyhow::anyhow!("edge middleware: {error}"))
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    state: AppState,
    apis: Apis,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // Wakes the relay and the projection workers after commits.
    let signal = tokio::spawn(
        state
            .commit_signal
            .clone()
            .run(state.pool.clone(), shutdown.clone()),
    );
    let positions = tokio::spawn(
        state
            .positions
            .clone()
            .run(state.reads.clone(), shutdown.clone()),
    );
    if let Some(web) = &state.web {
        tokio::spawn(web.live.clone().run(state.reads.clone(), shutdown.clone()));
        tokio::spawn(web.clone().sweep_sessions(shutdown.clone()));
    }
    let grace = state.request_timeout;
    // Normalising must wrap the router: routing happens inside it.
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state, apis));
    // The peer's address keys the rate limit of callers without a token.
    let app =
        ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app);
    let addr = listener.local_addr()?;
    let served = match tls {
        None => {
            tracing::info!(%addr, ?apis, "serving HTTP");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(config) => {
            tracing::info!(%addr, ?apis, "serving HTTPS");
            let handle = axum_server::Handle::new();
            let stop = handle.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                // In-flight requests end within their timeout anyway.
                stop.graceful_shutdown(Some(grace));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(app)
                .await
        }
    };
    signal.abort();
    positions.abort();
    served
}

/// A strong ETag for an order version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Unfolds a command's result into its outcome or the error to answer with.
fn settle(handled: Handled) -> Result<Outcome, ApiError> {
    match handled {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(rejection)) => Err(rejection.into()),
        Err(store) => Err(store.into()),
    }
}

/// Changes an existing order (a move, a cancellation) of a caller who
/// reaches `stores`: the order as it now is, and the change's log position.
async fn change(
    state: &AppState,
    (order_id, user_id): (domain::OrderId, &domain::UserId),
    stores: &crate::auth::StoreScope,
    command: domain::Command,
    if_match: Option<u64>,
    metadata: &domain::Metadata,
) -> Result<(crate::view::OrderView, i64), ApiError> {
    let outcome = settle(
        state
            .orders
            .handle(order_id, user_id, stores, command, if_match, metadata)
            .await,
    )?;
    let view =
        crate::view::OrderView::from_stream(&outcome.stream).ok_or(ApiError::OrderNotFound)?;
    Ok((view, outcome.log_position))
}

/// A write's response: the body, its `ETag` and the `X-Log-Position`.
fn order_response(
    status: StatusCode,
    version: u64,
    position: i64,
    body: impl IntoResponse,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag(version)) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(LOG_POSITION, HeaderValue::from(position));
    response
}
