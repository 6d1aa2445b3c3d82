//! Operational endpoints: the original health check, liveness and readiness.

use std::time::Duration;

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
/// brokers when the process is configured with them); 503 with the reasons.
/// Orders held back behind events this build cannot read are reported in the
/// body but keep it 200: during a rolling deploy the old instances must stay
/// in rotation while the new ones take the projections over.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Postgres (and Kafka, when configured) answer", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready, with the reasons", body = String, content_type = "text/plain"),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let postgres = async {
        match tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query!("SELECT 1 AS alive").fetch_one(&state.pool),
        )
        .await
        {
            Ok(Ok(_)) => Ok("postgres ok".to_owned()),
            Ok(Err(e)) => Err(format!("postgres: {e}")),
            Err(_) => Err("postgres did not answer within 2s".to_owned()),
        }
    };
    let kafka = async {
        let Some(source) = state.kafka.as_ref() else {
            return Ok("kafka not configured".to_owned());
        };
        let probe = async {
            let client = source.connect(Duration::from_secs(2)).await?;
            client.list_topics().await
        };
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(_)) => Ok("kafka ok".to_owned()),
            Ok(Err(e)) => Err(format!("kafka: {e}")),
            Err(_) => Err("kafka did not answer within 3s".to_owned()),
        }
    };
    let held = async {
        let mut conn = state.reads.acquire().await.ok()?;
        let summary = projections::held::summary(&mut conn).await.ok()?;
        let lines: Vec<String> = summary
            .iter()
            .filter(|h| h.orders > 0)
            .map(|h| {
                let first = h.first.as_ref().map_or_else(String::new, |f| {
                    format!(
                        " from event {} ({} v{}, {}): {}",
                        f.event_id, f.event_type, f.schema_version, f.source, f.reason
                    )
                });
                format!("{} holds back {} order(s){first}", h.projection, h.orders)
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    };
    let held = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .ok()
        .flatten();
    let (postgres, kafka) = tokio::join!(postgres, kafka);
    match (postgres, kafka) {
        (Ok(p), Ok(k)) => {
            let held = held.map_or_else(String::new, |h| format!("; held: {h}"));
            (StatusCode::OK, format!("ready: {p}, {k}{held}\n")).into_response()
        }
        (p, k) => {
            let reasons: Vec<String> = [p, k].into_iter().filter_map(Result::err).collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", reasons.join("; ")),
            )
                .into_response()
        }
    }
}
