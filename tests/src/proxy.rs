//! A TCP proxy in front of a broker that can fall silent, for the fault a
//! deadline guards against: a connection that stays open while nothing comes
//! back on it (a half-open connection after a network fault, a broker stuck
//! on its storage). It can also withhold only the large answers: a broker
//! whose cost grows with the size of a fetch (Tansu 0.6 on SQLite, ADR 0021)
//! answers small ones in time and large ones never.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Forwards every connection to `upstream`. After [`SilencingProxy::silence`],
/// the connections open at that moment stay open, and what either side sends
/// on them is read and dropped: requests arrive, answers never do.
/// Connections made afterwards pass as before. After
/// [`SilencingProxy::withhold_answers_over`], every answer (a Kafka frame)
/// longer than the limit is read and dropped, on every connection.
pub struct SilencingProxy {
    address: String,
    /// The longest answer passed on (`usize::MAX`: all).
    answer_limit: Arc<AtomicUsize>,
    /// How many times the proxy was silenced; a connection made at epoch
    /// `e` falls silent once the epoch moves past `e`.
    epoch: watch::Sender<u64>,
    tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl SilencingProxy {
    pub async fn start(upstream: String) -> Result<SilencingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy")?;
        let address = listener.local_addr()?.to_string();
        let (epoch, _) = watch::channel(0u64);
        let answer_limit = Arc::new(AtomicUsize::new(usize::MAX));
        let tasks = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let accept = {
            let epoch = epoch.clone();
            let tasks = tasks.clone();
            let answer_limit = answer_limit.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let at = *epoch.borrow();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut tasks = tasks.lock().await;
                    tasks.spawn(pipe(client_read, server_write, epoch.subscribe(), at));
                    let answers = Answers {
                        epoch: epoch.subscribe(),
                        at,
                        limit: answer_limit.clone(),
                    };
                    tasks.spawn(answers.pass(server_read, client_write));
                }
            })
        };
        Ok(SilencingProxy {
            address,
            answer_limit,
            epoch,
            tasks,
            accept,
        })
    }

    /// `127.0.0.1:PORT`, for the brokers' list and the broker's advertised
    /// address.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Silences every connection open now.
    pub fn silence(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// From now on, answers longer than `bytes` never arrive.
    pub fn withhold_answers_over(&self, bytes: usize) {
        self.answer_limit.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for SilencingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut tasks) = self.tasks.try_lock() {
            tasks.abort_all();
        }
    }
}

/// Copies `from` to `to` until either closes; once the epoch moves past
/// `at`, keeps reading `from` and drops what it reads (`to` stays open).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: watch::Receiver<u64>,
    at: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *epoch.borrow() != at {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The broker's side of a connection: Kafka answers, each a 4-byte length
/// and that many bytes, passed on whole or not at all.
struct Answers {
    epoch: watch::Receiver<u64>,
    at: u64,
    limit: Arc<AtomicUsize>,
}

impl Answers {
    async fn pass(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        loop {
            let mut size = [0u8; 4];
            if from.read_exact(&mut size).await.is_err() {
                return;
            }
            let len = usize::try_from(u32::from_be_bytes(size)).unwrap_or(usize::MAX);
            let mut frame = vec![0u8; len];
            if from.read_exact(&mut frame).await.is_err() {
                return;
            }
            if *self.epoch.borrow() != self.at || len > self.limit.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&size).await.is_err() || to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}
