//! Group commit for appends that start a stream (placing an order).
//!
//! Each append is one statement and, alone, one transaction: at a few
//! thousand orders a second the database spends most of its time starting,
//! planning and committing them. Appends that start a new stream cannot
//! conflict with one another (their streams are new ids), so the ones that
//! arrive together go out as one statement in one transaction:
//!
//! - A request is sent at once when a statement slot is free; requests that
//!   arrive while every slot is busy wait for the next free one and go
//!   together ([`LIMITS`], a [`Collector`](crate::batch::Collector)).
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
//!   answer it would have got alone. A statement whose connection failed
//!   after it was sent (it broke, the server shut down) may or may not have
//!   committed: every request of the batch is told so
//!   ([`StoreError::OutcomeUnknown`]). A failure before sending (no
//!   connection within the pool's timeout) wrote nothing: every request
//!   gets it as it is.
//! - A request whose caller is gone by the time its batch forms (cut off by
//!   its deadline and answered "outcome unknown") is not written (the
//!   collector drops it).
//! - Keys are taken in one order in every batch, so two batches holding
//!   each other's keys (retries) cannot deadlock.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::{insert_one, Columns, IdempotencyKey, Inserted, Result, StoreError};
use crate::batch::{Collector, Limits};

/// One statement in flight at a time, with up to 64 requests.
///
/// Every placement draws its pickup number from its store's day: a counter
/// row that the statement locks until it commits. Two statements in flight
/// for one store do not run side by side. The second waits on the row and
/// then commits alone, so requests that arrived together are split into
/// smaller groups that still commit one after another. With one statement
/// at a time, they all wait for the next statement instead. Measured on
/// this 2-core machine (`orders serve`, one store, 5 s rows), against 4 in
/// flight: 8 connections 5,166 req/s against 1,997; 32 connections 7,867
/// against 4,929 (ADR 0024).
pub const LIMITS: Limits = Limits {
    name: "group_commit",
    in_flight: 1,
    max_batch: 64,
    queue: 4096,
};
/// A refused batch's requests run alone, this many at a time.
const FALLBACK_AT_ONCE: usize = 2;

/// One request: a new stream's events and its idempotency key.
type Append = (Columns, Option<IdempotencyKey>);

/// The group committer of one event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    appends: Collector<Append, Result<Inserted>>,
}

impl GroupCommit {
    pub fn new(pool: PgPool) -> Self {
        GroupCommit {
            appends: Collector::new(LIMITS, move |batch| {
                let pool = pool.clone();
                async move { commit(&pool, batch).await }
            }),
        }
    }

    /// Appends a new stream's events with whatever else is waiting.
    pub(super) async fn append(
        &self,
        columns: Columns,
        key: Option<IdempotencyKey>,
    ) -> Result<Inserted> {
        self.appends
            .ask((columns, key))
            .await
            .map_err(StoreError::Database)?
    }
}

/// One batch: one statement, an answer per request (in the batch's order),
/// or the error that leaves every request's outcome unknown.
async fn commit(
    pool: &PgPool,
    batch: Vec<Append>,
) -> std::result::Result<Vec<Result<Inserted>>, sqlx::Error> {
    let n = batch.len();
    let mut answers: Vec<Option<Result<Inserted>>> = (0..n).map(|_| None).collect();
    // Keys in one order in every batch, so that two batches waiting on each
    // other's keys (retries of the same requests) cannot deadlock.
    let mut batch: Vec<(usize, Append)> = batch.into_iter().enumerate().collect();
    batch.sort_by(|(_, a), (_, b)| {
        let key = |p: &Append| p.1.as_ref().map(|k| (k.scope.clone(), k.key.clone()));
        key(a).cmp(&key(b))
    });
    // A key twice in one batch: the first request has it; the others are
    // answered once the batch has committed, as requests that lost the key
    // to a concurrent one (they then replay the first's answer).
    let mut keys = HashSet::new();
    let (batch, repeats): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(_, (_, key))| {
        key.as_ref()
            .is_none_or(|k| keys.insert((k.scope.clone(), k.key.clone())))
    });
    if let ([(i, (columns, key))], []) = (batch.as_slice(), repeats.as_slice()) {
        answers[*i] = Some(insert_one(pool, columns, key.as_ref()).await);
        return Ok(answers.into_iter().flatten().collect());
    }
    match insert_many(pool, &batch).await {
        Ok(mut rows) => {
            for (i, (columns, key)) in &batch {
                let rows = rows.remove(&columns.stream.as_uuid()).unwrap_or_default();
                answers[*i] = Some(if rows.is_empty() && key.is_some() {
                    // Its events were skipped because its key was taken (the
                    // stream is new: nothing else skips them).
                    Err(StoreError::IdempotencyKeyTaken)
                } else {
                    Ok(rows)
                });
            }
            for (i, _) in &repeats {
                answers[*i] = Some(Err(StoreError::IdempotencyKeyTaken));
            }
        }
        // Refused by the database (not cut off from it): nothing committed.
        Err(refused)
            if matches!(refused, sqlx::Error::Database(_))
                && !infra::pg::is_unavailable(&refused) =>
        {
            tracing::debug!(error = %refused, size = batch.len(), "a group commit was refused; its requests go one by one");
            for (i, result) in one_by_one(pool, batch, repeats).await {
                answers[i] = Some(result);
            }
        }
        // Sent, and the answer lost: maybe committed, maybe not. Each
        // request of the batch says so (the HTTP layer answers
        // `/problems/outcome-unknown`).
        Err(failed) if infra::pg::may_have_committed(&failed) => {
            let cause = failed.to_string();
            tracing::warn!(error = %cause, size = batch.len() + repeats.len(),
                "a group commit's connection failed after its statement was sent; its outcome is unknown");
            metrics::counter!("event_store_outcome_unknown_total")
                .increment(u64::try_from(n).unwrap_or(u64::MAX));
            for (i, _) in batch.iter().chain(&repeats) {
                answers[*i] = Some(Err(StoreError::OutcomeUnknown {
                    cause: cause.clone(),
                }));
            }
        }
        // Never sent (no connection): nothing was written.
        Err(failed) => return Err(failed),
    }
    answers
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| sqlx::Error::Protocol("group commit: a request went unanswered".into()))
}

/// A refused batch's requests, each on the one-append path as it would run
/// alone, a few at a time (the write pool serves other requests too); the
/// repeats of a key after the first of it has its answer.
async fn one_by_one(
    pool: &PgPool,
    batch: Vec<(usize, Append)>,
    repeats: Vec<(usize, Append)>,
) -> Vec<(usize, Result<Inserted>)> {
    let alone = |(i, (columns, key)): (usize, Append)| async move {
        (i, insert_one(pool, &columns, key.as_ref()).await)
    };
    let mut answers = Vec::new();
    for group in [batch, repeats] {
        let done: Vec<_> = futures::stream::iter(group)
            .map(alone)
            .buffer_unordered(FALLBACK_AT_ONCE)
            .collect()
            .await;
        answers.extend(done);
    }
    answers
}

/// A batch as its statement's arrays: one entry per event (with the index
/// of its request), one per idempotency key.
#[derive(Default)]
struct Arrays<'a> {
    request: Vec<i32>,
    streams: Vec<Uuid>,
    versions: Vec<i32>,
    event_ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i16>,
    payloads: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    /// Per event: the menu generation its request was checked against.
    guards: Vec<Option<i64>>,
    /// Per event: the store and day its request draws a pickup number from.
    draw_stores: Vec<Option<&'a str>>,
    draw_days: Vec<Option<time::Date>>,
    keyed: Vec<i32>,
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    key_streams: Vec<Uuid>,
    key_versions: Vec<i32>,
}

impl<'a> Arrays<'a> {
    fn of(batch: &'a [(usize, Append)]) -> Self {
        let rows: usize = batch.iter().map(|(_, (c, _))| c.versions.len()).sum();
        let mut a = Arrays {
            request: Vec::with_capacity(rows),
            streams: Vec::with_capacity(rows),
            versions: Vec::with_capacity(rows),
            event_ids: Vec::with_capacity(rows),
            types: Vec::with_capacity(rows),
            schema_versions: Vec::with_capacity(rows),
            payloads: Vec::with_capacity(rows),
            metadata: Vec::with_capacity(rows),
            guards: Vec::with_capacity(rows),
            draw_stores: Vec::with_capacity(rows),
            draw_days: Vec::with_capacity(rows),
            ..Arrays::default()
        };
        for (i, (_, (c, key))) in batch.iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            for (n, version) in c.versions.iter().enumerate() {
                a.request.push(i);
                a.streams.push(c.stream.as_uuid());
                a.versions.push(*version);
                a.event_ids.push(c.event_ids[n]);
                a.types.push(c.types[n]);
                a.schema_versions.push(c.schema_versions[n]);
                a.payloads.push(c.payloads[n].clone());
                a.metadata.push(c.metadata.clone());
                a.guards.push(c.menu_generation);
                a.draw_stores
                    .push(c.draw.as_ref().map(|(store, _)| store.as_str()));
                a.draw_days.push(c.draw.as_ref().map(|(_, day)| *day));
            }
            if let Some(k) = key {
                a.keyed.push(i);
                a.scopes.push(k.scope.as_str());
                a.keys.push(k.key.as_str());
                a.fingerprints.push(k.fingerprint.as_str());
                a.key_streams.push(c.stream.as_uuid());
                a.key_versions
                    .push(c.versions.last().copied().unwrap_or_default());
            }
        }
        a
    }
}

/// The batch's statement: keys first (a key held by another request skips
/// its request's events), then the events of every request whose key went
/// in or that has none, then their outbox rows; a request checked against
/// a menu generation that is no longer the menu's writes nothing (its key
/// included); positions are drawn in the
/// batch's order, so each request's events are in version order. Returns
/// the inserted events by stream.
async fn insert_many(
    pool: &PgPool,
    batch: &[(usize, Append)],
) -> std::result::Result<HashMap<Uuid, Inserted>, sqlx::Error> {
    let a = Arrays::of(batch);
    // Acquired first: failing to get a connection sends nothing.
    let mut conn = pool.acquire().await?;
    for (_, (columns, _)) in batch {
        if let Some(sent) = &columns.sent {
            sent.mark();
        }
    }
    let inserted = sqlx::query!(
        r#"WITH menu AS (SELECT generation FROM menu_generation),
         input AS (
             SELECT u.*, nextval(pg_get_serial_sequence('events', 'position')) AS position
               FROM (SELECT * FROM UNNEST($1::int[], $2::uuid[], $3::int[], $4::uuid[], $5::text[],
                                          $6::smallint[], $7::jsonb[], $8::jsonb[], $15::bigint[],
                                          $16::text[], $17::date[])
                            WITH ORDINALITY
                            AS u(request, stream_id, version, event_id, event_type, schema_version,
                                 payload, metadata, guard, store_id, day, n)
                      WHERE u.guard IS NULL OR u.guard = (SELECT generation FROM menu)
                      ORDER BY n) u),
         keyed AS (
             INSERT INTO idempotency_keys (scope, key, fingerprint, stream_id, version, log_position)
             SELECT k.scope, k.key, k.fingerprint, k.stream_id, k.version,
                    (SELECT max(i.position) FROM input i WHERE i.request = k.request)
               FROM UNNEST($9::int[], $10::text[], $11::text[], $12::text[], $13::uuid[], $14::int[])
                    AS k(request, scope, key, fingerprint, stream_id, version)
              WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = k.stream_id)
                AND EXISTS (SELECT 1 FROM input i WHERE i.request = k.request)
             ON CONFLICT (scope, key) DO NOTHING
             RETURNING stream_id),
         accepted AS (
             SELECT i.* FROM input i
              WHERE (i.request <> ALL($9) OR i.stream_id IN (SELECT stream_id FROM keyed))
                AND NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = i.stream_id)),
         asked AS (
             SELECT request, store_id, day FROM accepted
              WHERE version = 1 AND store_id IS NOT NULL),
         drawn AS (
             INSERT INTO pickup_counters AS c (store_id, day, last)
             SELECT store_id, day, count(*)::int FROM asked GROUP BY store_id, day ORDER BY store_id, day
             ON CONFLICT (store_id, day) DO UPDATE SET last = c.last + EXCLUDED.last
             RETURNING store_id, day, last),
         numbered AS (
             SELECT a.request,
                    d.last - count(*) OVER (PARTITION BY a.store_id, a.day)
                           + row_number() OVER (PARTITION BY a.store_id, a.day ORDER BY a.request)
                      AS number
               FROM asked a JOIN drawn d ON d.store_id = a.store_id AND d.day = a.day),
         appended AS (
             INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                                 payload, metadata)
             OVERRIDING SYSTEM VALUE
             SELECT a.position, a.stream_id, a.version, a.event_id, a.event_type, a.schema_version,
                    CASE WHEN n.number IS NULL OR a.version <> 1 THEN a.payload
                         ELSE jsonb_set(a.payload, '{pickup_number}', to_jsonb(n.number)) END,
                    a.metadata
               FROM accepted a LEFT JOIN numbered n ON n.request = a.request
             RETURNING position, stream_id, version, recorded_at, transaction_id,
                       (payload->>'pickup_number')::int AS pickup_number),
         outboxed AS (
             INSERT INTO outbox (position, stream_id, transaction_id)
             SELECT position, stream_id, transaction_id FROM appended)
         SELECT stream_id AS "stream_id!", position AS "position!", version AS "version!",
                recorded_at AS "recorded_at!", pickup_number
           FROM appended ORDER BY position"#,
        &a.request,
        &a.streams,
        &a.versions,
        &a.event_ids,
        &a.types as &[&str],
        &a.schema_versions,
        &a.payloads,
        &a.metadata,
        &a.keyed,
        &a.scopes as &[&str],
        &a.keys as &[&str],
        &a.fingerprints as &[&str],
        &a.key_streams,
        &a.key_versions,
        &a.guards as &[Option<i64>],
        &a.draw_stores as &[Option<&str>],
        &a.draw_days as &[Option<time::Date>],
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_stream: HashMap<Uuid, Inserted> = HashMap::new();
    for row in inserted {
        by_stream.entry(row.stream_id).or_default().push((
            row.position,
            row.version,
            row.recorded_at,
            row.pickup_number,
        ));
    }
    Ok(by_stream)
}
