//! Access tokens against the real local OpenID Connect provider: the tokens
//! it would not issue are refused with `invalid_token`, rotated keys are
//! taken without a restart, and cached keys outlive the provider.

use std::sync::Arc;

use e2e::oidc::Provider;
use e2e::{spawn_app_opts, AppOptions, As, Auth, Reply, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const A: &str = "alice";

/// `GET /order-ms/alice/orders` with `Authorization: Bearer {token}`.
async fn with_token(app: &TestApp, token: &str) -> Reply {
    app.get_with_token(&format!("/order-ms/{A}/orders"), token)
        .await
}

/// Token specs for the forger that the provider would never issue, each
/// with what is wrong with it: `valid` (claims it would issue, at `now`)
/// patched, or signed the wrong way.
fn tokens_it_would_not_issue(valid: &Value, now: i64) -> [(&'static str, Value); 10] {
    let with = |patch: Value| {
        let mut c = valid.clone();
        for (k, v) in patch.as_object().expect("an object") {
            c[k] = v.clone();
        }
        c
    };
    [
        (
            "expired",
            json!({"alg": "RS256", "claims": with(json!({"exp": now - 120, "iat": now - 720, "nbf": now - 720}))}),
        ),
        (
            "not yet valid",
            json!({"alg": "RS256", "claims": with(json!({"nbf": now + 120}))}),
        ),
        (
            "wrong issuer",
            json!({"alg": "RS256", "claims": with(json!({"iss": "http://127.0.0.1:9/elsewhere"}))}),
        ),
        (
            "wrong audience",
            json!({"alg": "RS256", "claims": with(json!({"aud": "another-api"}))}),
        ),
        ("alg none", json!({"alg": "none", "claims": valid})),
        (
            "HS256 keyed with the public key",
            json!({"alg": "HS256", "claims": valid}),
        ),
        (
            "a flipped signature byte",
            json!({"alg": "RS256", "claims": valid, "flip": true}),
        ),
        (
            "an unknown key id",
            json!({"alg": "RS256", "kid": "no-such-key", "claims": valid}),
        ),
        (
            "no expiry",
            json!({"alg": "RS256", "claims": with(json!({"exp": null}))}),
        ),
        (
            "a user id outside the rule",
            json!({"alg": "RS256", "claims": with(json!({"sub": "auth0|123"}))}),
        ),
    ]
}

/// Not a bearer token at all (`invalid_request`), and none (a bare
/// challenge): both refused.
async fn assert_requests_without_a_bearer_token_are_refused(app: &TestApp) {
    let basic = app
        .request_as(
            As::Header("Basic YWxpY2U6eA==".into()),
            Method::GET,
            &format!("/order-ms/{A}/orders"),
            None,
            &[],
        )
        .await;
    basic.problem(401);
    assert!(basic
        .header("www-authenticate")
        .unwrap_or_default()
        .contains(r#"error="invalid_request""#));
    let none = app
        .request_as(
            As::Nobody,
            Method::GET,
            &format!("/order-ms/{A}/orders"),
            None,
            &[],
        )
        .await;
    none.problem(401);
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="orders""#)
    );
}

#[tokio::test]
async fn tokens_the_provider_would_not_issue_are_refused_with_invalid_token() {
    let app = e2e::spawn_app().await;
    let p = app.provider.clone().expect("a provider");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let valid = p.claims(A, &[]);
    // The forger works: its well-formed tokens are accepted, with every
    // allowed algorithm.
    for alg in ["RS256", "ES256", "EdDSA"] {
        let token = p.forge(&json!({"alg": alg, "claims": valid}));
        with_token(&app, &token).await.ok(200);
    }
    for (what, spec) in tokens_it_would_not_issue(&valid, now) {
        let reply = with_token(&app, &p.forge(&spec)).await;
        let body = reply.problem(401);
        assert_eq!(body["type"], "/problems/invalid-token", "{what}");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge:?}"
        );
    }
    // Not a bearer token at all, and none.
    assert_requests_without_a_bearer_token_are_refused(&app).await;
}

#[tokio::test]
async fn rotated_keys_are_taken_without_a_restart_and_cached_keys_outlive_the_provider() {
    let provider = Arc::new(Provider::start());
    let app = spawn_app_opts(AppOptions {
        auth: Auth::Own(provider.clone()),
        ..AppOptions::default()
    })
    .await;
    let before = provider.token(A, None).await;
    with_token(&app, &before).await.ok(200);

    let kid = provider.rotate();
    let after = provider.token(A, None).await;
    assert!(
        e2e::oidc::header_kid(&after) == kid,
        "the provider signs with the new key"
    );
    with_token(&app, &after).await.ok(200);
    with_token(&app, &before).await.ok(200);

    provider.stop();
    // Both keys are cached: tokens signed with them are still accepted.
    with_token(&app, &before).await.ok(200);
    with_token(&app, &after).await.ok(200);
    // A key nobody published stays unknown.
    let stranger = provider
        .forge(&json!({"alg": "RS256", "kid": "unpublished", "claims": provider.claims(A, &[])}));
    with_token(&app, &stranger).await.problem(401);
}

/// The provider's key generation (`scripts/oidc/keys.mjs`) never hangs,
/// however the garbage collector's work falls: Node 20 deadlocks when a key
/// from `generateKeyPairSync` is exported as a JWK while a collection frees
/// the job that made it (a provider start hung for ever in about one of 300
/// starts on a loaded machine, in a futex wait inside that export). With
/// young collections forced every megabyte, 40,000 keys in a row took about
/// 3 s; the KeyObject-exporting version hung in each of 3 runs.
#[tokio::test]
async fn generating_the_providers_keys_never_hangs_whatever_the_garbage_collector_does() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/oidc/keys.mjs");
    let script = format!(
        "const {{ generateKey }} = await import({:?});\n\
         for (let i = 0; i < 20000; i++) {{ generateKey('EC'); generateKey('OKP'); }}\n\
         console.log('generated 40000');",
        keys.display().to_string()
    );
    let run = tokio::process::Command::new("node")
        .args([
            "--max-semi-space-size=1",
            "--input-type=module",
            "-e",
            &script,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("40,000 keys generated within 90 s (a deadlock never ends)")
        .expect("run node");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "generated 40000"
    );
}
