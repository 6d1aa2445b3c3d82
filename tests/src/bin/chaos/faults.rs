//! The faults: `kill -9`, processes kept running as a service manager
//! would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::processes::terminate;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::say;

#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) kills: AtomicU32,
    pub(crate) last: Mutex<Option<Instant>>,
}

impl Faults {
    /// A fault was injected now.
    pub(crate) fn mark(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }

    pub(crate) fn last(&self) -> Instant {
        self.last
            .lock()
            .ok()
            .and_then(|l| *l)
            .unwrap_or_else(Instant::now)
    }
}

/// `kill -9` of the worker process at random moments until `until`, and on
/// until at least `min` kills.
pub(crate) async fn kill_loop(
    kill: mpsc::Sender<()>,
    faults: Arc<Faults>,
    min: u32,
    until: Instant,
) {
    while Instant::now() < until || faults.kills.load(Ordering::Relaxed) < min {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..4000))).await;
        if kill.send(()).await.is_err() {
            return;
        }
        faults.kills.fetch_add(1, Ordering::Relaxed);
        faults.mark();
    }
}

/// A process kept running as a service manager would: restarted when it
/// exits; `kill` sends it SIGKILL (then it is restarted too).
pub(crate) struct Supervised {
    pub(crate) kill: mpsc::Sender<()>,
    pub(crate) restarts: Arc<AtomicU32>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    pub(crate) fn start(
        name: &'static str,
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
        stop: CancellationToken,
    ) -> Result<Supervised> {
        let (kill, mut kills) = mpsc::channel::<()>(1);
        let restarts = Arc::new(AtomicU32::new(0));
        let spawn = {
            let bin = bin.to_owned();
            move || -> Result<Child> {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?;
                Ok(Command::new(&bin)
                    .args(&args)
                    .envs(env.iter().cloned())
                    .env_remove("ORDERS_FAILPOINT")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .kill_on_drop(true)
                    .spawn()?)
            }
        };
        let mut child = spawn()?;
        let counter = restarts.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        terminate(&mut child).await;
                        return;
                    }
                    _ = kills.recv() => {
                        child.start_kill().ok();
                        child.wait().await.ok();
                        // Back after a moment, as a service manager would.
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
                    }
                    status = child.wait() => {
                        say(format!("{name} exited by itself ({status:?}); restarting"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
                match spawn() {
                    Ok(c) => child = c,
                    Err(e) => {
                        say(format!("cannot restart {name}: {e:#}"));
                        return;
                    }
                }
            }
        });
        Ok(Supervised {
            kill,
            restarts,
            task,
        })
    }

    pub(crate) async fn finished(&self) {
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
