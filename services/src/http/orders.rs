//! The order service, `/order-ms`: customers place, read and cancel orders.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Command, OrderId, UserId};
use projections::orders as orders_model;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{
    self, ApiPath, Fields, IdempotencyKeyHeader, IfMatch, QueryPairs, ReadFreshness, RequestContext,
};
use super::order_body::{fingerprint, parse_order};
use super::state::AppState;
use super::{order_response, settle};
use crate::store::IdempotencyKey;
use crate::view::OrderView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(welcome))
        .routes(routes!(place_order, list_orders))
        .routes(routes!(order_detail))
        .routes(routes!(cancel_order))
}

/// As the original service greeted.
#[utoipa::path(get, path = "/order-ms", tag = "order-ms",
    responses((status = 200, description = "The greeting", body = String, content_type = "text/plain")))]
async fn welcome() -> &'static str {
    "Welcome to ORDER Microservice!"
}

/// Place an order.
#[utoipa::path(post, path = "/order-ms/{user_id}/orders", tag = "order-ms",
    params(
        ("user_id" = crate::http::docs::UserIdParam, Path),
        ("Idempotency-Key" = Option<crate::http::docs::IdempotencyKeyParam>, Header, nullable = false, description = "The same key and body again returns the same order"),
    ),
    request_body(content((super::order_body::PlaceOrderBody = "application/json"), (super::order_body::PlaceOrderForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Placed", body = OrderView, headers(("Location" = String), ("ETag" = String), ("X-Log-Position" = i64), ("Server-Timing" = String, description = "Where the request's time went, in milliseconds: auth, idempotency (with a key), menu, append"))),
        (status = 400, description = "Malformed body or path", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, response = inline(crate::http::docs::BodyTooLarge)),
        (status = 415, response = inline(crate::http::docs::UnsupportedBody)),
        (status = 422, description = "Invalid fields, or an Idempotency-Key reused with another body", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = inline(crate::http::docs::WriteUnavailable))
    ),
    security(("bearer" = [])))]
async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ctx: RequestContext,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    auth_took: Option<axum::Extension<crate::timing::AuthTook>>,
    Fields(body): Fields,
) -> ApiResult<Response> {
    let user_id = extract::user_id(&user)?;
    let actor = caller.acts_for(&user_id)?;
    let asked = parse_order(&body).map_err(ApiError::Validation)?;
    let key = key.map(|key| IdempotencyKey {
        scope: user_id.to_string(),
        key,
        fingerprint: fingerprint(&asked),
    });
    let metadata = ctx.metadata(actor);
    let place = crate::commands::PlaceRequest {
        order_id: OrderId::generate(),
        user_id,
        store_id: asked.store_id,
        lines: asked.lines,
        as_items: asked.as_items,
    };
    let mut outcome = settle(state.orders.place(place, &metadata, key).await)?;
    let view = OrderView::from_stream(&outcome.stream)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a placed order folded to nothing")))?;
    let location = state.prefix.join(&format!(
        "/order-ms/{}/orders/{}",
        view.user_id, view.order_id
    ));
    let mut response = order_response(
        StatusCode::CREATED,
        view.version,
        outcome.log_position,
        Json(&view),
    );
    let headers = response.headers_mut();
    if let Ok(location) = location.parse() {
        headers.insert(header::LOCATION, location);
    }
    if outcome.replayed {
        headers.insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    // Where the time went: checking the caller first, then each stage.
    let mut stages = crate::timing::Stages::default();
    if let Some(axum::Extension(crate::timing::AuthTook(took))) = auth_took {
        stages.record("auth", took);
    }
    stages.extend(std::mem::take(&mut outcome.stages));
    if let Ok(timing) = header::HeaderValue::from_str(&stages.server_timing()) {
        headers.insert("server-timing", timing);
    }
    Ok(response)
}

/// Page sizes of the order list (API.md, the HTTP contract kept beside the repository).
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// A user's orders from the order read model, newest first. The body stays a
/// JSON array (as the original clients expect); the cursor of the next page
/// travels in `Link: <…>; rel="next"` and `X-Next-Cursor`.
#[utoipa::path(get, path = "/order-ms/{user_id}/orders", tag = "order-ms",
    params(
        ("user_id" = crate::http::docs::UserIdParam, Path),
        ("limit" = Option<u32>, Query, nullable = false, description = "1 to 500, default 50", minimum = 1, maximum = 500),
        ("next" = Option<crate::http::docs::OrderIdParam>, Query, nullable = false, description = "The cursor a previous page returned (X-Next-Cursor)"),
        ("X-Log-Position" = Option<i64>, Header, nullable = false, minimum = 1, description = "Wait until the read model has this write"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`consistency=strong`: wait until the read model has every committed write"),
    ),
    responses(
        (status = 200, description = "The user's orders, newest first", body = Vec<OrderView>, headers(("Link" = String), ("X-Next-Cursor" = String))),
        (status = 400, description = "A bad query parameter or header", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The read model did not catch up in time, or unavailable", body = crate::http::error::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = [])))]
async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    query: QueryPairs,
    ReadFreshness(freshness): ReadFreshness,
) -> ApiResult<Response> {
    let user_id = extract::user_id(&user)?;
    let stores = caller.reads_for(&user_id)?.filter();
    let limit = query.limit(MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let before = match query.get("next")? {
        None => None,
        Some(text) => Some(
            OrderId::parse(text.trim())
                .map_err(|_| ApiError::InvalidQuery {
                    field: "next",
                    message: "must be the cursor a previous page returned".into(),
                })?
                .as_uuid(),
        ),
    };
    let caught_up = state
        .positions
        .wait_until(&state.reads, orders_model::NAME, freshness, state.read_wait)
        .await?;
    if !caught_up {
        return Err(ApiError::NotCaughtUp);
    }
    let mut rows = orders_model::list_for_user(
        &state.reads,
        user_id.as_str(),
        stores.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let views: Vec<OrderView> = rows.iter().map(OrderView::from).collect();
    let next = views.last().filter(|_| more).map(|v| v.order_id);
    let mut response = Json(views).into_response();
    if let Some(next) = next {
        let link = format!("</order-ms/{user_id}/orders?limit={limit}&next={next}>; rel=\"next\"");
        let headers = response.headers_mut();
        if let Ok(link) = header::HeaderValue::from_str(&link) {
            headers.insert(header::LINK, link);
        }
        if let Ok(cursor) = header::HeaderValue::from_str(&next.to_string()) {
            headers.insert("x-next-cursor", cursor);
        }
    }
    Ok(response)
}

#[utoipa::path(get, path = "/order-ms/{user_id}/orders/{order_id}", tag = "order-ms",
    params(("user_id" = crate::http::docs::UserIdParam, Path), ("order_id" = crate::http::docs::OrderIdParam, Path), ("If-None-Match" = Option<crate::http::docs::EtagParam>, Header, nullable = false)),
    responses(
        (status = 200, description = "The order, folded from its events", body = OrderView, headers(("ETag" = String))),
        (status = 304, description = "Not modified since the ETag given"),
        (status = 400, response = inline(crate::http::docs::InvalidUserId)),
        (status = 404, response = inline(crate::http::docs::OrderNotFound)),
        (status = 503, response = inline(crate::http::docs::Unavailable))
    ),
    security(("bearer" = [])))]
async fn order_detail(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, order)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let user_id: UserId = extract::user_id(&user)?;
    let stores = caller.reads_for(&user_id)?;
    let order_id = extract::order_id(&order)?;
    let stream = state
        .orders
        .load_owned(order_id, &user_id)
        .await?
        .ok_or(ApiError::OrderNotFound)?;
    let view = OrderView::from_stream(&stream)
        .filter(|view| stores.includes(&view.store_id))
        .ok_or(ApiError::OrderNotFound)?;
    let etag = super::etag(view.version);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| extract::parse_etag(t) == Some(view.version) || t.trim() == "*")
        });
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], Json(view)).into_response())
}

#[utoipa::path(post, path = "/order-ms/{user_id}/orders/{order_id}/cancel", tag = "order-ms",
    params(("user_id" = crate::http::docs::UserIdParam, Path), ("order_id" = crate::http::docs::OrderIdParam, Path), ("If-Match" = Option<crate::http::docs::EtagParam>, Header, nullable = false)),
    responses(
        (status = 200, description = "Cancelled", body = OrderView, headers(("ETag" = String), ("X-Log-Position" = i64))),
        (status = 400, description = "A malformed user id or header", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, response = inline(crate::http::docs::OrderNotFound)),
        (status = 409, description = "The lifecycle does not allow it", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 412, response = inline(crate::http::docs::VersionMismatch)),
        (status = 503, response = inline(crate::http::docs::WriteUnavailable))
    ),
    security(("bearer" = [])))]
async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, order)): ApiPath<(String, String)>,
    IfMatch(if_match): IfMatch,
    ctx: RequestContext,
) -> ApiResult<Response> {
    let user_id = extract::user_id(&user)?;
    let actor = caller.acts_for(&user_id)?;
    let order_id = extract::order_id(&order)?;
    let metadata = ctx.metadata(actor);
    let (view, position) = super::change(
        &state,
        (order_id, &user_id),
        &crate::auth::StoreScope::Every,
        Command::Cancel,
        if_match,
        &metadata,
    )
    .await?;
    Ok(order_response(
        StatusCode::OK,
        view.version,
        position,
        Json(&view),
    ))
}
