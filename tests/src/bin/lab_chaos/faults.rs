//! The faults, each injected and mended through the lab's own script
//! ([`Lab`]) or by signals to a host's processes, in the order the issue
//! lists them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::say;

/// The hosts Patroni runs PostgreSQL on.
const DATABASES: [&str; 3] = ["db1", "db2", "db3"];

/// The lab as this run reaches it: its script, its hosts' processes.
pub(crate) struct Lab {
    script: PathBuf,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Lab {
    pub(crate) fn new(script: PathBuf) -> Lab {
        let dir = std::env::var_os("LAB_DIR")
            .map_or_else(|| PathBuf::from("/var/lib/orders-lab"), PathBuf::from);
        Lab {
            script,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The hosts' disks (the lab's CA is there).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `scripts/lab.sh ARGS…`, which must succeed.
    async fn sh(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .output()
            .await
            .context("run scripts/lab.sh")?;
        if !out.status.success() {
            bail!(
                "lab.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The processes of `host` (the name of their executable `only`, if
    /// given).
    async fn pids(&self, host: &str, only: Option<&str>) -> Result<Vec<u32>> {
        let out = Command::new("ip")
            .args(["netns", "pids", &format!("lab-{host}")])
            .output()
            .await?;
        let pids = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|pid| {
                only.is_none_or(|name| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == name)
                })
            })
            .collect();
        Ok(pids)
    }

    async fn signal(&self, pids: &[u32], signal: &str) -> Result<()> {
        if pids.is_empty() {
            return Ok(());
        }
        Command::new("kill")
            .arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string))
            .status()
            .await?;
        Ok(())
    }

    /// The database host Patroni names primary now.
    async fn primary(&self) -> Result<&'static str> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            for host in DATABASES {
                let r = self
                    .http
                    .get(format!("http://{host}:8008/primary"))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    return Ok(host);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("no PostgreSQL primary for 60 s")
    }

    /// Waits until every database host runs again (one primary, the others
    /// replicas streaming from it).
    async fn all_databases(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let mut running = 0;
            for host in DATABASES {
                let r = self
                    .http
                    .get(format!("http://{host}:8008/health"))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    running += 1;
                }
            }
            if running == DATABASES.len() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("the old primary did not come back as a replica within 180 s")
    }

    /// Waits until `host`'s own `/readyz` answers 200.
    async fn ready(&self, host: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let r = self
                .http
                .get(format!("http://{host}:8080/coffee/readyz"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("{host} was not ready within 120 s of its restart")
    }

    /// The app host whose process leads the relay (the projections' leaders
    /// are usually there too).
    async fn leaders_host(&self, pool: &sqlx::PgPool) -> Result<&'static str> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = loop {
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT holder FROM leader_leases WHERE name LIKE 'relay %' AND expires_at > clock_timestamp()",
            )
            .fetch_all(pool)
            .await?;
            let pid = holders.iter().find_map(|h| {
                h.split_whitespace()
                    .skip_while(|w| *w != "pid")
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
            });
            match pid {
                Some(pid) => break pid,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => bail!("no process has led the relay for 60 s"),
            }
        };
        for host in ["app1", "app2"] {
            if self.pids(host, None).await?.contains(&pid) {
                return Ok(host);
            }
        }
        bail!("the relay's leader (pid {pid}) is on no app host")
    }
}

/// The faults, in order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    AppKilled,
    AppCutOff,
    PrimaryStopped,
    PrimaryCutOff,
    BrokerStopped,
    BrokersStopped,
    LeadersFrozen,
    RollingRestart,
}

impl Fault {
    pub(crate) fn all() -> [Fault; 8] {
        [
            Fault::AppKilled,
            Fault::AppCutOff,
            Fault::PrimaryStopped,
            Fault::PrimaryCutOff,
            Fault::BrokerStopped,
            Fault::BrokersStopped,
            Fault::LeadersFrozen,
            Fault::RollingRestart,
        ]
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::AppKilled => "app1: every process killed (-9), restarted",
            Fault::AppCutOff => "app2: cut off the network for 30 s",
            Fault::PrimaryStopped => "db primary's host stopped, back as replica",
            Fault::PrimaryCutOff => "db primary cut off for 45 s (it runs on)",
            Fault::BrokerStopped => "kafka1 stopped 20 s, started",
            Fault::BrokersStopped => "both brokers stopped for 30 s",
            Fault::LeadersFrozen => "the leaders' host frozen (SIGSTOP) 20 s",
            Fault::RollingRestart => "rolling restart: app1, then app2 (SIGTERM)",
        }
    }

    /// Injects the fault (the moment it took effect goes to `injected`),
    /// waits it out, mends it.
    pub(crate) async fn run(
        self,
        lab: &Lab,
        pool: &sqlx::PgPool,
        injected: tokio::sync::oneshot::Sender<Instant>,
    ) -> Result<()> {
        let mut injected = Some(injected);
        let mut now = || {
            if let Some(tx) = injected.take() {
                let _ = tx.send(Instant::now());
            }
        };
        let sleep = |secs| tokio::time::sleep(Duration::from_secs(secs));
        match self {
            Fault::AppKilled => {
                lab.signal(&lab.pids("app1", None).await?, "KILL").await?;
                now();
                sleep(5).await;
                lab.sh(&["app-up"]).await?;
            }
            Fault::AppCutOff => {
                lab.sh(&["cut", "app2"]).await?;
                now();
                sleep(30).await;
                lab.sh(&["mend", "app2"]).await?;
            }
            Fault::PrimaryStopped => {
                let primary = lab.primary().await?;
                say(format!("stopping {primary}, the primary's host"));
                lab.signal(&lab.pids(primary, None).await?, "KILL").await?;
                now();
                sleep(40).await;
                lab.sh(&["db-up"]).await?;
                lab.all_databases().await?;
            }
            Fault::PrimaryCutOff => {
                let primary = lab.primary().await?;
                say(format!("cutting {primary}, the primary, off"));
                lab.sh(&["cut", primary]).await?;
                now();
                sleep(45).await;
                lab.sh(&["mend", primary]).await?;
                lab.all_databases().await?;
            }
            Fault::BrokerStopped => {
                lab.sh(&["stop", "kafka1", "tansu"]).await?;
                now();
                sleep(20).await;
                lab.sh(&["kafka-up"]).await?;
            }
            Fault::BrokersStopped => {
                lab.sh(&["stop", "kafka1", "tansu"]).await?;
                lab.sh(&["stop", "kafka2", "tansu"]).await?;
                now();
                sleep(30).await;
                lab.sh(&["kafka-up"]).await?;
            }
            Fault::LeadersFrozen => {
                let host = lab.leaders_host(pool).await?;
                let pids = lab.pids(host, Some("orders")).await?;
                say(format!("freezing {host}'s processes {pids:?}"));
                lab.signal(&pids, "STOP").await?;
                now();
                sleep(20).await;
                lab.signal(&pids, "CONT").await?;
            }
            Fault::RollingRestart => {
                // As an upgrade does, host by host: stopped (its requests in
                // flight finish), started, ready, then the next.
                for host in ["app1", "app2"] {
                    lab.sh(&["stop", host]).await?;
                    now();
                    lab.sh(&["app-up"]).await?;
                    lab.ready(host).await?;
                }
            }
        }
        now();
        Ok(())
    }
}
