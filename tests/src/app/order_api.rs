//! The order API's calls as the tests make them: place, read, cancel and
//! move an order, and a placement expected to be refused.

use reqwest::Method;
use serde_json::Value;

use super::{Reply, TestApp};

impl TestApp {
    /// Places `body` for USER0001 and expects a 422 naming `field`, with
    /// nothing appended to the log.
    pub async fn refused_naming(&self, body: Value, field: &str) {
        let before = self.db.events().await;
        let reply = self.place("USER0001", body.clone()).await;
        let fields = reply.fields_at_fault(422);
        assert!(
            fields.iter().any(|f| f == field),
            "{body} should blame {field}: {}",
            reply.text
        );
        assert_eq!(self.db.events().await, before, "{body} appended something");
    }

    pub async fn place(&self, user: &str, body: Value) -> Reply {
        self.request(
            Method::POST,
            &format!("/order-ms/{user}/orders"),
            Some(&body),
            &[],
        )
        .await
    }

    /// Places a valid order and returns its id.
    pub async fn place_ok(&self, user: &str) -> String {
        let reply = self
            .place(
                user,
                serde_json::json!({"coffee_name": "americano", "coffee_price": "4500", "coffee_qty": "2"}),
            )
            .await;
        reply.ok(201)["order_id"]
            .as_str()
            .expect("order_id")
            .to_owned()
    }

    pub async fn order(&self, user: &str, order_id: &str) -> Reply {
        self.get(&format!("/order-ms/{user}/orders/{order_id}"))
            .await
    }

    pub async fn cancel(&self, user: &str, order_id: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(
            Method::POST,
            &format!("/order-ms/{user}/orders/{order_id}/cancel"),
            None,
            headers,
        )
        .await
    }

    pub async fn move_to(
        &self,
        user: &str,
        order_id: &str,
        status: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = serde_json::json!({ "status": status });
        self.request(
            Method::POST,
            &format!("/delivery-ms/{user}/{order_id}/status"),
            Some(&body),
            headers,
        )
        .await
    }
}
