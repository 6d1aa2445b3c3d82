//! Beside the peer: placing the same order through this service's command
//! handling and store, and through cqrs-es 0.5 with postgres-es 0.5 (the
//! Rust framework a team would otherwise pick), in-process on both sides (no
//! HTTP), at the same concurrency, in the same run, against the same
//! PostgreSQL. `just bench-peer`; part of `just bench`.
//!
//! What each side writes per order:
//! - ours, as deployed (`Orders::place`): the menu check (a shared generation read), a pickup number draw
//!   (shared by requests waiting together), one event row, one outbox row,
//!   in one transaction (several orders per transaction with group commit,
//!   as deployed; one per order without).
//! - ours, the store alone: the same decision (`domain::decide`) appended
//!   with group commit, without the menu check and the pickup number: what
//!   the peer's command does.
//! - cqrs-es: it loads the aggregate (a `SELECT` of its events), then one
//!   event row in a transaction. It has no outbox; measured as it is, and
//!   with an outbox row added in its transaction (a trigger on its events
//!   table: its repository's statements are fixed).

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{CoffeeName, Metadata, OrderId, Price, Quantity, UserId};
use e2e::TestDb;
use serde::{Deserialize, Serialize};
use services::commands::Orders;
use services::store::EventStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

const SECONDS: u64 = 5;
const CLIENTS: [usize; 4] = [1, 8, 32, 64];
/// Ours as deployed against the peer, at every concurrency (issue 33).
const TARGET: f64 = 1.5;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("peer: benchmark skipped (run it with `just bench-peer`)");
        return;
    }
    println!(
        "\nbeside the peer: place order in-process (no HTTP), {SECONDS} s per cell, commands/s (p99 ms)"
    );
    println!(
        "{:<8} {:>20} {:>20} {:>20} {:>20} {:>20} {:>9} {:>9}",
        "clients",
        "ours (group commit)",
        "ours (1 tx/order)",
        "ours (store alone)",
        "cqrs-es",
        "cqrs-es + outbox",
        "ours/cq",
        "ours/cq+o"
    );
    let (mut held, mut held_outbox) = (0, 0);
    for clients in CLIENTS {
        let grouped = ours(clients, true).await;
        let single = ours(clients, false).await;
        let store_alone = store_only(clients).await;
        let peer = theirs(clients, false).await;
        let peer_outbox = theirs(clients, true).await;
        let cell = |r: &Rate| format!("{:.0} ({:.1})", r.per_second, r.p99_ms);
        if grouped.per_second >= TARGET * peer.per_second {
            held += 1;
        }
        if grouped.per_second >= TARGET * peer_outbox.per_second {
            held_outbox += 1;
        }
        println!(
            "{:<8} {:>20} {:>20} {:>20} {:>20} {:>20} {:>9.2} {:>9.2}",
            clients,
            cell(&grouped),
            cell(&single),
            cell(&store_alone),
            cell(&peer),
            cell(&peer_outbox),
            grouped.per_second / peer.per_second,
            grouped.per_second / peer_outbox.per_second,
        );
    }
    let verdict = |n: usize| {
        if n == CLIENTS.len() {
            "holds"
        } else {
            "MISSED"
        }
    };
    println!(
        "  target: ours (as deployed) >= {TARGET}x cqrs-es at every concurrency: {held} of {}, {}",
        CLIENTS.len(),
        verdict(held)
    );
    println!(
        "  target: ours (as deployed) >= {TARGET}x cqrs-es with an outbox row at every concurrency: {held_outbox} of {}, {}",
        CLIENTS.len(),
        verdict(held_outbox)
    );
}

/// Commands per second and the 99th percentile of their latency.
struct Rate {
    per_second: f64,
    p99_ms: f64,
}

/// `clients` tasks calling `command` for [`SECONDS`]; every call must
/// succeed (a benchmark of failures measures nothing).
async fn drive<F, Fut>(clients: usize, command: F) -> Rate
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let command = Arc::new(command);
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let command = command.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let started = Instant::now();
                if let Err(e) = command().await {
                    panic!("a command failed: {e}");
                }
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a client"));
    }
    all.sort();
    let p99 = all
        .get(all.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    Rate {
        per_second: all.len() as f64 / SECONDS as f64,
        p99_ms: p99.as_secs_f64() * 1e3,
    }
}

/// The order bench/place.sh places over HTTP: on the seeded menu.
fn our_order() -> services::commands::PlaceRequest {
    services::commands::PlaceRequest {
        order_id: OrderId::generate(),
        user_id: UserId::parse("USER0001").expect("a user id"),
        store_id: None,
        lines: vec![domain::AskedLine {
            coffee_name: CoffeeName::parse("today's coffee").expect("a coffee name"),
            coffee_price: Price::try_from(5000).expect("a price"),
            coffee_qty: Quantity::try_from(3).expect("a quantity"),
            options: domain::AskedOptions::default(),
        }],
        as_items: false,
    }
}

/// The same order as the domain decides it (checked, with its store).
fn our_placement() -> domain::PlaceOrder {
    let asked = our_order();
    domain::PlaceOrder {
        order_id: asked.order_id,
        user_id: asked.user_id,
        store_id: domain::StoreId::default_store(),
        lines: domain::OrderLines::one(domain::OrderLine {
            coffee_name: asked.lines[0].coffee_name.clone(),
            coffee_price: asked.lines[0].coffee_price,
            coffee_qty: asked.lines[0].coffee_qty,
            options: domain::DrinkOptions::default(),
        }),
        pickup_number: None,
    }
}

/// Who placed it, as the HTTP handler records it.
fn our_metadata() -> Metadata {
    Metadata {
        who: Some("customer:USER0001".to_owned()),
        request_id: Some("b3a1c6e2-5a7e-4d55-9a43-1f0f7e3c2d11".to_owned()),
        ..Metadata::default()
    }
}

async fn ours(clients: usize, group_commit: bool) -> Rate {
    let db = TestDb::create().await;
    let pool = pool(&db.url, clients, None).await;
    let store = EventStore::new(pool);
    let store = if group_commit {
        store.with_group_commit()
    } else {
        store
    };
    let orders = Arc::new(Orders::new(store));
    let metadata = Arc::new(our_metadata());
    drive(clients, move || {
        let (orders, metadata) = (orders.clone(), metadata.clone());
        async move {
            match orders.place(our_order(), &metadata, None).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(rejected)) => Err(format!("rejected: {rejected:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// The placement appended through the store (group commit), nothing else.
async fn store_only(clients: usize) -> Rate {
    let db = TestDb::create().await;
    let store = Arc::new(EventStore::new(pool(&db.url, clients, None).await).with_group_commit());
    let metadata = Arc::new(our_metadata());
    drive(clients, move || {
        let (store, metadata) = (store.clone(), metadata.clone());
        async move {
            let place = our_placement();
            let id = place.order_id;
            let events = domain::decide(
                &domain::OrderState::NotPlaced,
                domain::Command::Place(place),
            )
            .map_err(|e| format!("rejected: {e:?}"))?;
            store
                .append(id, 0, &events, &metadata, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

async fn theirs(clients: usize, outbox: bool) -> Rate {
    let db = TestDb::create().await;
    // postgres-es's own schema (its db/init.sql), in a schema of its own so
    // that its `events` is not ours.
    let mut setup = String::from(
        "CREATE SCHEMA peer;
         CREATE TABLE peer.events (
             aggregate_type text NOT NULL,
             aggregate_id   text NOT NULL,
             sequence       bigint CHECK (sequence >= 0) NOT NULL,
             event_type     text NOT NULL,
             event_version  text NOT NULL,
             payload        json NOT NULL,
             metadata       json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence));",
    );
    if outbox {
        setup.push_str(
            "CREATE TABLE peer.outbox (
                 aggregate_type text NOT NULL,
                 aggregate_id   text NOT NULL,
                 sequence       bigint NOT NULL,
                 created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
                 PRIMARY KEY (aggregate_type, aggregate_id, sequence));
             CREATE FUNCTION peer.outbox_row() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO peer.outbox (aggregate_type, aggregate_id, sequence)
                 VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
                 RETURN NULL;
             END $$;
             CREATE TRIGGER outbox_row AFTER INSERT ON peer.events
                 FOR EACH ROW EXECUTE FUNCTION peer.outbox_row();",
        );
    }
    sqlx::raw_sql(&setup)
        .execute(&db.pool)
        .await
        .expect("postgres-es's tables");
    let pool = pool(&db.url, clients, Some("peer")).await;
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<CoffeeOrder>(pool, vec![], ()));
    drive(clients, move || {
        let cqrs = cqrs.clone();
        async move {
            let id = uuid::Uuid::now_v7().to_string();
            let mut metadata = HashMap::new();
            metadata.insert("who".to_owned(), "customer:USER0001".to_owned());
            metadata.insert(
                "request_id".to_owned(),
                "b3a1c6e2-5a7e-4d55-9a43-1f0f7e3c2d11".to_owned(),
            );
            cqrs.execute_with_metadata(
                &id,
                PlaceCommand::Place {
                    user_id: "USER0001".to_owned(),
                    coffee_name: "today's coffee".to_owned(),
                    coffee_price: 5000,
                    coffee_qty: 3,
                },
                metadata,
            )
            .await
            .map_err(|e| e.to_string())
        }
    })
    .await
}

/// A pool of `size` connections to `url`, on `schema` if given.
async fn pool(url: &str, size: usize, schema: Option<&str>) -> PgPool {
    let mut options = PgConnectOptions::from_str(url).expect("the test database's URL");
    if let Some(schema) = schema {
        options = options.options([("search_path", schema)]);
    }
    PgPoolOptions::new()
        .max_connections(u32::try_from(size).unwrap_or(64))
        .min_connections(u32::try_from(size).unwrap_or(64))
        .connect_with(options)
        .await
        .expect("a pool")
}

/// The order as a cqrs-es aggregate: the same rule as ours for placing
/// (a new order, a positive price and quantity, the total computed).
#[derive(Debug, Default, Serialize, Deserialize)]
struct CoffeeOrder {
    placed: bool,
}

#[derive(Debug)]
enum PlaceCommand {
    Place {
        user_id: String,
        coffee_name: String,
        coffee_price: u64,
        coffee_qty: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CoffeeEvent {
    Placed {
        user_id: String,
        coffee_name: String,
        coffee_price: u64,
        coffee_qty: u32,
        total_price: u64,
    },
}

impl DomainEvent for CoffeeEvent {
    fn event_type(&self) -> String {
        "OrderPlaced".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

impl Aggregate for CoffeeOrder {
    const TYPE: &'static str = "CoffeeOrder";
    type Command = PlaceCommand;
    type Event = CoffeeEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        command: PlaceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refused> {
        let PlaceCommand::Place {
            user_id,
            coffee_name,
            coffee_price,
            coffee_qty,
        } = command;
        if self.placed {
            return Err(Refused("the order exists"));
        }
        if coffee_price == 0 || coffee_qty == 0 {
            return Err(Refused("price and quantity must be positive"));
        }
        let event = CoffeeEvent::Placed {
            user_id,
            coffee_name,
            coffee_price,
            coffee_qty,
            total_price: coffee_price * u64::from(coffee_qty),
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, _: CoffeeEvent) {
        self.placed = true;
    }
}
