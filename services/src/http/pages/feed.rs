//! The live feed behind the pages' streams: one hub per process listens on
//! the read models' and the menu's notification channels, reads each named
//! row once and broadcasts it to every open stream ([`super::live`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures::stream::{self, Stream, StreamExt};
use infra::notify;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::view::{DeliveryStatusView, OrderView};

/// What a hub hands its streams.
#[derive(Debug)]
pub enum Change {
    Order(OrderView),
    Status(DeliveryStatusView),
    Menu,
    /// Something may have been missed: load again.
    Resync,
}

/// Changes a stream may fall behind by before it is told to load again.
const BACKLOG: usize = 4096;
/// Ids read back per query.
const READ_CHUNK: usize = 1000;

/// One process's hub. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    changes: broadcast::Sender<Arc<Change>>,
    /// Ends every open stream (at shutdown: a stream never ends by itself,
    /// and the server waits for open responses).
    closing: CancellationToken,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            changes: broadcast::channel(BACKLOG).0,
            closing: CancellationToken::new(),
        }
    }
}

/// Counts a stream in `/metrics` (`live_streams_open`) while it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!("live_streams_open").increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("live_streams_open").decrement(1.0);
    }
}

impl Live {
    /// Listens and reads until `shutdown`, reconnecting after a lost
    /// connection (and telling the streams to load again then).
    pub async fn run(self, reads: PgPool, shutdown: CancellationToken) {
        let _close = self.closing.clone().drop_guard();
        let mut first = true;
        loop {
            let session = self.listen(&reads, first, &shutdown);
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = session => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "the pages' live updates lost PostgreSQL; reconnecting");
                    }
                }
            }
            first = false;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// One connection's life: subscribe, then forward until it is lost.
    async fn listen(
        &self,
        reads: &PgPool,
        first: bool,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut listener =
            notify::listen(reads, &[notify::ORDERS, notify::DELIVERY, notify::MENU]).await?;
        if !first {
            let _ = self.changes.send(Arc::new(Change::Resync));
        }
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = listener.try_recv() => next?,
            };
            let Some(notification) = next else {
                anyhow::bail!("the listening connection closed");
            };
            // Everything already received, in one go: one read per channel.
            let mut orders = Vec::new();
            let mut delivery = Vec::new();
            let mut menu = false;
            let mut sort = |channel: &str, payload: &str| {
                if channel == notify::ORDERS.name() {
                    orders.extend(notify::parse(payload));
                } else if channel == notify::DELIVERY.name() {
                    delivery.extend(notify::parse(payload));
                } else {
                    menu = true;
                }
            };
            sort(notification.channel(), notification.payload());
            while let Some(more) = listener.next_buffered() {
                sort(more.channel(), more.payload());
            }
            if self.changes.receiver_count() == 0 {
                continue;
            }
            self.forward(reads, orders, delivery, menu).await?;
        }
    }

    /// Reads the named rows and hands them to the streams.
    async fn forward(
        &self,
        reads: &PgPool,
        mut orders: Vec<Uuid>,
        mut delivery: Vec<Uuid>,
        menu: bool,
    ) -> anyhow::Result<()> {
        if menu {
            let _ = self.changes.send(Arc::new(Change::Menu));
        }
        orders.sort_unstable();
        orders.dedup();
        for ids in orders.chunks(READ_CHUNK) {
            for row in projections::orders::rows_by_id(reads, ids).await? {
                let _ = self
                    .changes
                    .send(Arc::new(Change::Order(OrderView::from(&row))));
            }
        }
        delivery.sort_unstable();
        delivery.dedup();
        for ids in delivery.chunks(READ_CHUNK) {
            for row in projections::delivery::get_many(reads, ids).await? {
                let _ = self
                    .changes
                    .send(Arc::new(Change::Status(DeliveryStatusView::from(&row))));
            }
        }
        Ok(())
    }

    /// A stream of the events `pick` makes of the changes, `ready` first.
    pub(super) fn stream(
        &self,
        pick: impl Fn(&Change) -> Option<Event> + Send + 'static,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let receiver = self.changes.subscribe();
        let closing = self.closing.clone();
        let open = Open::new();
        let ready = stream::once(async { Ok(Event::default().event("ready").data("{}")) });
        let changes = stream::unfold((receiver, pick), |(mut receiver, pick)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(change) => match &*change {
                        Change::Resync => Some(ready_again()),
                        change => pick(change),
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a live stream fell behind; it loads again");
                        Some(ready_again())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                if let Some(event) = event {
                    return Some((Ok(event), (receiver, pick)));
                }
            }
        });
        ready
            .chain(changes)
            .take_until(async move { closing.cancelled_owned().await })
            .map(move |event| {
                let _counted = &open;
                event
            })
    }
}

fn ready_again() -> Event {
    Event::default().event("ready").data("{\"again\":true}")
}

pub(super) fn json_event(name: &'static str, data: &impl serde::Serialize) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}
