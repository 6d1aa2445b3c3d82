//! Concurrent writers of one order: optimistic concurrency lets exactly one
//! win each version; the others are told (409/412) and the log stays valid.

use std::collections::BTreeSet;
use std::sync::Arc;

use e2e::{spawn_app, TestApp};
use futures::future::join_all;

/// The stream's versions, oldest first.
async fn versions(app: &TestApp, id: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT version FROM events WHERE stream_id = $1::uuid ORDER BY position")
        .bind(id)
        .fetch_all(&app.db.pool)
        .await
        .expect("versions")
}

#[tokio::test]
async fn thirty_two_racing_moves_with_if_match_have_one_winner() {
    let app = Arc::new(spawn_app().await);
    let id = app.place_ok("u1").await;
    let racers = (0..32).map(|_| {
        let (app, id) = (app.clone(), id.clone());
        tokio::spawn(async move {
            app.move_to("u1", &id, "preparing", &[("If-Match", "\"1\"")])
                .await
        })
    });
    let replies: Vec<_> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let won = replies.iter().filter(|r| r.status == 200).count();
    let lost = replies.iter().filter(|r| r.status == 412).count();
    assert_eq!(
        (won, lost),
        (1, 31),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for loser in replies.iter().filter(|r| r.status == 412) {
        loser.problem(412);
    }
    assert_eq!(versions(&app, &id).await, [1, 2]);
    assert_eq!(app.db.outbox().await, 2);
}

#[tokio::test]
async fn thirty_two_racing_moves_without_if_match_keep_the_log_valid() {
    let app = Arc::new(spawn_app().await);
    let id = app.place_ok("u1").await;
    // Half try to start preparing, half to cancel: each is decided on fresh
    // state after a lost race, so a cancel may still win after a preparing.
    let racers = (0..32).map(|i| {
        let (app, id) = (app.clone(), id.clone());
        let to = if i % 2 == 0 { "preparing" } else { "cancelled" };
        tokio::spawn(async move { app.move_to("u1", &id, to, &[]).await })
    });
    let replies: Vec<_> = join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    for reply in &replies {
        assert!(
            matches!(reply.status.as_u16(), 200 | 409),
            "{} {}",
            reply.status,
            reply.text
        );
        if reply.status == 409 {
            reply.problem(409);
        }
    }
    let winners = replies.iter().filter(|r| r.status == 200).count();
    let versions = versions(&app, &id).await;
    // Exactly one winner per version after the placement, contiguous.
    assert_eq!(versions, (1..=versions.len() as i32).collect::<Vec<_>>());
    assert_eq!(winners, versions.len() - 1);
    assert!(
        (1..=2).contains(&winners),
        "received→preparing→cancelled at most"
    );
    let etags: BTreeSet<_> = replies
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.header("etag"))
        .collect();
    assert_eq!(etags.len(), winners, "each winner got its own version");
    // The final state is the fold of the log.
    let detail = app.order("u1", &id).await.ok(200);
    assert_eq!(detail["version"], versions.len() as i64);
    assert_eq!(app.db.outbox().await, versions.len() as i64);
}

#[tokio::test]
async fn concurrent_orders_from_many_users_all_land() {
    let app = Arc::new(spawn_app().await);
    let placers = (0..64).map(|i| {
        let app = app.clone();
        tokio::spawn(async move { app.place_ok(&format!("user{}", i % 8)).await })
    });
    let ids: BTreeSet<String> = join_all(placers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert_eq!(ids.len(), 64);
    assert_eq!(app.db.events().await, 64);
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT position) FROM outbox")
            .await,
        64
    );
}
