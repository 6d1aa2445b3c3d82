//! Orders as a café takes them (API.md "Order service", "Menu"): several
//! drinks in one order, each checked against the menu; a line's missing
//! options are the drink's own defaults; stores, each with its own
//! sold-out drinks and its own pickup numbers.

mod lines;
mod stores;

use e2e::TestApp;
use serde_json::{json, Value};

fn menu() -> Value {
    json!([
        {"coffee_name": "americano", "prices": {"regular": 4500, "large": 5000},
         "temperatures": ["hot", "iced"]},
        {"coffee_name": "latte", "prices": {"regular": 5000, "large": 5500},
         "temperatures": ["hot", "iced"]},
        {"coffee_name": "cold brew", "prices": {"regular": 5200},
         "temperatures": ["iced"]}
    ])
}

async fn set_menu(app: &TestApp) {
    let menu = services::menu::parse(&menu().to_string()).expect("a valid menu");
    services::menu::replace(&app.db.pool, &menu)
        .await
        .expect("set the menu");
}

/// Places `body` for USER0001 and expects a 422 naming `field`; nothing is
/// appended.
async fn refused(app: &TestApp, body: Value, field: &str) {
    app.refused_naming(body, field).await;
}
