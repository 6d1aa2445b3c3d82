//! The clients: good clients of API.md, placing orders with an
//! `Idempotency-Key`, moving them through their lifecycle, reading their own
//! writes, retrying until every request has a definitive answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::infra::sleep_until;
use crate::say;

#[derive(Default)]
pub(crate) struct Stats {
    /// Idempotency key → the order its 201 named.
    pub(crate) accepted: Mutex<HashMap<String, Uuid>>,
    pub(crate) moves: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) unresolved: AtomicU64,
    /// Moves and cancels refused for no reason the client's own retries
    /// explain (each one is printed).
    pub(crate) rejected: AtomicU64,
}

impl Stats {
    pub(crate) fn accepted(&self) -> HashMap<String, Uuid> {
        self.accepted
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// An order a client is moving through its lifecycle.
pub(crate) struct Active {
    pub(crate) user: String,
    pub(crate) order: Uuid,
    /// Moves done so far (0 = received).
    pub(crate) step: usize,
    pub(crate) cancel: bool,
}

/// The staff moves of an order's lifecycle, in order.
pub(crate) const MOVES: [domain::Status; 3] = [
    domain::Status::Preparing,
    domain::Status::Delivering,
    domain::Status::Delivered,
];

pub(crate) async fn client_loop(
    client: usize,
    http: reqwest::Client,
    base: String,
    period: Duration,
    stats: Arc<Stats>,
    traffic_on: Arc<AtomicBool>,
) {
    let user = format!("chaos-{client:02}");
    let mut active: Vec<Active> = Vec::new();
    let mut next = Instant::now() + period.mul_f64(fastrand::f64());
    while traffic_on.load(Ordering::SeqCst) {
        sleep_until(next).await;
        next += period;
        let key = Uuid::new_v4().to_string();
        let qty = fastrand::u32(1..=5);
        let body = json!({
            "coffee_name": "today's coffee",
            "coffee_price": (fastrand::u32(1..=12) * 500).to_string(),
            "coffee_qty": qty.to_string(),
        });
        let url = format!("{base}/order-ms/{user}/orders");
        let answer = until_definitive(&stats, || {
            http.post(&url)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
        })
        .await;
        if let Some(Answer {
            status: 201 | 200,
            body: json,
            ..
        }) = answer
        {
            if let Some(order) = json
                .get("order_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                if let Ok(mut accepted) = stats.accepted.lock() {
                    accepted.insert(key, order);
                }
                active.push(Active {
                    user: user.clone(),
                    order,
                    step: 0,
                    cancel: fastrand::u8(..10) == 0,
                });
            }
        }
        // Move one of the client's orders on (about as many moves as orders).
        if !active.is_empty() && fastrand::bool() {
            let i = fastrand::usize(..active.len());
            let done = move_on(&http, &base, &stats, &mut active[i]).await;
            if done {
                active.swap_remove(i);
            }
        }
    }
}

/// One step of an order's lifecycle; true when the order needs no more.
pub(crate) async fn move_on(
    http: &reqwest::Client,
    base: &str,
    stats: &Stats,
    order: &mut Active,
) -> bool {
    let answer = if order.cancel {
        let url = format!(
            "{base}/order-ms/{}/orders/{}/cancel",
            order.user, order.order
        );
        until_definitive(stats, || http.post(&url).send()).await
    } else {
        let url = format!("{base}/delivery-ms/{}/{}/status", order.user, order.order);
        // The domain's codes and labels, as the original clients send both.
        let to = MOVES[order.step];
        let status = if fastrand::bool() {
            to.code()
        } else {
            to.label()
        };
        until_definitive(stats, || {
            http.post(&url).json(&json!({ "status": status })).send()
        })
        .await
    };
    let target = if order.cancel {
        "cancelled"
    } else {
        MOVES[order.step].code()
    };
    match answer {
        Some(Answer { status: 200, .. }) => {}
        // A retry whose first attempt had committed: the order is already
        // where this client moved it (the lifecycle refuses the same move
        // twice). Nothing else explains a refusal.
        Some(Answer {
            status: 409,
            retried: true,
            ..
        }) if current_status(http, base, order).await.as_deref() == Some(target) => {}
        Some(Answer { status, body, .. }) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            say(format!(
                "unexplained {status} moving order {} to {target}: {body}",
                order.order
            ));
            return true;
        }
        None => return true,
    }
    stats.moves.fetch_add(1, Ordering::Relaxed);
    order.step += 1;
    order.cancel || order.step == MOVES.len()
}

/// The order's status as order-ms reads it from its events.
pub(crate) async fn current_status(
    http: &reqwest::Client,
    base: &str,
    order: &Active,
) -> Option<String> {
    let url = format!("{base}/order-ms/{}/orders/{}", order.user, order.order);
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    body.get("status")?.as_str().map(str::to_owned)
}

/// A definitive answer, and whether it took more than one attempt (an
/// earlier attempt may have taken effect).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retried: bool,
}

/// Sends until the answer is definitive (2xx or 4xx), retrying 5xx answers
/// and transport errors with backoff. `None` when it never was (reported).
pub(crate) async fn until_definitive<F, Fut>(stats: &Stats, mut send: F) -> Option<Answer>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(50);
    let mut retried = false;
    loop {
        match send().await {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                return Some(Answer {
                    status,
                    body,
                    retried,
                });
            }
            Ok(response) => {
                if response.status() == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
                    stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    say(format!(
                        "500 answer: {}",
                        response.text().await.unwrap_or_default()
                    ));
                }
            }
            Err(_) => {}
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        retried = true;
        if Instant::now() > give_up {
            stats.unresolved.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

pub(crate) async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("orders serve not ready after 60 s (see serve.log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
