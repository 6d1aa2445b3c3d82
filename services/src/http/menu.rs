//! `GET /menu`: the drinks on sale, for anyone ("Menu" in API.md, the HTTP contract kept beside the repository).

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use domain::StoreId;

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::state::AppState;
use crate::catalog::Catalog;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(menu))
        .routes(routes!(stores))
}

/// One drink on the menu.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire form of domain::Drink
pub struct MenuDrink {
    #[schema(example = "americano")]
    coffee_name: String,
    /// The price in won per size the drink comes in (`regular`, `large`).
    #[schema(value_type = std::collections::BTreeMap<String, u64>, example = json!({"regular": 4500, "large": 5000}))]
    prices: (),
    /// The temperatures it is served at (`hot`, `iced`).
    #[schema(value_type = Vec<String>, example = json!(["hot", "iced"]))]
    temperatures: (),
    sold_out: bool,
}

/// The drinks on sale at a store (`?store=`, the default store's when
/// absent); `[]` when no menu is set (then any drink and price in range is
/// accepted).
#[utoipa::path(get, path = "/menu", tag = "menu",
    params(("store" = Option<String>, Query, nullable = false, description = "The store whose sold-out drinks to show (`GET /stores`); the default store when absent", pattern = "^[A-Za-z0-9._-]{1,40}$")),
    responses(
        (status = 200, description = "The menu, in its order", body = Vec<MenuDrink>),
        (status = 400, description = "A malformed `store`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such store", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = inline(crate::http::docs::Unavailable)),
    ))]
async fn menu(
    State(state): State<AppState>,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let store = match query.get("store")?.map(str::trim) {
        None => StoreId::default_store(),
        Some(store) => StoreId::parse(store).map_err(|e| ApiError::InvalidQuery {
            field: "store",
            message: e.to_string(),
        })?,
    };
    let catalog = Catalog::load(&state.reads)
        .await
        .map_err(crate::store::StoreError::from)?;
    if catalog.store(&store).is_none() {
        return Err(ApiError::StoreNotFound);
    }
    Ok(Json(crate::menu::to_json(catalog.menu_at(&store))))
}

/// One store of the chain.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire form of domain::Store
pub struct StoreView {
    #[schema(example = "main", pattern = "^[A-Za-z0-9._-]{1,40}$")]
    store_id: String,
    #[schema(example = "본점")]
    name: String,
    /// Whether it takes orders now.
    open: bool,
}

/// The chain's stores, in their order; one default store when none is set.
#[utoipa::path(get, path = "/stores", tag = "menu",
    responses(
        (status = 200, description = "The stores", body = Vec<StoreView>),
        (status = 503, response = inline(crate::http::docs::Unavailable)),
    ))]
async fn stores(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let stores = crate::stores::load(&state.reads)
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(Json(crate::stores::to_json(&stores)))
}
