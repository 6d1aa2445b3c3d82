//! Prometheus metrics at `/metrics`: counters and histograms recorded where
//! things happen (requests, appends, relay, projection batches), and gauges
//! read from the database at scrape time (outbox backlog, projection
//! positions and lag), so they are right whichever process did the work.
//!
//! Names:
//! - `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}`
//! - `place_order_stage_seconds{stage}`: where a place-order's time goes
//!   (`auth`, `idempotency`, `menu`, `append`; `timing`)
//! - `event_store_appends_total`, `event_store_append_conflicts_total`
//! - `outbox_backlog_rows`, `outbox_oldest_age_seconds`
//! - `relay_published_total`, `relay_errors_total`
//! - `projection_position{projection}`, `projection_log_head`,
//!   `projection_lag_events{projection}`, `projection_lag_seconds{projection}`,
//!   `projection_batches_total{projection}`, `projection_events_applied_total{projection}`,
//!   `projection_retries_total{projection}`
//! - `projection_held_orders{projection}`, `projection_held_events{projection}`
//!   (orders held back behind an event the projection cannot apply),
//!   `projection_events_held_total`, `projection_events_released_total`,
//!   `projection_events_parked_total`, `projection_corrupt_moves_total`,
//!   `delivery_dead_letters` (records on the topic that are not order events)

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use infra::kafka::KafkaSource;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// The process-wide recorder (installed once, shared by every server the
/// process runs, as the tests' several apps do).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            // From 0.1 ms: a place-order's stages (`timing`) take fractions
            // of a millisecond each when the database is near.
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test harness); then
        // this handle renders only what was recorded through it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Middleware: counts every request by route template and status, and times it.
pub async fn track(
    axum::extract::State(prefix): axum::extract::State<crate::http::prefix::PathPrefix>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let in_flight = InFlight::new();
    let method = req.method().as_str().to_owned();
    // The route as API.md writes it, whatever prefix it is served under.
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_owned(),
        |p| {
            let path = p.as_str();
            match path.strip_prefix(prefix.as_str()) {
                Some("") => "/".to_owned(),
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                _ => path.to_owned(),
            }
        },
    );
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    // In flight until its body is sent: a live stream counts while open.
    response.map(|body| {
        use http_body_util::BodyExt;
        axum::body::Body::new(body.map_frame(move |frame| {
            let _held = &in_flight;
            frame
        }))
    })
}

/// Counts a request in `http_requests_in_flight` while it lives.
struct InFlight;

impl InFlight {
    fn new() -> InFlight {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

/// `GET /metrics`: reads the database-derived gauges, then renders everything.
pub async fn render(pool: &PgPool, kafka: Option<&KafkaSource>) -> Response {
    if let Err(e) = database_gauges(pool, kafka).await {
        tracing::warn!(error = %e, "metrics: cannot read the database gauges");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
        .into_response()
}

async fn database_gauges(pool: &PgPool, kafka: Option<&KafkaSource>) -> anyhow::Result<()> {
    let outbox = sqlx::query!(
        r#"SELECT count(*) AS "rows!",
                  extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS age
             FROM outbox"#
    )
    .fetch_one(pool)
    .await?;
    let (rows, age) = (outbox.rows, outbox.age);
    metrics::gauge!("outbox_backlog_rows").set(rows as f64);
    metrics::gauge!("outbox_oldest_age_seconds").set(age.unwrap_or(0.0));
    for s in projections::registry::status(pool, kafka).await? {
        let name = s.name.clone();
        metrics::gauge!("projection_position", "projection" => name.clone()).set(s.position as f64);
        metrics::gauge!("projection_lag_events", "projection" => name.clone())
            .set(s.lag_events as f64);
        metrics::gauge!("projection_lag_seconds", "projection" => name).set(s.lag.as_secs_f64());
        metrics::gauge!("projection_log_head").set(s.head as f64);
    }
    let mut conn = pool.acquire().await?;
    for h in projections::held::summary(&mut conn).await? {
        metrics::gauge!("projection_held_orders", "projection" => h.projection.clone())
            .set(h.orders as f64);
        metrics::gauge!("projection_held_events", "projection" => h.projection)
            .set(h.events as f64);
    }
    let dead = sqlx::query_scalar!(r#"SELECT count(*) AS "dead!" FROM delivery.dead_letters"#)
        .fetch_one(&mut *conn)
        .await?;
    metrics::gauge!("delivery_dead_letters").set(dead as f64);
    Ok(())
}
