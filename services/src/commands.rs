//! Command handling, the one place where the pure domain meets the store:
//! load the stream, fold it, `decide`, append with the version that was read.
//! Business rejections and infrastructure failures are different types:
//! `Result<Result<Outcome, Rejection>, StoreError>`.

use domain::{
    decide, fold, AskedLine, Command, DomainError, EventEnvelope, Metadata, OrderId, OrderState,
    PlaceOrder, StoreId, UserId,
};
use tracing::instrument;

use crate::auth::StoreScope;
use crate::store::{EventStore, IdempotencyKey, IdempotencyRecord, StoreError};

/// How often a command without `If-Match` is re-decided after losing a race.
/// Each retry re-reads the stream, so the decision is always made on fresh state.
const MAX_ATTEMPTS: usize = 5;

/// Why a command was not carried out. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No such order, or not this user's (indistinguishable on purpose).
    NotFound,
    /// `If-Match` named a version the order is no longer (or not yet) at.
    PreconditionFailed { current: u64 },
    /// The lifecycle does not allow it.
    Domain(DomainError),
    /// The idempotency key was first used for a different request.
    IdempotencyKeyReused,
    /// Lost the optimistic-concurrency race on every attempt.
    Contended,
    /// The order does not fit the menu or its store (each field at fault,
    /// and why).
    OffMenu(domain::OffMenu),
}

/// A command that took effect (or, for an idempotent retry, had taken effect).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The order's stream up to and including this command's events.
    pub stream: Vec<EventEnvelope>,
    /// Global log position of the last event this command wrote.
    pub log_position: i64,
    /// True when an earlier request with the same idempotency key did the work.
    pub replayed: bool,
    /// What the command waited on, and for how long (a placement's).
    pub stages: crate::timing::Stages,
}

pub type Handled = Result<Result<Outcome, Rejection>, StoreError>;

/// A place-order request as the edge read it.
#[derive(Debug, Clone)]
pub struct PlaceRequest {
    pub order_id: OrderId,
    pub user_id: UserId,
    /// `None`: the request named no store (the default store's).
    pub store_id: Option<StoreId>,
    /// The lines as asked: options not said are completed from the menu.
    pub lines: Vec<AskedLine>,
    /// Sent as `items`: a fault names its line (`items[1].coffee_price`).
    pub as_items: bool,
}

#[derive(Debug, Clone)]
pub struct Orders {
    store: EventStore,
    /// The shop's clock: when its day, and its pickup numbers, start again.
    day_offset: time::UtcOffset,
    catalog: crate::catalog::Current,
}

impl Orders {
    /// Pickup numbers count days in UTC; [`Orders::with_day_offset`] sets the
    /// shop's clock.
    pub fn new(store: EventStore) -> Self {
        let catalog = crate::catalog::Current::new(store.pool().clone());
        Orders {
            store,
            day_offset: time::UtcOffset::UTC,
            catalog,
        }
    }

    /// Pickup numbers start again at 1 at midnight of this offset from UTC.
    pub fn with_day_offset(mut self, offset: time::UtcOffset) -> Self {
        self.day_offset = offset;
        self
    }

    /// Places a new order. With an idempotency key, a retry returns the first
    /// result and appends nothing; a different request under the same key is
    /// rejected. When a menu is set, the order must fit it (drink on sale,
    /// its size and temperature, the menu's price).
    ///
    /// The key is not looked up first: the append inserts it in its one
    /// statement, and a key held by an earlier request writes nothing (no
    /// event, no pickup number) and answers `IdempotencyKeyTaken`; only then
    /// is the earlier request's record read, to replay it. A refusal looks
    /// the key up too, so a retry of an order placed before the menu changed
    /// still gets its first answer. The order is checked against the catalog
    /// held in memory; its append holds only if the menu's generation is
    /// still the one checked against, and otherwise the catalog is read
    /// again and the order checked again.
    #[instrument(skip_all, fields(order_id = %request.order_id, user_id = %request.user_id), err)]
    pub async fn place(
        &self,
        request: PlaceRequest,
        metadata: &Metadata,
        key: Option<IdempotencyKey>,
    ) -> Handled {
        let mut stages = crate::timing::Stages::default();
        let store_id = request.store_id.clone().unwrap_or_default();
        let mut held = stages.time("menu", self.catalog.held()).await?;
        let today = time::OffsetDateTime::now_utc()
            .to_offset(self.day_offset)
            .date();
        for attempt in 1..=MAX_ATTEMPTS {
            let (generation, catalog) = held;
            let lines = match checked(&catalog, &store_id, &request) {
                Ok(lines) => lines,
                // A refusal stands only if the catalog that made it is
                // current (one read, on this path only).
                Err(_) if attempt < MAX_ATTEMPTS && self.catalog.moved_from(generation).await? => {
                    held = stages.time("menu", self.catalog.refresh()).await?;
                    continue;
                }
                Err(refused) => return self.refused(refused, key.as_ref(), stages).await,
            };
            // The pickup number is drawn by the append itself.
            let place = PlaceOrder {
                order_id: request.order_id,
                user_id: request.user_id.clone(),
                pickup_number: None,
                store_id: store_id.clone(),
                lines,
            };
            let events = match decide(&OrderState::NotPlaced, Command::Place(place)) {
                Ok(events) => events,
                Err(rejection) => {
                    let refused = Rejection::Domain(rejection);
                    return self.refused(refused, key.as_ref(), stages).await;
                }
            };
            let placed = self.store.place(
                request.order_id,
                &events,
                metadata,
                key.as_ref(),
                (generation, (&store_id, today)),
            );
            match stages.time("append", placed).await {
                Ok(appended) => {
                    return Ok(Ok(Outcome {
                        stream: appended.events,
                        log_position: appended.last_position,
                        replayed: false,
                        stages,
                    }))
                }
                Err(StoreError::MenuChanged) if attempt < MAX_ATTEMPTS => {
                    held = stages.time("menu", self.catalog.refresh()).await?;
                }
                Err(StoreError::IdempotencyKeyTaken) => {
                    // An earlier request with the same key committed first
                    // (a retry, or a concurrent request).
                    let (record, key) = self
                        .earlier(key.as_ref(), &mut stages)
                        .await?
                        .ok_or(StoreError::IdempotencyKeyTaken)?;
                    return self.replay(record, key, stages).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::MenuChanged)
    }

    /// A refused placement's answer: the refusal, unless an earlier
    /// request with the same key committed (a retry of an order placed
    /// before the menu changed), whose answer is replayed.
    async fn refused(
        &self,
        refused: Rejection,
        key: Option<&IdempotencyKey>,
        mut stages: crate::timing::Stages,
    ) -> Handled {
        match self.earlier(key, &mut stages).await? {
            Some((record, key)) => self.replay(record, key, stages).await,
            None => Ok(Err(refused)),
        }
    }

    /// What an earlier request with `key` did, if one committed.
    async fn earlier<'k>(
        &self,
        key: Option<&'k IdempotencyKey>,
        stages: &mut crate::timing::Stages,
    ) -> Result<Option<(IdempotencyRecord, &'k IdempotencyKey)>, StoreError> {
        let Some(key) = key else {
            return Ok(None);
        };
        let found = stages
            .time(
                "idempotency",
                self.store.idempotency_record(&key.scope, &key.key),
            )
            .await?;
        Ok(found.map(|record| (record, key)))
    }

    async fn replay(
        &self,
        record: IdempotencyRecord,
        key: &IdempotencyKey,
        stages: crate::timing::Stages,
    ) -> Handled {
        if record.fingerprint != key.fingerprint {
            return Ok(Err(Rejection::IdempotencyKeyReused));
        }
        let id = OrderId::try_from(record.stream_id).map_err(|e| StoreError::Corrupt {
            position: record.log_position,
            what: format!("idempotency record names {}: {e}", record.stream_id),
        })?;
        let mut stream = self.store.load(id).await?;
        stream.retain(|e| e.version <= record.version);
        Ok(Ok(Outcome {
            stream,
            log_position: record.log_position,
            replayed: true,
            stages,
        }))
    }

    /// Runs a command against an existing order that must belong to `owner`
    /// and to one of `stores` (another is not found, as a missing one).
    /// `if_match` is the version the caller last saw (HTTP `If-Match`); without
    /// it, a lost race is retried on fresh state.
    #[instrument(skip_all, fields(order_id = %id, ?command), err)]
    pub async fn handle(
        &self,
        id: OrderId,
        owner: &UserId,
        stores: &StoreScope,
        command: Command,
        if_match: Option<u64>,
        metadata: &Metadata,
    ) -> Handled {
        for _ in 0..MAX_ATTEMPTS {
            // Another user's order is not found, whatever its events.
            let Some(mut stream) = self.load_owned(id, owner).await? else {
                return Ok(Err(Rejection::NotFound));
            };
            let state = fold(stream.iter().map(|e| &e.event));
            // Nor is an order of a store the caller does not work at.
            if state
                .order()
                .is_some_and(|order| !stores.includes(order.store_id.as_str()))
            {
                return Ok(Err(Rejection::NotFound));
            }
            let current = state.version();
            if if_match.is_some_and(|v| v != current) {
                return Ok(Err(Rejection::PreconditionFailed { current }));
            }
            let events = match decide(&state, command.clone()) {
                Ok(events) => events,
                Err(rejection) => return Ok(Err(Rejection::Domain(rejection))),
            };
            match self
                .store
                .append(id, current, &events, metadata, None)
                .await
            {
                Ok(appended) => {
                    stream.extend(appended.events);
                    return Ok(Ok(Outcome {
                        stream,
                        log_position: appended.last_position,
                        replayed: false,
                        stages: crate::timing::Stages::default(),
                    }));
                }
                Err(StoreError::Conflict { .. }) if if_match.is_some() => {
                    // The version the caller saw is gone; report where it is now.
                    let now = self.store.load(id).await?;
                    let current = now.last().map_or(0, |e| e.version);
                    return Ok(Err(Rejection::PreconditionFailed { current }));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Err(Rejection::Contended))
    }

    /// The stream of an order that belongs to `owner`, or `None`. Whose the
    /// order is is judged first, from its placement alone, so that nothing
    /// about another user's order (not even that one of its events cannot be
    /// read here, nor which) reaches the caller: only the owner's reads can
    /// fail with [`StoreError::Unreadable`].
    pub async fn load_owned(
        &self,
        id: OrderId,
        owner: &UserId,
    ) -> Result<Option<Vec<EventEnvelope>>, StoreError> {
        let rows = self.store.load_rows(id).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let owned = match first.decode() {
            Ok(placed) => fold(std::iter::once(&placed.event))
                .order()
                .is_some_and(|order| &order.user_id == owner),
            // A placement this build cannot read: its owner as the payload
            // names it, if it does; nobody's otherwise.
            Err(_) => {
                serde_json::from_str::<serde_json::Value>(&first.payload)
                    .ok()
                    .and_then(|payload| payload.get("user_id")?.as_str().map(str::to_owned))
                    .as_deref()
                    == Some(owner.as_str())
            }
        };
        if !owned {
            return Ok(None);
        }
        let stream = rows
            .into_iter()
            .map(|row| row.decode().map_err(StoreError::from))
            .collect::<Result<Vec<_>, _>>()?;
        let state = fold(stream.iter().map(|e| &e.event));
        Ok(match state.order() {
            Some(order) if &order.user_id == owner => Some(stream),
            _ => None,
        })
    }
}

/// The order's lines as `catalog` takes them at `store_id` (options not said
/// completed from the menu), or why it refuses them: no such store, a
/// closed one, a line off its menu (named by its index when sent as
/// `items`).
fn checked(
    catalog: &crate::catalog::Catalog,
    store_id: &StoreId,
    request: &PlaceRequest,
) -> Result<domain::OrderLines, Rejection> {
    let refuse = |why: String| Rejection::OffMenu(vec![("store_id".to_owned(), why)]);
    match catalog.store(store_id) {
        None => {
            return Err(refuse(format!(
                "there is no store {store_id} (GET /stores lists them)"
            )))
        }
        Some(store) if !store.open => {
            return Err(refuse(format!("{} ({store_id}) is closed", store.name)))
        }
        Some(_) => {}
    }
    let prefix = |i: usize| {
        if request.as_items {
            format!("items[{i}].")
        } else {
            String::new()
        }
    };
    catalog
        .menu_at(store_id)
        .take(&request.lines, prefix)
        .map_err(Rejection::OffMenu)
}
