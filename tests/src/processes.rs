//! Real processes for fault tests and `just chaos`: a Tansu broker of one's
//! own that keeps its topics across a stop, and stopping a child as a
//! service manager does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// The Tansu binary: `TANSU_BIN` (which `scripts/kafka.sh` exports), else the
/// one `cargo install` put in `~/.cargo/bin`.
pub fn tansu_bin() -> Result<PathBuf> {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu")))
        .filter(|p| p.exists())
        .context("Tansu not found: `eval \"$(scripts/kafka.sh install)\"` installs it")
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A Tansu broker with SQLite storage in a folder of its own, always on the
/// same port: stopped and started again, it keeps its topics and records.
pub struct DurableBroker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Where the broker's output goes (`None`: discarded).
    log: Option<PathBuf>,
    /// The storage URL (SQLite in `dir`, or PostgreSQL).
    storage: String,
    /// Start with `--authentication` (clients must sign in with SASL).
    authentication: bool,
    /// The address the broker tells clients to connect to (`None`: its own).
    advertised: Option<String>,
}

impl DurableBroker {
    /// A broker whose storage is `dir` (emptied first); not started yet.
    pub fn new(dir: &Path, log: Option<PathBuf>) -> Result<DurableBroker> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(DurableBroker {
            bin: tansu_bin()?,
            dir: dir.to_owned(),
            port: free_port()?,
            child: None,
            log,
            storage: "sqlite://tansu.db".to_owned(),
            authentication: false,
            advertised: None,
        })
    }

    /// A broker whose storage is the PostgreSQL database at `url`, which
    /// already holds Tansu's tables ([`tansu_storage_sql`]). Brokers on the
    /// same database are one cluster: each leads every partition.
    pub fn on_postgres(url: &str, log: Option<PathBuf>) -> Result<DurableBroker> {
        let dir = std::env::temp_dir();
        Ok(DurableBroker {
            bin: tansu_bin()?,
            dir,
            port: free_port()?,
            child: None,
            log,
            storage: url.to_owned(),
            authentication: false,
            advertised: None,
        })
    }

    /// From the next start on, the broker's metadata sends clients to
    /// `address` (a proxy in front of it) instead of to itself.
    pub fn advertise(&mut self, address: &str) {
        self.advertised = Some(address.to_owned());
    }

    /// Runs the storage's maintenance (deletion by retention) every `every`
    /// (humantime: `1s`) instead of every ten minutes.
    pub fn with_maintenance_every(mut self, every: &str) -> DurableBroker {
        self.storage = format!("sqlite://tansu.db?maintenance_interval={every}");
        self
    }

    /// From the next start on, clients must authenticate (SASL SCRAM) as a
    /// user created with [`DurableBroker::create_user`] beforehand.
    pub fn require_authentication(&mut self) {
        self.authentication = true;
    }

    /// Creates a SCRAM-SHA-256 user through the running broker (which must
    /// not require authentication yet; the SQLite storage keeps it).
    pub async fn create_user(&self, name: &str, password: &str) -> Result<()> {
        let out = Command::new(&self.bin)
            .args(["user", "create", "--mechanism", "scram256", "--broker"])
            .arg(format!("tcp://{}", self.address()))
            .args([name, password])
            .current_dir(&self.dir)
            .output()
            .await
            .context("run tansu user create")?;
        if !out.status.success() {
            bail!(
                "tansu user create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`, for `KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker and waits until it listens.
    pub async fn start(&mut self) -> Result<()> {
        let listener = format!("tcp://{}", self.address());
        let advertised = self
            .advertised
            .as_ref()
            .map_or_else(|| listener.clone(), |a| format!("tcp://{a}"));
        let (out, err) = match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        // Tansu reads some settings from the environment: pass only ours.
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", &self.storage])
            .args(self.authentication.then_some("--authentication"))
            .current_dir(&self.dir)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("start Tansu")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.address())
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("Tansu did not listen on {} within 30 s", self.address());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !self.storage.starts_with("sqlite:") {
            return Ok(());
        }
        // The index Tansu's SQLite storage lacks (scripts/kafka.sh says why),
        // before anyone is told where the broker is.
        let indexed = Command::new(kafka_script())
            .arg("index")
            .arg(self.dir.join("tansu.db"))
            .status()
            .await
            .context("run kafka.sh index")?;
        anyhow::ensure!(indexed.success(), "kafka.sh index failed: {indexed}");
        Ok(())
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child).await;
        }
    }
}

/// Sends `signal` (`"TERM"`, `"INT"`, …) to a running child; false if it
/// had exited or `kill` failed.
pub async fn send_signal(child: &Child, signal: &str) -> bool {
    let Some(pid) = child.id() else { return false };
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// SIGTERM, then SIGKILL if the child has not exited within 10 s.
pub async fn terminate(child: &mut Child) {
    if send_signal(child, "TERM").await
        && tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
    {
        return;
    }
    child.start_kill().ok();
    child.wait().await.ok();
}

/// A test's own PostgreSQL cluster directory (under the temp folder). When
/// the value is dropped, whether the test passed or panicked half-way, its
/// server is stopped and the directory removed: a failed test left its
/// cluster running (found after one, still up an hour later).
pub struct OwnCluster {
    pub base: PathBuf,
}

impl OwnCluster {
    /// A fresh directory named `prefix-…`; nothing started yet.
    pub fn new(prefix: &str) -> OwnCluster {
        OwnCluster {
            base: std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())),
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(postgres_script())
            .arg("stop")
            .env("PG_BASE", &self.base)
            .output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The port of a test's stopped cluster, kept by the test until it starts
/// the cluster again: bound here, each connection accepted and closed at
/// once, as a stopped server's port refuses. Without it, scripts/postgres.sh
/// started another test's cluster on the freed port (it takes the lowest
/// free one), and this test's service reached a stranger's database: a
/// ready answer while "its" database was down, or a refused password.
pub struct HeldPort {
    task: tokio::task::JoinHandle<()>,
}

impl HeldPort {
    /// Holds the port of `url` (a `postgres://…@127.0.0.1:PORT/…` URL).
    pub async fn hold(url: &str) -> HeldPort {
        let port = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.port())
            .expect("a URL with a port");
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(bound) => {
                    listener = Some(bound);
                    break;
                }
                // The stopped server's socket may linger a moment.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("port {port} could not be held"));
        let task = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                drop(connection);
            }
        });
        HeldPort { task }
    }

    /// Lets the port go, for the cluster to start on it again.
    pub async fn release(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

fn postgres_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
}

/// Starts (creating on first use) a throwaway PostgreSQL cluster in `base`
/// with the project's own script; returns the URL of its `orders` database.
pub async fn start_cluster(base: &Path) -> String {
    let out = tokio::process::Command::new(postgres_script())
        .env("PG_BASE", base)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("run postgres.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .trim()
        .strip_prefix("export DATABASE_URL=")
        .expect("an export line")
        .replace('\\', "")
}

/// Stops the throwaway cluster in `base`.
pub async fn stop_cluster(base: &Path) {
    let out = tokio::process::Command::new(postgres_script())
        .arg("stop")
        .env("PG_BASE", base)
        .output()
        .await
        .expect("stop postgres");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one of PostgreSQL's own programs (`pg_resetwal`, `pg_dump`, …) from
/// the installed server binaries, as the clusters' owner when run as root.
pub async fn pg_program(program: &str, args: &[&str]) -> std::process::Output {
    let script = r#"
        bindir=$(pg_config --bindir 2>/dev/null || true)
        [ -x "$bindir/$0" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
        if [ "$(id -u)" -eq 0 ]; then exec runuser -u postgres -- "$bindir/$0" "$@"; fi
        exec "$bindir/$0" "$@"
    "#;
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .output()
        .await
        .expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The tables Tansu's PostgreSQL storage needs, as the lab and an operator
/// create them (`deploy/tansu/storage.sql`).
pub fn tansu_storage_sql() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tansu/storage.sql");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// psql: on PATH, or beside the server binaries scripts/postgres.sh runs.
pub fn psql() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("psql"));
    let beside_server = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/psql"));
    on_path
        .chain(beside_server)
        .find(|candidate| candidate.is_file())
        .expect("psql: on PATH or under /usr/lib/postgresql/*/bin")
}
