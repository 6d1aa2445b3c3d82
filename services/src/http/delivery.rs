//! The delivery service, `/delivery-ms`: staff move orders through their
//! lifecycle.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Command, Status};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Caller;
use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{self, ApiPath, Fields, IfMatch, QueryPairs, RequestContext};
use super::order_response;
use super::state::AppState;
use crate::view::DeliveryStatusView;
use projections::{delivery, held};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(orders_in_status))
        .routes(routes!(delivery_status))
        .routes(routes!(move_order))
}

/// The most orders one status list answers (and its size when no `limit`
/// is given).
const LIST_MAX: i64 = 500;

/// Every order now in a status, oldest first, from the delivery side's own
/// read model (fed from Kafka). The status is a code or its Korean label.
#[utoipa::path(get, path = "/delivery-ms/{status}", tag = "delivery-ms",
    params(
        ("status" = crate::http::docs::StatusInput, Path, description = "A code (`received`) or its Korean label (`접수완료`), percent-encoded"),
        ("limit" = Option<u32>, Query, nullable = false, description = "At most this many orders, 1 to 500 (500 when absent)", minimum = 1, maximum = 500),
        ("order" = Option<crate::http::docs::ListOrderParam>, Query, nullable = false, description = "`newest`: the most recent first; `oldest` (the default): the longest waiting first"),
        ("store" = Option<String>, Query, nullable = false, description = "Only this store's orders (`GET /stores`)", pattern = "^[A-Za-z0-9._-]{1,40}$"),
    ),
    responses(
        (status = 200, description = "Every order now in that status, oldest first", body = Vec<DeliveryStatusView>),
        (status = 400, description = "An unknown status (the answer lists the valid ones), or a bad `limit` or `order`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = inline(crate::http::docs::Unavailable))
    ),
    security(("bearer" = [])))]
async fn orders_in_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(status): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Response> {
    caller.staff()?;
    let status = Status::parse(status.trim()).map_err(|_| ApiError::UnknownStatus {
        given: status.clone(),
    })?;
    // Bounded like every list, asked or not.
    let limit = query.limit(LIST_MAX)?.unwrap_or(LIST_MAX);
    let order = match query.get("order")?.map(str::trim) {
        None | Some("oldest") => delivery::ListOrder::OldestFirst,
        Some("newest") => delivery::ListOrder::NewestFirst,
        Some(_) => {
            return Err(ApiError::InvalidQuery {
                field: "order",
                message: "must be newest or oldest".into(),
            })
        }
    };
    // One of the caller's stores (`?store=`), or all of them.
    let stores = caller.stores_asked(query.get("store")?)?.filter();
    let rows =
        delivery::list_by_status(&state.reads, status, stores.as_deref(), order, limit).await?;
    let views: Vec<DeliveryStatusView> = rows.iter().map(DeliveryStatusView::from).collect();
    Ok(Json(views).into_response())
}

/// One order's delivery status, as the delivery side knows it.
#[utoipa::path(get, path = "/delivery-ms/{user_id}/{order_id}", tag = "delivery-ms",
    params(("user_id" = crate::http::docs::UserIdParam, Path), ("order_id" = crate::http::docs::OrderIdParam, Path)),
    responses(
        (status = 200, description = "The order's delivery status; `ETag` = the version the delivery side has applied", body = DeliveryStatusView, headers(("ETag" = String))),
        (status = 400, response = inline(crate::http::docs::InvalidUserId)),
        (status = 404, response = inline(crate::http::docs::OrderNotFound)),
        (status = 503, description = "Unavailable, or the order is held back behind an event this version cannot read (`/problems/order-held`)", body = crate::http::error::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = [])))]
async fn delivery_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, order)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    caller.staff()?;
    let user_id = extract::user_id(&user)?;
    let order_id = extract::order_id(&order)?;
    let row = delivery::get(&state.reads, order_id.as_uuid()).await?;
    if row.as_ref().is_none_or(|r| r.user_id == user_id.as_str()) {
        // Held back behind an event this build cannot read: what the model
        // shows may be behind the order's truth.
        if let Some(held) =
            held::held_order(&state.reads, delivery::NAME, order_id.as_uuid()).await?
        {
            return Err(ApiError::OrderHeld {
                order_id: held.stream_id,
                event: format!(
                    "the delivery view holds it back from event {} ({} v{}, {}): {}",
                    held.event_id, held.event_type, held.schema_version, held.source, held.reason
                ),
            });
        }
    }
    let stores = caller.stores();
    let row = row
        .filter(|r| r.user_id == user_id.as_str() && stores.includes(&r.store_id))
        .ok_or(ApiError::OrderNotFound)?;
    let view = DeliveryStatusView::from(&row);
    Ok(([(header::ETAG, super::etag(view.version))], Json(view)).into_response())
}

/// Staff move an order on: `{"status": "preparing"}` or `{"status": "제작중"}`.
#[utoipa::path(post, path = "/delivery-ms/{user_id}/{order_id}/status", tag = "delivery-ms",
    params(("user_id" = crate::http::docs::UserIdParam, Path), ("order_id" = crate::http::docs::OrderIdParam, Path), ("If-Match" = Option<crate::http::docs::EtagParam>, Header, nullable = false)),
    request_body(content((crate::http::docs::MoveBody = "application/json"), (crate::http::docs::MoveBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Moved", body = DeliveryStatusView, headers(("ETag" = String), ("X-Log-Position" = i64))),
        (status = 400, description = "Malformed body, or an unknown status (the answer lists the valid ones)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, response = inline(crate::http::docs::OrderNotFound)),
        (status = 409, description = "The lifecycle does not allow the move", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 412, response = inline(crate::http::docs::VersionMismatch)),
        (status = 413, response = inline(crate::http::docs::BodyTooLarge)),
        (status = 415, response = inline(crate::http::docs::UnsupportedBody)),
        (status = 422, description = "No status given", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = inline(crate::http::docs::WriteUnavailable))
    ),
    security(("bearer" = [])))]
async fn move_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, order)): ApiPath<(String, String)>,
    IfMatch(if_match): IfMatch,
    ctx: RequestContext,
    Fields(body): Fields,
) -> ApiResult<Response> {
    let actor = caller.staff()?;
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
    let metadata = ctx.metadata(actor);
    let (view, position) = super::change(
        &state,
        (order_id, &user_id),
        &caller.stores(),
        Command::MoveTo { to },
        if_match,
        &metadata,
    )
    .await?;
    Ok(order_response(
        StatusCode::OK,
        view.version,
        position,
        Json(view.delivery_status()),
    ))
}
