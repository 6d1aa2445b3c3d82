//! Requests that arrive together, served together: the waiting callers of a
//! query (or statement) are handed to one run of it while a slot is free,
//! each getting its own share of the answer. Used by the event store's group
//! commit, the pickup-number draws and the menu's generation check.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

/// Takes what is waiting whenever one of `in_flight` slots is free, at most
/// `max` at a time, and hands each batch to `run` (in a task of its own,
/// holding its slot). Ends when every sender is gone.
pub(crate) async fn collect<T, F, Fut>(
    mut queue: mpsc::Receiver<T>,
    in_flight: usize,
    max: usize,
    run: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let running = run(batch);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}

/// `error` for each of `n` waiters: the first gets it, the others an error
/// of the same kind (unavailable or not) that says what happened.
pub(crate) fn shared(error: sqlx::Error, n: usize) -> impl Iterator<Item = sqlx::Error> {
    let message = format!("batch: {error}");
    let unavailable = crate::store::is_unavailable(&error);
    std::iter::once(error).chain((1..n).map(move |_| {
        if unavailable {
            sqlx::Error::Io(std::io::Error::other(message.clone()))
        } else {
            sqlx::Error::Protocol(message.clone())
        }
    }))
}
