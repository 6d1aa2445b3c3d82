//! A TCP proxy in front of a broker that can fall silent, for the fault a
//! deadline guards against: a connection that stays open while nothing comes
//! back on it (a half-open connection after a network fault, a broker stuck
//! on its storage).

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Forwards every connection to `upstream`. After [`SilencingProxy::silence`],
/// the connections open at that moment stay open, and what either side sends
/// on them is read and dropped: requests arrive, answers never do.
/// Connections made afterwards pass as before.
pub struct SilencingProxy {
    address: String,
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
        let tasks = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let accept = {
            let epoch = epoch.clone();
            let tasks = tasks.clone();
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
                    tasks.spawn(pipe(server_read, client_write, epoch.subscribe(), at));
                }
            })
        };
        Ok(SilencingProxy {
            address,
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
