//! `orders verify`: silent on a healthy model, loud on a tampered one.

use std::process::Stdio;
use std::time::Duration;

use e2e::{orders_bin, spawn_app_opts, test_kafka, wait_caught_up, AppOptions};
use projections::orders::NAME;
use tokio::process::Command;

async fn verify(url: &str, kafka: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(orders_bin())
        .arg("verify")
        .args(args)
        .env("DATABASE_URL", url)
        .env("KAFKA_BROKERS", kafka)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run orders verify");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_tampered_row_and_nothing_otherwise() {
    let kafka = test_kafka();
    let brokers = kafka.brokers.join(",");
    let app = spawn_app_opts(AppOptions {
        kafka: Some(kafka),
        ..AppOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = app.place_ok("vera").await;
        if i % 3 == 0 {
            app.move_to("vera", &id, "preparing", &[]).await.ok(200);
        }
        ids.push(id);
    }
    wait_caught_up(&app.db.pool, NAME, Duration::from_secs(10)).await;
    e2e::delivery_caught_up(&app.db, Duration::from_secs(10)).await;

    let (ok, out) = verify(&app.db.url, &brokers, &[]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("orders: OK") && out.contains("delivery: OK"),
        "{out}"
    );

    // Tamper with one row of each model.
    sqlx::query("UPDATE order_view_g1 SET status = 'delivered' WHERE order_id = $1")
        .bind(ids[1].parse::<uuid::Uuid>().expect("uuid"))
        .execute(&app.db.pool)
        .await
        .expect("tamper");
    sqlx::query("DELETE FROM delivery.order_status_g1 WHERE order_id = $1")
        .bind(ids[2].parse::<uuid::Uuid>().expect("uuid"))
        .execute(&app.db.pool)
        .await
        .expect("tamper");
    let (ok, out) = verify(&app.db.url, &brokers, &[]).await;
    assert!(!ok, "verify must fail: {out}");
    assert!(
        out.contains(&format!(
            "{}: status is delivered in the model, received in the log",
            ids[1]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}: missing from the model", ids[2])),
        "{out}"
    );
    assert!(out.contains("verify found 2 differences"), "{out}");

    // One projection at a time.
    let (ok, out) = verify(&app.db.url, &brokers, &["delivery"]).await;
    assert!(!ok);
    assert!(!out.contains("orders:"), "{out}");
}
