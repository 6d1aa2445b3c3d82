//! A TCP proxy between the service and PostgreSQL that cuts the one
//! connection carrying a marked write, right around its statement: before
//! the statement reaches the server (it never ran), or right after the
//! server's answer to it (it committed; the answer is lost on the way).
//! Every other connection, and every other statement, passes as it is.
//!
//! The mark is any bytes the statement carries: a test writes an order whose
//! drink's name is unique, and the name travels in the statement's
//! parameters. Unarmed, it is a plain proxy that counts connections.
//!
//! It can also turn everyone away, as a load balancer with no database
//! behind it does (HAProxy when no node passes its check): the connections
//! open are cut, and new ones are accepted and closed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where a marked statement's connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The statement is never forwarded: the server never runs it.
    BeforeTheServer,
    /// The statement runs; the server's answer is dropped.
    AfterTheAnswer,
}

/// The next cut: its mark and where.
type Armed = Arc<Mutex<Option<(Vec<u8>, Cut)>>>;

pub struct CuttingProxy {
    address: String,
    armed: Armed,
    /// While set, connections are accepted and closed at once.
    turned_away: Arc<std::sync::atomic::AtomicBool>,
    /// The open connections' parent: cancelling it cuts them all.
    sessions: Arc<Mutex<CancellationToken>>,
    cuts: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy")?;
        let address = listener.local_addr()?.to_string();
        let armed: Armed = Arc::default();
        let cuts = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let turned_away = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions = Arc::new(Mutex::new(CancellationToken::new()));
        let accept = {
            let (armed, cuts, connections) = (armed.clone(), cuts.clone(), connections.clone());
            let (turned_away, sessions) = (turned_away.clone(), sessions.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if turned_away.load(Ordering::SeqCst) {
                        // As HAProxy with no server does: read what the
                        // client sent first, then close (a FIN, not a reset).
                        tokio::spawn(async move {
                            let mut client = client;
                            let mut first = [0u8; 64];
                            let _ = tokio::time::timeout(
                                std::time::Duration::from_secs(1),
                                client.read(&mut first),
                            )
                            .await;
                            let _ = client.shutdown().await;
                        });
                        continue;
                    }
                    connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let closed = match sessions.lock() {
                        Ok(parent) => parent.child_token(),
                        Err(_) => CancellationToken::new(),
                    };
                    let connection = Connection {
                        armed: armed.clone(),
                        cuts: cuts.clone(),
                        closed,
                        drop_answer: Arc::default(),
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(connection.clone().requests(client_read, server_write));
                    tokio::spawn(connection.answers(server_read, client_write));
                }
            })
        };
        Ok(CuttingProxy {
            address,
            armed,
            turned_away,
            sessions,
            cuts,
            connections,
            accept,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Cuts every open connection and closes each new one at once, until
    /// [`CuttingProxy::let_in`].
    pub fn turn_away(&self) {
        self.turned_away.store(true, Ordering::SeqCst);
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.cancel();
            *sessions = CancellationToken::new();
        }
    }

    /// Forwards new connections again.
    pub fn let_in(&self) {
        self.turned_away.store(false, Ordering::SeqCst);
    }

    /// Cuts, once, the next statement that carries `mark`.
    pub fn arm(&self, mark: &str, cut: Cut) {
        if let Ok(mut armed) = self.armed.lock() {
            *armed = Some((mark.as_bytes().to_vec(), cut));
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Connections made through the proxy so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One proxied connection's shared state.
#[derive(Clone)]
struct Connection {
    armed: Armed,
    cuts: Arc<AtomicUsize>,
    /// Ends both directions.
    closed: CancellationToken,
    /// Set once the marked statement went through: its answer is dropped.
    drop_answer: Arc<std::sync::atomic::AtomicBool>,
}

impl Connection {
    /// The armed cut, taken, when `bytes` carry its mark.
    fn take_cut(&self, bytes: &[u8]) -> Option<Cut> {
        let mut armed = self.armed.lock().ok()?;
        let (mark, _) = armed.as_ref()?;
        if !bytes.windows(mark.len()).any(|w| w == mark.as_slice()) {
            return None;
        }
        let (_, cut) = armed.take()?;
        self.cuts.fetch_add(1, Ordering::SeqCst);
        Some(cut)
    }

    /// Client to server, watching for the mark.
    async fn requests(self, from: OwnedReadHalf, to: OwnedWriteHalf) {
        let this = self.clone();
        self.pipe(from, to, move |bytes| match this.take_cut(bytes) {
            Some(Cut::BeforeTheServer) => Pass::Close,
            Some(Cut::AfterTheAnswer) => {
                this.drop_answer.store(true, Ordering::SeqCst);
                Pass::Forward
            }
            None => Pass::Forward,
        })
        .await;
    }

    /// Server to client; once the marked statement went through, its answer
    /// closes the connection instead of reaching the client.
    async fn answers(self, from: OwnedReadHalf, to: OwnedWriteHalf) {
        let this = self.clone();
        self.pipe(from, to, move |_| {
            if this.drop_answer.load(Ordering::SeqCst) {
                Pass::Close
            } else {
                Pass::Forward
            }
        })
        .await;
    }

    /// Copies `from` to `to`, each read as `judge` says, until either side
    /// closes or `judge` closes the connection (both directions).
    async fn pipe(
        self,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        judge: impl Fn(&[u8]) -> Pass,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                () = self.closed.cancelled() => return,
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
            };
            if judge(&buf[..n]) == Pass::Close || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        self.closed.cancel();
    }
}

/// What a pipe does with what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Close,
}
