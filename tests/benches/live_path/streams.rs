//! The benchmark's readers: one event stream each, read as `EventSource`
//! reads it, every order or status change handed on with when it arrived.

use std::time::Instant;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Which stream read an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stream {
    Customer(usize),
    Board(usize),
}

/// A change: an order reaching a status.
pub(crate) type Change = (Uuid, String);

#[derive(Deserialize)]
struct Shown {
    order_id: Uuid,
    status: String,
}

pub(crate) struct Arrival {
    pub(crate) stream: Stream,
    pub(crate) change: Change,
    pub(crate) at: Instant,
}

/// Reads one event stream until `stop`, handing on every order or status
/// event it reads (a customer's page reads `order`, a board `status`).
pub(crate) async fn read_stream(
    client: reqwest::Client,
    url: String,
    auth: String,
    stream: Stream,
    ready: oneshot::Sender<()>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    stop: CancellationToken,
) {
    let response = client
        .get(&url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), 200, "{url}");
    let mut events = response.bytes_stream().eventsource();
    let mut ready = Some(ready);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        let Some(event) = event else {
            assert!(stop.is_cancelled(), "{url} ended while the benchmark ran");
            return;
        };
        let event = event.expect("a well-formed event stream");
        let at = Instant::now();
        match event.event.as_str() {
            "ready" => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            "order" | "status" => {
                let shown: Shown = serde_json::from_str(&event.data).expect("an order as JSON");
                let _ = arrivals.send(Arrival {
                    stream,
                    change: (shown.order_id, shown.status),
                    at,
                });
            }
            _ => {}
        }
    }
}
