//! The delivery service, `/delivery-ms`: staff move orders through their
//! lifecycle.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::{Command, Status};
use serde_json::Value;

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{self, ApiPath, Fields, IfMatch, RequestContext};
use super::{order_response, settle, AppState};
use crate::view::{DeliveryStatusView, OrderView};
use projections::delivery;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/delivery-ms/{status}", get(orders_in_status))
        .route("/delivery-ms/{user_id}/{order_id}", get(delivery_status))
        .route("/delivery-ms/{user_id}/{order_id}/status", post(move_order))
}

/// Every order now in a status, oldest first, from the delivery side's own
/// read model (fed from Kafka). The status is a code or its Korean label.
async fn orders_in_status(
    State(state): State<AppState>,
    ApiPath(status): ApiPath<String>,
) -> ApiResult<Response> {
    let status = Status::parse(status.trim()).map_err(|_| ApiError::UnknownStatus {
        given: status.clone(),
    })?;
    let rows = delivery::list_by_status(&state.pool, status).await?;
    let views: Vec<DeliveryStatusView> = rows.iter().map(DeliveryStatusView::from).collect();
    Ok(Json(views).into_response())
}

/// One order's delivery status, as the delivery side knows it.
async fn delivery_status(
    State(state): State<AppState>,
    ApiPath((user, order)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let user_id = extract::user_id(&user)?;
    let order_id = extract::order_id(&order)?;
    let row = delivery::get(&state.pool, order_id.as_uuid())
        .await?
        .filter(|r| r.user_id == user_id.as_str())
        .ok_or(ApiError::OrderNotFound)?;
    Ok(Json(DeliveryStatusView::from(&row)).into_response())
}

/// Staff move an order on: `{"status": "preparing"}` or `{"status": "제작중"}`.
async fn move_order(
    State(state): State<AppState>,
    ApiPath((user, order)): ApiPath<(String, String)>,
    IfMatch(if_match): IfMatch,
    ctx: RequestContext,
    Fields(body): Fields,
) -> ApiResult<Response> {
    let user_id = extract::user_id(&user)?;
    let order_id = extract::order_id(&order)?;
    let to = match body.get("status") {
        None | Some(Value::Null) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "status",
                format!("is required; valid statuses are {}", Status::valid_list()),
            )]))
        }
        Some(Value::String(s)) => {
            Status::parse(s).map_err(|_| ApiError::UnknownStatus { given: s.clone() })?
        }
        Some(other) => {
            return Err(ApiError::UnknownStatus {
                given: other.to_string(),
            })
        }
    };
    let metadata = ctx.metadata("staff".to_owned());
    let outcome = settle(
        state
            .orders
            .handle(
                order_id,
                &user_id,
                Command::MoveTo { to },
                if_match,
                &metadata,
            )
            .await,
    )?;
    let view = OrderView::from_stream(&outcome.stream).ok_or(ApiError::OrderNotFound)?;
    Ok(order_response(
        StatusCode::OK,
        view.version,
        outcome.log_position,
        Json(view.delivery_status()),
    ))
}
