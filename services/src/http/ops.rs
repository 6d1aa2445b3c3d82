//! Operational endpoints: the original health check, liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health-check", get(health_check))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// As the original: 200 text while the process runs.
async fn health_check(State(state): State<AppState>) -> String {
    format!("Server is running on {} port", state.port)
}

/// Liveness: the process answers. Never touches dependencies, so a database
/// outage does not get the process restarted for nothing.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 only when the dependencies answer; 503 with the reason.
async fn readyz(State(state): State<AppState>) -> Response {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match check {
        Ok(Ok(_)) => (StatusCode::OK, "ready: postgres ok\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: postgres: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: postgres did not answer within 2s\n",
        )
            .into_response(),
    }
}
