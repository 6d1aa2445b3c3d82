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
    /// A session ended (signed out): the streams acting for it end. Its
    /// digest ([`crate::http::session::ended_key`]).
    SessionEnded(String),
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
    /// How many streams may be open.
    pub caps: Arc<Caps>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(Caps::new(Caps::DEFAULT_PER_USER, Caps::DEFAULT_TOTAL))
    }
}

impl Live {
    pub fn new(caps: Caps) -> Live {
        Live {
            changes: broadcast::channel(BACKLOG).0,
            closing: CancellationToken::new(),
            caps: Arc::new(caps),
        }
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
        let mut listener = notify::listen(
            reads,
            &[
                notify::ORDERS,
                notify::DELIVERY,
                notify::MENU,
                notify::SESSIONS,
            ],
        )
        .await?;
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
            let mut ended = Vec::new();
            let mut sort = |channel: &str, payload: &str| {
                if channel == notify::ORDERS.name() {
                    orders.extend(notify::parse(payload));
                } else if channel == notify::DELIVERY.name() {
                    delivery.extend(notify::parse(payload));
                } else if channel == notify::SESSIONS.name() {
                    // A digest: short, and never longer than announced.
                    ended.push(payload.chars().take(64).collect::<String>());
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
            for session in ended {
                let _ = self.changes.send(Arc::new(Change::SessionEnded(session)));
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

    /// A stream of the events `pick` makes of the changes, `ready` first,
    /// until the caller's access ends (`ends`), the stream's ticket held
    /// all the while.
    pub(super) fn stream(
        &self,
        pick: impl Fn(&Change) -> Option<Event> + Send + 'static,
        ends: Ends,
        ticket: Ticket,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let receiver = self.changes.subscribe();
        let closing = self.closing.clone();
        let signed_out = ends.session.clone();
        let ready = stream::once(async { Ok(Event::default().event("ready").data("{}")) });
        let changes = stream::unfold((receiver, pick), move |(mut receiver, pick)| {
            let signed_out = signed_out.clone();
            async move {
                loop {
                    let event = match receiver.recv().await {
                        Ok(change) => match &*change {
                            Change::Resync => Some(ready_again()),
                            Change::SessionEnded(session) => {
                                if signed_out.as_ref() == Some(session) {
                                    return None;
                                }
                                None
                            }
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
            }
        });
        let over = async move {
            tokio::select! {
                () = closing.cancelled_owned() => {}
                () = ends.reached() => {}
            }
        };
        ready.chain(changes).take_until(over).map(move |event| {
            let _held = &ticket;
            event
        })
    }
}

/// When a stream's caller's access ends.
#[derive(Default)]
pub struct Ends {
    /// Unix seconds: the token's (or session's) end.
    pub until: Option<i64>,
    /// The session whose sign-out ends it (its digest).
    pub session: Option<String>,
    /// The access token, judged again whenever the issuer's keys change.
    pub judge: Option<(crate::auth::Authenticator, String)>,
}

/// How often a stream looks whether the issuer's keys changed.
const JUDGE_EVERY: Duration = Duration::from_secs(5);

impl Ends {
    /// Resolves when the access ends: its time is up, or its token no
    /// longer passes after the issuer's keys changed.
    async fn reached(self) {
        let expiry = async {
            match self.until {
                Some(until) => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let left = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
                    tokio::time::sleep(Duration::from_secs(left)).await;
                }
                None => std::future::pending().await,
            }
        };
        let judged = async {
            let Some((auth, token)) = self.judge else {
                return std::future::pending().await;
            };
            let mut seen = auth.keys_version();
            loop {
                tokio::time::sleep(JUDGE_EVERY).await;
                let now = auth.keys_version();
                if now == seen {
                    continue;
                }
                seen = now;
                match auth.verify(&token).await {
                    Ok(_) | Err(crate::auth::TokenError::KeysUnavailable) => {}
                    Err(why) => {
                        tracing::debug!(reason = %why, "a live stream's token no longer passes");
                        return;
                    }
                }
            }
        };
        tokio::select! {
            () = expiry => {}
            () = judged => {}
        }
    }
}

/// The caps on open streams: so many per user, so many in all.
pub struct Caps {
    per_user: usize,
    total: usize,
    open: std::sync::Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_user: std::collections::HashMap<String, usize>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller has as many open as one may.
    Caller,
    /// The process has as many open as it takes.
    Process,
}

impl Caps {
    pub const DEFAULT_PER_USER: usize = 8;
    pub const DEFAULT_TOTAL: usize = 2000;

    pub fn new(per_user: usize, total: usize) -> Caps {
        Caps {
            per_user: per_user.max(1),
            total: total.max(1),
            open: std::sync::Mutex::default(),
        }
    }

    /// A ticket for one more stream for `user` (`None`: unauthenticated
    /// development), if the caps allow it.
    pub fn admit(self: &Arc<Self>, user: Option<&str>) -> Result<Ticket, Full> {
        let mut open = self.open.lock().map_err(|_| Full::Process)?;
        if open.total >= self.total {
            return Err(Full::Process);
        }
        if let Some(user) = user {
            let mine = open.by_user.entry(user.to_owned()).or_default();
            if *mine >= self.per_user {
                return Err(Full::Caller);
            }
            *mine += 1;
        }
        open.total += 1;
        metrics::gauge!("live_streams_open").increment(1.0);
        Ok(Ticket {
            caps: self.clone(),
            user: user.map(str::to_owned),
        })
    }
}

/// One open stream's place under the caps, given back when it is dropped.
pub struct Ticket {
    caps: Arc<Caps>,
    user: Option<String>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        metrics::gauge!("live_streams_open").decrement(1.0);
        let Ok(mut open) = self.caps.open.lock() else {
            return;
        };
        open.total = open.total.saturating_sub(1);
        if let Some(user) = &self.user {
            if let Some(mine) = open.by_user.get_mut(user) {
                *mine = mine.saturating_sub(1);
                if *mine == 0 {
                    open.by_user.remove(user);
                }
            }
        }
    }
}

fn ready_again() -> Event {
    Event::default().event("ready").data("{\"again\":true}")
}

pub(super) fn json_event(name: &'static str, data: &impl serde::Serialize) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}
