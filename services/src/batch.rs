//! Requests that arrive together, served together: the waiting callers of a
//! query (or statement) are handed to one run of it while a slot is free,
//! each getting its own share of the answer. The event store's group
//! commit is a [`Collector`] with its [`Limits`]; it supplies only the run
//! (the pickup draws and the menu's generation check, once collectors too,
//! are now part of its statement: ADR 0024).
//!
//! There is no timer: a lone request goes at once when a slot is free, and
//! the wait under load is bounded by one run's time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, Semaphore};

/// How much one collector may do at a time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What the collector serves, in its metrics and logs.
    pub name: &'static str,
    /// Runs at a time (each holds a database connection).
    pub in_flight: usize,
    /// Requests per run at most.
    pub max_batch: usize,
    /// Requests waiting for a run at most; beyond it, callers wait to be
    /// queued (the HTTP layer's in-flight limit bounds them long before).
    pub queue: usize,
}

/// One run over a batch: an answer per request, in the requests' order, or
/// one error for them all (each caller then gets an error of its kind, see
/// [`shared`]).
type Run<Q, A> = dyn Fn(Vec<Q>) -> Pin<Box<dyn Future<Output = Result<Vec<A>, sqlx::Error>> + Send>>
    + Send
    + Sync;

struct Waiting<Q, A> {
    request: Q,
    answer: oneshot::Sender<Result<A, sqlx::Error>>,
}

/// Hands the requests that wait together to one run. Cheap to clone; its
/// task starts with the first request and ends when the last clone is
/// dropped.
pub struct Collector<Q, A> {
    limits: Limits,
    run: Arc<Run<Q, A>>,
    queue: Arc<OnceLock<mpsc::Sender<Waiting<Q, A>>>>,
}

impl<Q, A> Clone for Collector<Q, A> {
    fn clone(&self) -> Self {
        Collector {
            limits: self.limits,
            run: self.run.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<Q, A> std::fmt::Debug for Collector<Q, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, A: Send + 'static> Collector<Q, A> {
    pub fn new<F, Fut>(limits: Limits, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, sqlx::Error>> + Send + 'static,
    {
        Collector {
            limits,
            run: Arc::new(move |batch| Box::pin(run(batch))),
            queue: Arc::default(),
        }
    }

    /// Waits for this request's share of a run. A collector whose task is
    /// gone (the runtime shutting down) answers as a closed pool.
    pub async fn ask(&self, request: Q) -> Result<A, sqlx::Error> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(self.limits.queue);
            tokio::spawn(collect(receiver, self.limits, self.run.clone()));
            sender
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(Waiting { request, answer })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Takes what is waiting whenever a slot is free and runs it in a task of
/// its own, holding its slot. Ends when every sender is gone.
async fn collect<Q: Send + 'static, A: Send + 'static>(
    mut queue: mpsc::Receiver<Waiting<Q, A>>,
    limits: Limits,
    run: Arc<Run<Q, A>>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < limits.max_batch {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A caller that is gone (cut off by its deadline and answered
        // already) is not served: nothing of its request is sent.
        batch.retain(|w| !w.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("batch_size", "batch" => limits.name).record(batch.len() as f64);
        let (requests, answers): (Vec<Q>, Vec<_>) =
            batch.into_iter().map(|w| (w.request, w.answer)).unzip();
        let running = run(requests);
        tokio::spawn(async move {
            match running.await {
                Ok(results) if results.len() == answers.len() => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(Ok(result));
                    }
                }
                Ok(results) => {
                    let error = sqlx::Error::Protocol(format!(
                        "{}: {} answers for {} requests",
                        limits.name,
                        results.len(),
                        answers.len()
                    ));
                    let n = answers.len();
                    for (answer, error) in answers.into_iter().zip(shared(error, n)) {
                        let _ = answer.send(Err(error));
                    }
                }
                Err(error) => {
                    let n = answers.len();
                    for (answer, error) in answers.into_iter().zip(shared(error, n)) {
                        let _ = answer.send(Err(error));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// `error` for each of `n` waiters: the first gets it, the others an error
/// of the same kind (unavailable or not) that says what happened.
pub(crate) fn shared(error: sqlx::Error, n: usize) -> impl Iterator<Item = sqlx::Error> {
    let message = format!("batch: {error}");
    let unavailable = infra::pg::is_unavailable(&error);
    std::iter::once(error).chain((1..n).map(move |_| {
        if unavailable {
            sqlx::Error::Io(std::io::Error::other(message.clone()))
        } else {
            sqlx::Error::Protocol(message.clone())
        }
    }))
}
