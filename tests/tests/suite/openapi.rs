//! `/openapi.json` lists exactly the routes that are mounted, and those of API.md (the HTTP contract kept beside the repository).

use std::collections::BTreeSet;

use e2e::spawn_app;
use reqwest::Method;
use serde_json::Value;

/// the endpoints of the contract (API.md), plus this document itself.
const API_MD: &[(&str, &str)] = &[
    ("get", "/order-ms"),
    ("post", "/order-ms/{user_id}/orders"),
    ("get", "/order-ms/{user_id}/orders"),
    ("get", "/order-ms/{user_id}/orders/{order_id}"),
    ("post", "/order-ms/{user_id}/orders/{order_id}/cancel"),
    ("get", "/delivery-ms/{status}"),
    ("get", "/delivery-ms/{user_id}/{order_id}"),
    ("post", "/delivery-ms/{user_id}/{order_id}/status"),
    ("get", "/menu"),
    ("get", "/stores"),
    ("get", "/health-check"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_exactly_the_mounted_routes() {
    let app = spawn_app().await;
    let spec = app.get("/openapi.json").await.ok(200);
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "OpenAPI 3: {}",
        spec["openapi"]
    );
    let listed = documented(&spec);
    let expected: BTreeSet<(String, String)> = API_MD
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, expected, "documented routes = API.md's");

    // Every documented route answers (not the router's fallback), and its
    // documented status list includes what it answered.
    let order_id = uuid::Uuid::now_v7().to_string();
    for (method, path) in &listed {
        let concrete = path
            .replace("{user_id}", "probe")
            .replace("{order_id}", &order_id)
            .replace("{status}", "received");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let reply = app.request(method.clone(), &concrete, None, &[]).await;
        let fallback =
            matches!(reply.status.as_u16(), 404 | 405) && reply.text.contains("about:blank");
        assert!(
            !fallback,
            "{method} {path} is documented but not mounted: {}",
            reply.text
        );
        let responses = &spec["paths"][path][method.as_str().to_lowercase()]["responses"];
        assert!(
            responses.get(reply.status.as_str()).is_some(),
            "{method} {path} answered {} which the document does not list",
            reply.status
        );
    }

    // Something not documented is not mounted either.
    for path in [
        "/order-ms/probe",
        "/delivery-ms",
        "/admin",
        "/order-ms/probe/orders/x/y",
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status.as_u16(), 404, "{path}");
    }
}
