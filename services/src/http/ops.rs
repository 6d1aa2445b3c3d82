//! Operational endpoints: the original health check, liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use axum::Extension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Caller;
use super::error::ApiError;
use super::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health_check))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// Prometheus metrics, for operators.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")
    ),
    security(("bearer" = [])))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.operator()?;
    Ok(crate::metrics::render(&state.reads, state.kafka.as_ref()).await)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 description of this API", body = Object)))]
async fn openapi_json(Extension(spec): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    axum::Json(spec.as_ref().clone()).into_response()
}

/// As the original: 200 text while the process runs.
#[utoipa::path(get, path = "/health-check", tag = "operations",
    responses((status = 200, description = "Server is running on {port} port", body = String, content_type = "text/plain")))]
async fn health_check(State(state): State<AppState>) -> String {
    format!("Server is running on {} port", state.port)
}

/// Liveness: the process answers. Never touches dependencies, so a database
/// outage does not get the process restarted for nothing.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Liveness", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 only when the dependencies answer (Postgres, and the Kafka
/// brokers when the process is configured with them); 503 otherwise. Anyone
/// learns only that; an operator (or anyone, without authentication) also
/// reads why: each dependency's answer, and the orders held back behind
/// events this build cannot read. Held orders keep it 200: during a rolling
/// deploy the old instances must stay in rotation while the new ones take the
/// projections over.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Postgres (and Kafka, when configured) answer: `ready`; an operator reads each dependency's answer and the held orders", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready: `not ready`; an operator reads the reasons", body = String, content_type = "text/plain"),
    ))]
async fn readyz(State(state): State<AppState>, caller: Option<Caller>) -> Response {
    let verdict = state
        .readiness
        .verdict(super::readiness::Dependencies {
            writes: &state.pool,
            reads: &state.reads,
            kafka: state.kafka.as_ref(),
        })
        .await;
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let operator = caller.is_some_and(|c| c.operator().is_ok());
    let body = match (operator, verdict.ready) {
        (true, _) => verdict.reasons,
        (false, true) => "ready\n".to_owned(),
        (false, false) => "not ready\n".to_owned(),
    };
    (status, body).into_response()
}
