//! Browser sessions written straight into a test's database, as the
//! service's session store writes them: for the tests of what a session may
//! do (and when it stops), without driving a browser through the sign-in.

use std::collections::HashMap;

use serde_json::{json, Value};
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;
use tower_sessions_sqlx_store::PostgresStore;

use crate::TestDb;

/// A session holding `data`, valid for ten minutes; its cookie
/// (`orders_session=…`) and id.
pub async fn session_with(db: &TestDb, data: Value) -> (String, Id) {
    let store = PostgresStore::new(db.pool.clone())
        .with_schema_name("web")
        .and_then(|s| s.with_table_name("sessions"))
        .expect("the session table's names");
    let data: HashMap<String, Value> = serde_json::from_value(data).expect("a session's data");
    let mut record = Record {
        id: Id::default(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
    };
    store.create(&mut record).await.expect("store the session");
    (format!("orders_session={}", record.id), record.id)
}

/// A signed-in browser's session for `user` holding `access_token`, as the
/// sign-in writes it; its cookie and CSRF token.
pub async fn signed_in_session(db: &TestDb, user: &str, access_token: &str) -> (String, String) {
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let (cookie, _) = session_with(
        db,
        json!({"user": {
            "user": user, "csrf": csrf,
            "id_token": "", "access_token": access_token,
            "expires_at": until.unix_timestamp(),
        }}),
    )
    .await;
    (cookie, csrf)
}
