//! Group commit for appends that start a stream (placing an order).
//!
//! Each append is one statement and, alone, one transaction: at a few
//! thousand orders a second the database spends most of its time starting,
//! planning and committing them. Appends that start a new stream cannot
//! conflict with one another (their streams are new ids), so the ones that
//! arrive together go out as one statement in one transaction:
//!
//! - A request is sent at once when a statement slot is free ([`IN_FLIGHT`]
//!   statements at a time); requests that arrive while every slot is busy
//!   wait for the next free one and go together, at most [`MAX_BATCH`] to a
//!   statement. There is no timer: a lone request waits for nothing, and the
//!   wait under load is bounded by one statement's time.
//! - Each request gets its own answer. An idempotency key another request
//!   holds already skips that request's events, not the others' (its key is
//!   inserted with `ON CONFLICT DO NOTHING`, first; only the requests whose
//!   key went in, or that have none, append). Two requests of one batch with
//!   the same key: the second is answered "key taken" and replays the first.
//! - Nothing is acknowledged before its commit: answers are handed out after
//!   the statement returned.
//! - A statement the database refused (an error it reported: the
//!   transaction rolled back, nothing of it committed) is run again request
//!   by request on the one-append path, two at a time, so each gets the
//!   answer it would have got alone. Any other failure (the connection
//!   broke, the server is shutting down, the pool timed out) may or may not
//!   have committed: every request of the batch gets it.
//! - A request whose caller is gone by the time its batch forms (cut off by
//!   its deadline and answered "outcome unknown") is not written.
//! - Keys are taken in one order in every batch, so two batches holding
//!   each other's keys (retries) cannot deadlock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{collect, shared};
use uuid::Uuid;

use super::{insert_one, Columns, IdempotencyKey, Inserted, Result, StoreError};

/// Statements in flight at a time (each holds one write connection).
pub const IN_FLIGHT: usize = 4;
/// Requests per statement at most.
pub const MAX_BATCH: usize = 64;
/// A refused batch's requests run alone, this many at a time.
const FALLBACK_AT_ONCE: usize = 2;
/// Requests waiting for a statement at most; beyond it, senders wait (the
/// HTTP layer's in-flight limit bounds them long before).
const QUEUE: usize = 4096;

struct Pending {
    columns: Columns,
    key: Option<IdempotencyKey>,
    answer: oneshot::Sender<Result<Inserted>>,
}

/// The group committer of one event store. Cheap to clone; its task starts
/// with the first append and ends when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    pool: PgPool,
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub fn new(pool: PgPool) -> Self {
        GroupCommit {
            pool,
            queue: Arc::default(),
        }
    }

    /// Appends a new stream's events with whatever else is waiting.
    pub(super) async fn append(
        &self,
        columns: Columns,
        key: Option<IdempotencyKey>,
    ) -> Result<Inserted> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            let pool = self.pool.clone();
            tokio::spawn(collect(receiver, IN_FLIGHT, MAX_BATCH, move |batch| {
                let pool = pool.clone();
                async move { commit(&pool, batch).await }
            }));
            sender
        });
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            columns,
            key,
            answer,
        };
        queue
            .send(pending)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answered
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// One batch: one statement, each request answered.
async fn commit(pool: &PgPool, batch: Vec<Pending>) {
    // A request whose caller is gone (cut off by its deadline, and answered
    // "outcome unknown") is not written: nothing of it was sent, and its
    // client retries with its key.
    let mut batch: Vec<Pending> = batch
        .into_iter()
        .filter(|p| !p.answer.is_closed())
        .collect();
    if batch.is_empty() {
        return;
    }
    metrics::histogram!("event_store_group_commit_size").record(batch.len() as f64);
    // Keys in one order in every batch, so that two batches waiting on each
    // other's keys (retries of the same requests) cannot deadlock.
    batch.sort_by(|a, b| {
        let key = |p: &Pending| p.key.as_ref().map(|k| (k.scope.clone(), k.key.clone()));
        key(a).cmp(&key(b))
    });
    // A key twice in one batch: the first request has it; the others are
    // answered once the batch has committed, as requests that lost the key
    // to a concurrent one (they then replay the first's answer).
    let mut keys = HashSet::new();
    let (mut batch, repeats): (Vec<Pending>, Vec<Pending>) =
        batch.into_iter().partition(|pending| {
            pending
                .key
                .as_ref()
                .is_none_or(|k| keys.insert((k.scope.clone(), k.key.clone())))
        });
    if batch.len() == 1 && repeats.is_empty() {
        if let Some(alone) = batch.pop() {
            let result = insert_one(pool, &alone.columns, alone.key.as_ref()).await;
            let _ = alone.answer.send(result);
        }
        return;
    }
    match insert_many(pool, &batch).await {
        Ok(mut rows) => {
            for pending in batch {
                let rows = rows
                    .remove(&pending.columns.stream.as_uuid())
                    .unwrap_or_default();
                let result = if rows.is_empty() && pending.key.is_some() {
                    // Its events were skipped because its key was taken (the
                    // stream is new: nothing else skips them).
                    Err(StoreError::IdempotencyKeyTaken)
                } else {
                    Ok(rows)
                };
                let _ = pending.answer.send(result);
            }
            for repeat in repeats {
                let _ = repeat.answer.send(Err(StoreError::IdempotencyKeyTaken));
            }
        }
        // Refused by the database (not cut off from it): nothing committed.
        Err(refused)
            if matches!(refused, sqlx::Error::Database(_)) && !super::is_unavailable(&refused) =>
        {
            tracing::debug!(error = %refused, size = batch.len(), "a group commit was refused; its requests go one by one");
            let alone = |pending: Pending| async move {
                let result = insert_one(pool, &pending.columns, pending.key.as_ref()).await;
                let _ = pending.answer.send(result);
            };
            // A few at a time: the write pool serves other requests too.
            futures::stream::iter(batch)
                .for_each_concurrent(FALLBACK_AT_ONCE, alone)
                .await;
            // After the first of their key has its answer.
            futures::stream::iter(repeats)
                .for_each_concurrent(FALLBACK_AT_ONCE, alone)
                .await;
        }
        Err(failed) => {
            // Maybe committed, maybe not: each request says so as it would
            // alone (the HTTP layer answers "outcome unknown" or 503).
            let n = batch.len() + repeats.len();
            for (pending, error) in batch.into_iter().chain(repeats).zip(shared(failed, n)) {
                let _ = pending.answer.send(Err(StoreError::Database(error)));
            }
        }
    }
}

/// The batch's statement: keys first (a key held by another request skips
/// its request's events), then the events of every request whose key went
/// in or that has none, then their outbox rows; positions are drawn in the
/// batch's order, so each request's events are in version order. Returns
/// the inserted events by stream.
async fn insert_many(
    pool: &PgPool,
    batch: &[Pending],
) -> std::result::Result<HashMap<Uuid, Inserted>, sqlx::Error> {
    let rows: usize = batch.iter().map(|p| p.columns.versions.len()).sum();
    let mut request = Vec::with_capacity(rows);
    let mut streams = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut event_ids = Vec::with_capacity(rows);
    let mut types: Vec<&str> = Vec::with_capacity(rows);
    let mut schema_versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    let mut keyed = Vec::new();
    let (mut scopes, mut keys, mut fingerprints) = (Vec::new(), Vec::new(), Vec::new());
    let (mut key_streams, mut key_versions) = (Vec::new(), Vec::new());
    for (i, pending) in batch.iter().enumerate() {
        let i = i32::try_from(i).unwrap_or(i32::MAX);
        let c = &pending.columns;
        for (n, version) in c.versions.iter().enumerate() {
            request.push(i);
            streams.push(c.stream.as_uuid());
            versions.push(*version);
            event_ids.push(c.event_ids[n]);
            types.push(c.types[n]);
            schema_versions.push(c.schema_versions[n]);
            payloads.push(c.payloads[n].clone());
            metadata.push(c.metadata.clone());
        }
        if let Some(k) = &pending.key {
            keyed.push(i);
            scopes.push(k.scope.as_str());
            keys.push(k.key.as_str());
            fingerprints.push(k.fingerprint.as_str());
            key_streams.push(c.stream.as_uuid());
            key_versions.push(c.versions.last().copied().unwrap_or_default());
        }
    }
    let inserted = sqlx::query!(
        r#"WITH input AS (
             SELECT u.*, nextval(pg_get_serial_sequence('events', 'position')) AS position
               FROM (SELECT * FROM UNNEST($1::int[], $2::uuid[], $3::int[], $4::uuid[], $5::text[],
                                          $6::smallint[], $7::jsonb[], $8::jsonb[])
                            WITH ORDINALITY
                            AS u(request, stream_id, version, event_id, event_type, schema_version,
                                 payload, metadata, n)
                      ORDER BY n) u),
         keyed AS (
             INSERT INTO idempotency_keys (scope, key, fingerprint, stream_id, version, log_position)
             SELECT k.scope, k.key, k.fingerprint, k.stream_id, k.version,
                    (SELECT max(i.position) FROM input i WHERE i.request = k.request)
               FROM UNNEST($9::int[], $10::text[], $11::text[], $12::text[], $13::uuid[], $14::int[])
                    AS k(request, scope, key, fingerprint, stream_id, version)
              WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = k.stream_id)
             ON CONFLICT (scope, key) DO NOTHING
             RETURNING stream_id),
         appended AS (
             INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                                 payload, metadata)
             OVERRIDING SYSTEM VALUE
             SELECT i.position, i.stream_id, i.version, i.event_id, i.event_type, i.schema_version,
                    i.payload, i.metadata
               FROM input i
              WHERE (i.request <> ALL($9) OR i.stream_id IN (SELECT stream_id FROM keyed))
                AND NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = i.stream_id)
             RETURNING position, stream_id, version, recorded_at, transaction_id),
         outboxed AS (
             INSERT INTO outbox (position, stream_id, transaction_id)
             SELECT position, stream_id, transaction_id FROM appended)
         SELECT stream_id AS "stream_id!", position AS "position!", version AS "version!",
                recorded_at AS "recorded_at!"
           FROM appended ORDER BY position"#,
        &request,
        &streams,
        &versions,
        &event_ids,
        &types as &[&str],
        &schema_versions,
        &payloads,
        &metadata,
        &keyed,
        &scopes as &[&str],
        &keys as &[&str],
        &fingerprints as &[&str],
        &key_streams,
        &key_versions,
    )
    .fetch_all(pool)
    .await?;
    let mut by_stream: HashMap<Uuid, Inserted> = HashMap::new();
    for row in inserted {
        by_stream.entry(row.stream_id).or_default().push((
            row.position,
            row.version,
            row.recorded_at,
        ));
    }
    Ok(by_stream)
}
