//! Requests that arrive together, served together: the waiting callers of a
//! query (or statement) are handed to one run of it while a slot is free,
//! each getting its own share of the answer. The event store's group
//! commit is a [`Collector`] with its [`Limits`]; it supplies only the run
//! (the pickup draws and the menu's generation check, once collectors too,
//! are now part of its statement: ADR 0024).
//!
//! There is no timer: a lone request goes at once when a slot is free (run
//! by its caller, not handed through the collecting task: 0.63 → 0.43 ms
//! per append at one connection), and the wait under load is bounded by
//! one run's time.

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
    /// One permit per run in flight, shared by the collecting task and the
    /// callers that find nobody waiting.
    slots: Arc<Semaphore>,
}

impl<Q, A> Clone for Collector<Q, A> {
    fn clone(&self) -> Self {
        Collector {
            limits: self.limits,
            run: self.run.clone(),
            queue: self.queue.clone(),
            slots: self.slots.clone(),
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
        // Each run's time (for group commit: the statement and its commit),
        // beside `batch_size`: what one run of a batch costs, and so how
        // long the requests that arrive meanwhile wait.
        let timed = move |batch| {
            let started = std::time::Instant::now();
            let running = run(batch);
            Box::pin(async move {
                let ran = running.await;
                metrics::histogram!("batch_run_seconds", "batch" => limits.name)
                    .record(started.elapsed().as_secs_f64());
                ran
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        };
        Collector {
            limits,
            run: Arc::new(timed),
            queue: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.in_flight)),
        }
    }

    /// Waits for this request's share of a run. A collector whose task is
    /// gone (the runtime shutting down) answers as a closed pool.
    pub async fn ask(&self, request: Q) -> Result<A, sqlx::Error> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(self.limits.queue);
            tokio::spawn(collect(
                receiver,
                self.limits,
                self.run.clone(),
                self.slots.clone(),
            ));
            sender
        });
        // Nobody waiting and a slot free: this request runs alone at once,
        // in its caller's task, without the hops through the collecting
        // task and a task of its own (a quiet café's every order; each
        // hop is a thread's wake-up, about 0.1 ms here). A caller that
        // stops waiting drops its run: what was sent may still commit (the
        // caller was told its outcome is unknown), and the pool drains the
        // connection before handing it out again.
        if queue.capacity() == queue.max_capacity() {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                metrics::histogram!("batch_size", "batch" => self.limits.name).record(1.0);
                let ran = (self.run)(vec![request]).await;
                drop(slot);
                return one_each(self.limits.name, ran, 1)?.pop().ok_or_else(|| {
                    sqlx::Error::Protocol(format!("{}: no answer", self.limits.name))
                });
            }
        }
        let (answer, answered) = oneshot::channel();
        queue
            .send(Waiting { request, answer })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Takes what is waiting whenever a slot is free and runs it, holding its
/// slot: here when there is one slot, in a task of its own when there are
/// several. Ends when every sender is gone.
async fn collect<Q: Send + 'static, A: Send + 'static>(
    mut queue: mpsc::Receiver<Waiting<Q, A>>,
    limits: Limits,
    run: Arc<Run<Q, A>>,
    slots: Arc<Semaphore>,
) {
    loop {
        // A request first, then a slot: an idle collector holds no slot, so
        // a lone caller finds one free and runs at once.
        let Some(first) = queue.recv().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
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
        let answering = async move {
            let n = answers.len();
            match one_each(limits.name, running.await, n) {
                Ok(results) => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(Ok(result));
                    }
                }
                Err(error) => {
                    for (answer, error) in answers.into_iter().zip(shared(error, n)) {
                        let _ = answer.send(Err(error));
                    }
                }
            }
            drop(slot);
        };
        // One run at a time: it runs here, and what arrives meanwhile waits
        // in the queue for the next (a task of its own would cost a
        // thread's wake-up per batch). Several: each runs as its own task.
        if limits.in_flight == 1 {
            answering.await;
        } else {
            tokio::spawn(answering);
        }
    }
}

/// A run's answers, if it gave one for each of its `n` requests; a run
/// that gave more or fewer is an error for them all.
fn one_each<A>(
    name: &str,
    ran: Result<Vec<A>, sqlx::Error>,
    n: usize,
) -> Result<Vec<A>, sqlx::Error> {
    match ran {
        Ok(results) if results.len() != n => Err(sqlx::Error::Protocol(format!(
            "{name}: {} answers for {n} requests",
            results.len()
        ))),
        ran => ran,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A collector whose runs answer each request with itself doubled,
    /// record their batches' sizes and how many ran at once, and wait for
    /// `gate` before answering.
    struct Probe {
        collector: Collector<u32, u32>,
        sizes: Arc<Mutex<Vec<usize>>>,
        most_at_once: Arc<AtomicUsize>,
        gate: Arc<Notify>,
    }

    fn probe(in_flight: usize) -> Probe {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (running, most_at_once) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(Notify::new());
        let limits = Limits {
            name: "probe",
            in_flight,
            max_batch: 64,
            queue: 128,
        };
        let collector = {
            let (sizes, most, gate) = (sizes.clone(), most_at_once.clone(), gate.clone());
            Collector::new(limits, move |batch: Vec<u32>| {
                let (sizes, running, most, gate) =
                    (sizes.clone(), running.clone(), most.clone(), gate.clone());
                async move {
                    sizes.lock().map(|mut s| s.push(batch.len())).ok();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    gate.notified().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(batch.into_iter().map(|n| n * 2).collect())
                }
            })
        };
        Probe {
            collector,
            sizes,
            most_at_once,
            gate,
        }
    }

    impl Probe {
        /// Asks for `n`'s share from a task of its own.
        fn ask(&self, n: u32) -> tokio::task::JoinHandle<Result<u32, sqlx::Error>> {
            let c = self.collector.clone();
            tokio::spawn(async move { c.ask(n).await })
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().map(|s| s.clone()).unwrap_or_default()
        }

        /// Waits until `n` runs have started.
        async fn started(&self, n: usize) {
            tokio::time::timeout(Duration::from_secs(10), async {
                while self.sizes().len() < n {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the runs started");
        }

        /// Waits until `n` requests wait in the queue (beyond the one the
        /// collecting task holds while it waits for a slot).
        async fn queued(&self, n: usize) {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Some(queue) = self.collector.queue.get() {
                        if queue.max_capacity() - queue.capacity() >= n {
                            return;
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the requests queued");
        }
    }

    #[tokio::test]
    async fn a_lone_request_runs_at_once_and_those_arriving_meanwhile_go_together() {
        let p = probe(1);
        let first = p.ask(1);
        p.started(1).await;
        // Five more while the first runs: they wait, and go as one batch.
        let rest: Vec<_> = (2..=6).map(|n| p.ask(n)).collect();
        p.queued(4).await;
        p.gate.notify_one();
        assert_eq!(first.await.ok().and_then(Result::ok), Some(2));
        p.started(2).await;
        p.gate.notify_one();
        for (n, asked) in (2..=6).zip(rest) {
            assert_eq!(
                asked.await.ok().and_then(Result::ok),
                Some(n * 2),
                "its own answer"
            );
        }
        assert_eq!(p.sizes(), [1, 5]);
        assert_eq!(
            p.most_at_once.load(Ordering::SeqCst),
            1,
            "one run at a time"
        );
        // Quiet again: the next request runs alone at once.
        let again = p.ask(7);
        p.started(3).await;
        p.gate.notify_one();
        assert_eq!(again.await.ok().and_then(Result::ok), Some(14));
        assert_eq!(p.sizes(), [1, 5, 1]);
    }

    #[tokio::test]
    async fn no_more_runs_at_once_than_its_slots() {
        let p = probe(2);
        let asked: Vec<_> = (1..=20).map(|n| p.ask(n)).collect();
        p.started(2).await;
        let mut answered = 0;
        for asked in asked {
            while !asked.is_finished() {
                p.gate.notify_waiters();
                tokio::task::yield_now().await;
            }
            assert!(asked.await.ok().and_then(Result::ok).is_some());
            answered += 1;
        }
        assert_eq!(answered, 20);
        assert_eq!(
            p.sizes().iter().sum::<usize>(),
            20,
            "each request in one run"
        );
        assert!(
            p.most_at_once.load(Ordering::SeqCst) <= 2,
            "at most two runs at once"
        );
    }
}
