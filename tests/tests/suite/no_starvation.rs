//! Readers never starve writers: a hundred reads waiting for their own
//! writes behind a long transaction (which holds the gap-safe horizon) hold
//! no pooled connection while they wait, so orders placed meanwhile are
//! accepted at once.

use std::sync::Arc;
use std::time::Duration;

use e2e::{spawn_app_opts, AppOptions};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_strong_reads_waiting_behind_a_long_transaction_do_not_starve_writers() {
    let app = Arc::new(
        spawn_app_opts(AppOptions {
            read_wait: Duration::from_secs(6),
            alone: true,
            ..AppOptions::default()
        })
        .await,
    );
    app.place_ok("zed").await;
    // A transaction elsewhere holds the horizon: nothing after it applies.
    let long = e2e::hold_the_horizon(&app.db).await;
    app.place_ok("zed").await;

    // A hundred reads of their own writes wait (more than the pool has
    // connections: the test database's pool has 40).
    let readers: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                app.request(
                    Method::GET,
                    "/order-ms/zed/orders",
                    None,
                    &[("Prefer", "consistency=strong")],
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Writers are served while every reader still waits.
    for _ in 0..20 {
        app.place_ok("wren").await;
    }
    let finished = readers.iter().filter(|r| r.is_finished()).count();
    assert_eq!(
        finished, 0,
        "the writes had to wait for {finished} waiting readers to give up"
    );

    // The long transaction ends; every reader gets its answer with both orders.
    long.rollback().await.expect("end the long transaction");
    for reader in readers {
        let reply = reader.await.expect("a reader");
        let orders = reply.ok(200);
        assert_eq!(orders.as_array().map(Vec::len), Some(2));
    }
}
