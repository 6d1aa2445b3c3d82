//! An upgrade in place from a database the earlier builds made: three
//! builds in turn (OrderPlaced v1 without options, v2 with them, v3 with
//! pickup numbers), each through its own HTTP API, on the database the one
//! before it left (tests/fixtures/upgrade, written by
//! scripts/upgrade-fixture.sh; no row of it is written by hand). Restored
//! and migrated, this build answers every order exactly as the last old build
//! did (every original field), as one line at the default store; both read
//! models equal the fold of the log (`orders verify`); the orders model
//! rebuilt from the log is the same; and the old orders move on.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use e2e::{eventually, run_orders, spawn_orders_all_on, As, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/upgrade")
        .join(name)
}

/// A fresh database holding what the earlier builds left (`eras.sql.gz`).
async fn restored() -> TestDb {
    let db = TestDb::empty().await;
    let url = db.url.split('?').next().unwrap_or_default().to_owned();
    let restore = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; gzip -dc "$0" | "$1" -X -q -v ON_ERROR_STOP=1 -d "$2" >/dev/null"#)
        .arg(fixture("eras.sql.gz"))
        .arg(e2e::processes::psql())
        .arg(&url)
        .stdout(Stdio::null())
        .output()
        .await
        .expect("run psql");
    assert!(
        restore.status.success(),
        "restoring the fixture: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    db
}

/// Each order the old builds answered: (user, the last old build's order
/// answer, its delivery answer).
fn old_answers() -> Vec<(String, Value, Value, String)> {
    let text = std::fs::read_to_string(fixture("eras.json")).expect("eras.json");
    let state: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("eras.json");
    state
        .into_values()
        .map(|entry| {
            (
                entry["user"].as_str().expect("user").to_owned(),
                entry["order"].clone(),
                entry["delivery"].clone(),
                entry["era"].as_str().expect("era").to_owned(),
            )
        })
        .collect()
}

/// Every field the old build answered is answered the same; the order is
/// one line at the default store.
fn assert_answered_as_before(now: &Value, before: &Value, priced: bool) {
    for (field, value) in before.as_object().expect("an answer") {
        assert_eq!(&now[field], value, "{field}: now {now}, before {before}");
    }
    assert_eq!(now["store_id"], "main", "{now}");
    let mut line = json!({
        "coffee_name": before["coffee_name"],
        "coffee_qty": before["coffee_qty"],
        "options": before["options"],
    });
    if priced {
        line["coffee_price"] = before["coffee_price"].clone();
        line["line_price"] = before["total_price"].clone();
    }
    let items = now["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{now}");
    for (field, value) in line.as_object().expect("a line") {
        assert_eq!(&items[0][field], value, "items[0].{field}: {now}");
    }
}

/// Order `id`'s delivery status, as staff of the default store read it.
async fn delivery_of(app: &TestApp, user: &str, id: &str) -> e2e::Reply {
    app.request_as(
        As::Staff,
        Method::GET,
        &format!("/delivery-ms/{user}/{id}"),
        None,
        &[],
    )
    .await
}

async fn assert_every_order_answers_as_before(app: &TestApp) {
    for (user, order, delivery, era) in old_answers() {
        let id = order["order_id"].as_str().expect("order_id");
        let now = app
            .request_as(
                As::customer(&user),
                Method::GET,
                &format!("/order-ms/{user}/orders/{id}"),
                None,
                &[("Prefer", "consistency=strong")],
            )
            .await;
        assert_eq!(now.status, 200, "{era} {id}: {}", now.text);
        assert_answered_as_before(&now.json(), &order, true);
        // The delivery side kept what the old builds applied: no prices
        // (they never carried them to it).
        let now = delivery_of(app, &user, id).await;
        assert_eq!(now.status, 200, "{era} {id}: {}", now.text);
        assert_answered_as_before(&now.json(), &delivery, false);
    }
}

#[tokio::test]
async fn a_database_the_earlier_builds_made_reads_the_same_after_the_upgrade() {
    let db = restored().await;
    // What the fixture holds: placements of each earlier schema version.
    let placed: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT schema_version, count(*) FROM events WHERE event_type = 'OrderPlaced'
          GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("placements");
    assert_eq!(placed, [(1, 4), (2, 3), (3, 2)], "the fixture's placements");
    let before = old_answers();
    assert_eq!(before.len(), 9);

    let (app, _orders) = spawn_orders_all_on(db, &[]).await;
    assert_every_order_answers_as_before(&app).await;
    // The old builds left no prices on the delivery side.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM delivery.order_status WHERE coffee_price IS NULL")
            .await,
        9
    );

    let verify = run_orders(&app.db, None, &["verify"]).await;
    assert!(
        verify.status.success(),
        "verify after the upgrade: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The orders model rebuilt from the log (upcast on every read) is the
    // same.
    let rebuild = run_orders(&app.db, None, &["projections", "rebuild", "orders"]).await;
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert_every_order_answers_as_before(&app).await;

    the_old_orders_move_on(&app, &before).await;
    let verify = run_orders(&app.db, None, &["verify"]).await;
    assert!(
        verify.status.success(),
        "verify after the old orders moved on: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// A v1 order delivered by staff, a v2 order cancelled by its customer:
/// both sides follow.
async fn the_old_orders_move_on(app: &TestApp, before: &[(String, Value, Value, String)]) {
    let find = |key_user: &str, name: &str| {
        before
            .iter()
            .find(|(user, order, _, _)| user == key_user && order["coffee_name"] == name)
            .map(|(user, order, _, _)| (user.clone(), order.clone()))
            .expect("a fixture order")
    };
    let (lee, espresso) = find("old.lee", "espresso");
    let id = espresso["order_id"].as_str().expect("id");
    let moved = app.move_to(&lee, id, "delivered", &[]).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let (park, cold_brew) = find("mid.park", "cold brew");
    let cold_id = cold_brew["order_id"].as_str().expect("id");
    let cancelled = app.cancel(&park, cold_id, &[]).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    for (user, id, status) in [(&lee, id, "delivered"), (&park, cold_id, "cancelled")] {
        eventually(
            Duration::from_secs(30),
            "the delivery side applies the move",
            || async {
                let now = delivery_of(app, user, id).await;
                (now.status == 200 && now.json()["status"] == status).then_some(())
            },
        )
        .await;
    }
}
