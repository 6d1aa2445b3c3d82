//! Processes kept running as a service manager would: restarted whenever
//! they exit, killed on request, and sent signals only while the pid is
//! still theirs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use e2e::processes::terminate;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::say;

/// A process kept running as a service manager would: restarted when it
/// exits; `kill` sends it SIGKILL (then it is restarted too).
pub(crate) struct Supervised {
    pub(crate) kill: mpsc::Sender<()>,
    /// Signals for the running process (and its id: 0 while none runs),
    /// sent by the supervisor itself.
    pub(crate) signals: Signals,
    pub(crate) restarts: Arc<AtomicU32>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// A signal for a supervised process, and where to say whether it was sent.
type SignalRequest = (u32, &'static str, oneshot::Sender<bool>);

/// Sends signals to one supervised process through its supervisor. A pid
/// read elsewhere (a lease holder's), or held since, may be a dead
/// process's, reused by the kernel for anything: another test's identity
/// provider, frozen in the middle of its start, was one such victim. Only
/// the supervisor reaps its child, so while it has not, the child's pid is
/// the child's: the supervisor checks that, and sends.
#[derive(Clone)]
pub(crate) struct Signals {
    pub(crate) pid: Arc<AtomicU32>,
    requests: mpsc::Sender<SignalRequest>,
}

impl Signals {
    /// Sends `name` to the supervised process if it is `pid` and still runs.
    pub(crate) async fn send_if(&self, pid: u32, name: &'static str) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((pid, name, reply)).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
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
        let (requests, mut signal_requests) = mpsc::channel::<SignalRequest>(4);
        let restarts = Arc::new(AtomicU32::new(0));
        let spawn = spawner(bin.to_owned(), args, env, log);
        let mut child = spawn()?;
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or_default()));
        let counter = restarts.clone();
        let running = pid.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some((wanted, signal_name, reply)) = signal_requests.recv() => {
                        // Not reaped (only this task reaps it): the pid is
                        // still this child's.
                        let alive = matches!(child.try_wait(), Ok(None));
                        let sent = alive
                            && child.id() == Some(wanted)
                            && signal(wanted, signal_name).await;
                        let _ = reply.send(sent);
                        if alive {
                            continue;
                        }
                        // It had exited (and is reaped now): as below.
                        running.store(0, Ordering::SeqCst);
                        say(format!("{name} exited by itself; restarting"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    () = stop.cancelled() => {
                        running.store(0, Ordering::SeqCst);
                        terminate(&mut child).await;
                        return;
                    }
                    _ = kills.recv() => {
                        running.store(0, Ordering::SeqCst);
                        child.start_kill().ok();
                        child.wait().await.ok();
                        // Back after a moment, as a service manager would.
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
                    }
                    status = child.wait() => {
                        running.store(0, Ordering::SeqCst);
                        say(format!("{name} exited by itself ({status:?}); restarting"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
                match spawn() {
                    Ok(c) => {
                        running.store(c.id().unwrap_or_default(), Ordering::SeqCst);
                        child = c;
                    }
                    Err(e) => {
                        say(format!("cannot restart {name}: {e:#}"));
                        return;
                    }
                }
            }
        });
        Ok(Supervised {
            kill,
            signals: Signals { pid, requests },
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

async fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Starts the process (again), its output appended to `log`.
fn spawner(
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
) -> impl Fn() -> Result<Child> {
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
}
