//! What every handler shares ([`AppState`]), the defaults of the HTTP
//! edge, and which APIs a process serves.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::limits;
use crate::commands::Orders;
use crate::store::{CommitSignal, EventStore};

/// State shared by every handler: one reference-counted [`Shared`], so
/// the clone axum makes for every request is one counter's increment (the
/// parts themselves are a dozen pools, channels and maps: cloning and
/// dropping them per request was 3–4 % of the service's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares; assembled once, then frozen in an [`AppState`].
pub struct Shared {
    pub orders: Orders,
    /// The write budget (appends go through `orders`' store, which holds it).
    pub pool: PgPool,
    /// The read budget: reads never take the writers' connections.
    pub reads: PgPool,
    /// The port the server listens on (the original health check names it).
    pub port: u16,
    /// The path everything is served under (`PATH_PREFIX`; empty: none).
    pub prefix: super::PathPrefix,
    /// How long a read that asks for its own writes (`X-Log-Position`,
    /// `Prefer: consistency=strong`) waits for the read model before it
    /// answers 503.
    pub read_wait: Duration,
    /// The Kafka brokers `/readyz` checks, when configured.
    pub kafka: Option<infra::kafka::KafkaSource>,
    /// Requests handled at once; more are shed with 503 + `Retry-After`.
    pub max_in_flight: usize,
    /// A request still running after this is answered 503.
    pub request_timeout: Duration,
    /// Poked by every committed append; [`serve`] turns pokes into `NOTIFY`s.
    pub commit_signal: CommitSignal,
    /// The projections' positions for read-your-writes waiters (which hold
    /// no connection while they wait); [`serve`] runs it.
    pub positions: projections::consistency::PositionWatch,
    /// Who may call, and how often.
    pub access: limits::Access,
    /// The pages, their sign-in and live updates (`None`: API only).
    pub web: Option<super::pages::web::Web>,
    /// What `/readyz` found last, and its kept broker connection.
    pub readiness: super::readiness::Readiness,
}

impl Shared {
    /// Requests handled at once unless configured (`MAX_IN_FLIGHT`).
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 512;
    /// Seconds a request may run unless configured (`REQUEST_TIMEOUT_SECS`).
    pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
    /// How long a read of one's own writes waits unless configured.
    pub const DEFAULT_READ_WAIT: Duration = Duration::from_secs(5);

    pub fn new(pools: &crate::db::Pools, port: u16) -> Self {
        let commit_signal = CommitSignal::new();
        Shared {
            orders: Orders::new(
                EventStore::new(pools.writes.clone())
                    .with_commit_signal(commit_signal.clone())
                    .with_group_commit(),
            ),
            commit_signal,
            positions: projections::consistency::PositionWatch::default(),
            pool: pools.writes.clone(),
            reads: pools.reads.clone(),
            port,
            prefix: super::PathPrefix::default(),
            read_wait: Shared::DEFAULT_READ_WAIT,
            kafka: None,
            max_in_flight: Shared::DEFAULT_MAX_IN_FLIGHT as usize,
            request_timeout: Duration::from_secs(Shared::DEFAULT_REQUEST_TIMEOUT_SECS),
            access: limits::Access::default(),
            web: None,
            readiness: super::readiness::Readiness::default(),
        }
    }
}

/// Which APIs a process serves (`orders serve --api …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Apis {
    Order,
    Delivery,
    #[default]
    All,
}
