//! The clients: good clients of the HTTP contract kept beside the repository (API.md), placing orders with an
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
    /// Strong reads of the client's own orders, and those whose answer
    /// lacked the order just placed (each one is printed).
    pub(crate) reads: AtomicU64,
    pub(crate) reads_missing: AtomicU64,
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

/// One of the API processes, at random (as a load balancer would).
fn any(bases: &[String]) -> &str {
    &bases[fastrand::usize(..bases.len())]
}

/// A client's two callers: the customer (its own user's token) and the
/// member of staff who moves its orders on.
#[derive(Clone)]
pub(crate) struct Callers {
    pub(crate) customer: reqwest::Client,
    pub(crate) staff: reqwest::Client,
}

impl Callers {
    /// HTTP clients that send these bearer tokens.
    pub(crate) fn new(customer: &str, staff: &str) -> anyhow::Result<Callers> {
        let with = |token: &str| -> anyhow::Result<reqwest::Client> {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse()?,
            );
            Ok(reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .default_headers(headers)
                .build()?)
        };
        Ok(Callers {
            customer: with(customer)?,
            staff: with(staff)?,
        })
    }
}

/// The user client number `client` places orders as.
pub(crate) fn user_of(client: usize) -> String {
    format!("chaos-{client:02}")
}

/// What a client orders: the original clients' single drink (numbers as
/// strings), or, one time in three, two or three drinks with options.
fn order_body() -> Value {
    let line = |name: &str| {
        json!({
            "coffee_name": name,
            "coffee_price": fastrand::u32(1..=12) * 500,
            "coffee_qty": fastrand::u32(1..=5),
            "options": {
                "temperature": if fastrand::bool() { "hot" } else { "iced" },
                "size": if fastrand::bool() { "regular" } else { "large" },
            },
        })
    };
    if fastrand::u8(0..3) == 0 {
        let drinks = ["americano", "latte", "cold brew"];
        let lines: Vec<Value> = drinks[..fastrand::usize(2..=3)]
            .iter()
            .map(|name| line(name))
            .collect();
        json!({ "items": lines })
    } else {
        json!({
            "coffee_name": "today's coffee",
            "coffee_price": (fastrand::u32(1..=12) * 500).to_string(),
            "coffee_qty": fastrand::u32(1..=5).to_string(),
        })
    }
}

pub(crate) async fn client_loop(
    client: usize,
    callers: Callers,
    bases: Arc<Vec<String>>,
    period: Duration,
    stats: Arc<Stats>,
    traffic_on: Arc<AtomicBool>,
) {
    let user = user_of(client);
    let http = &callers.customer;
    let mut active: Vec<Active> = Vec::new();
    let mut next = Instant::now() + period.mul_f64(fastrand::f64());
    while traffic_on.load(Ordering::SeqCst) {
        sleep_until(next).await;
        next += period;
        let key = Uuid::new_v4().to_string();
        let body = order_body();
        let answer = until_definitive(&stats, || {
            http.post(format!("{}/order-ms/{user}/orders", any(&bases)))
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
                // A third of the time, read it back at once (through either
                // API process), asking for the write to be visible.
                if fastrand::u8(..3) == 0 {
                    read_own_write(http, &bases, &stats, &user, order).await;
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
            let done = move_on(&callers, &bases, &stats, &mut active[i]).await;
            if done {
                active.swap_remove(i);
            }
        }
    }
}

/// One step of an order's lifecycle; true when the order needs no more.
pub(crate) async fn move_on(
    callers: &Callers,
    bases: &[String],
    stats: &Stats,
    order: &mut Active,
) -> bool {
    let answer = if order.cancel {
        let path = format!("/order-ms/{}/orders/{}/cancel", order.user, order.order);
        until_definitive(stats, || {
            callers
                .customer
                .post(format!("{}{path}", any(bases)))
                .send()
        })
        .await
    } else {
        let path = format!("/delivery-ms/{}/{}/status", order.user, order.order);
        // The domain's codes and labels, as the original clients send both.
        let to = MOVES[order.step];
        let status = if fastrand::bool() {
            to.code()
        } else {
            to.label()
        };
        until_definitive(stats, || {
            callers
                .staff
                .post(format!("{}{path}", any(bases)))
                .json(&json!({ "status": status }))
                .send()
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
        }) if current_status(&callers.staff, any(bases), order)
            .await
            .as_deref()
            == Some(target) => {}
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

/// Reads the user's orders with `Prefer: consistency=strong` (a 503 while
/// the read model lags is retried like any 5xx) and checks that the order
/// just placed is there.
async fn read_own_write(
    http: &reqwest::Client,
    bases: &[String],
    stats: &Stats,
    user: &str,
    order: Uuid,
) {
    let answer = until_definitive(stats, || {
        http.get(format!("{}/order-ms/{user}/orders", any(bases)))
            .header("Prefer", "consistency=strong")
            .send()
    })
    .await;
    let Some(answer) = answer else { return };
    stats.reads.fetch_add(1, Ordering::Relaxed);
    if answer.status != 200 || !answer.body.to_string().contains(&order.to_string()) {
        stats.reads_missing.fetch_add(1, Ordering::Relaxed);
        say(format!(
            "a strong read of {user}'s orders lacks {order} (status {})",
            answer.status
        ));
    }
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
                // The only 5xx the contract allows: 503 with Retry-After
                // (overloaded, unavailable, outcome unknown).
                let allowed = response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    && response
                        .headers()
                        .contains_key(reqwest::header::RETRY_AFTER);
                if !allowed {
                    stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    let status = response.status();
                    say(format!(
                        "{status} answer: {}",
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
