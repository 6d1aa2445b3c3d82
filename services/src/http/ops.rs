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

/// Readiness: 200 only when the dependencies answer (Postgres, and the Kafka
/// brokers when the process is configured with them); 503 with the reasons.
async fn readyz(State(state): State<AppState>) -> Response {
    let postgres = async {
        match tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&state.pool),
        )
        .await
        {
            Ok(Ok(_)) => Ok("postgres ok".to_owned()),
            Ok(Err(e)) => Err(format!("postgres: {e}")),
            Err(_) => Err("postgres did not answer within 2s".to_owned()),
        }
    };
    let kafka = async {
        let Some(brokers) = state.kafka_brokers.as_deref() else {
            return Ok("kafka not configured".to_owned());
        };
        let probe = async {
            let client = projections::kafka::connect(brokers, Duration::from_secs(2)).await?;
            client.list_topics().await
        };
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(_)) => Ok("kafka ok".to_owned()),
            Ok(Err(e)) => Err(format!("kafka: {e}")),
            Err(_) => Err("kafka did not answer within 3s".to_owned()),
        }
    };
    let (postgres, kafka) = tokio::join!(postgres, kafka);
    match (postgres, kafka) {
        (Ok(p), Ok(k)) => (StatusCode::OK, format!("ready: {p}, {k}\n")).into_response(),
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
