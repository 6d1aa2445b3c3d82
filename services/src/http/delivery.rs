//! The delivery service, `/delivery-ms`: staff move orders through their
//! lifecycle.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use domain::{Command, Status};
use serde_json::Value;

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{self, ApiPath, Fields, IfMatch, RequestContext};
use super::{order_response, settle, AppState};
use crate::view::OrderView;

pub fn router() -> Router<AppState> {
    Router::new().route("/delivery-ms/{user_id}/{order_id}/status", post(move_order))
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
