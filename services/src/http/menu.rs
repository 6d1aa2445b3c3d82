//! `GET /menu`: the drinks on sale, for anyone ("Menu" in API.md, the HTTP contract kept beside the repository).

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(menu))
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

/// The drinks on sale; `[]` when no menu is set (then any drink and price in
/// range is accepted).
#[utoipa::path(get, path = "/menu", tag = "menu",
    responses(
        (status = 200, description = "The menu, in its order", body = Vec<MenuDrink>),
        (status = 503, response = inline(crate::http::docs::Unavailable)),
    ))]
async fn menu(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let menu = crate::menu::load(&state.reads)
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(Json(crate::menu::to_json(&menu)))
}
