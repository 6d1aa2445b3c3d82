//! The `orders` binary, run as operators and deployments do.

use std::path::PathBuf;
use std::time::Duration;

use infra::kafka::KafkaSource;

use crate::TestDb;

/// The `orders` binary, for tests that need a real process (signals, crashes).
/// `just test` builds it; `ORDERS_BIN` overrides where it is looked for.
pub fn orders_bin() -> PathBuf {
    let path = std::env::var_os("ORDERS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // A test executable lives in `<target>/<profile>/deps/`; the binary
            // one level up. This holds whatever CARGO_TARGET_DIR says.
            let exe = std::env::current_exe().expect("the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("the test executable lives in <target>/<profile>/deps");
            profile_dir.join("orders")
        });
    assert!(
        path.exists(),
        "the orders binary is missing at {}: run `cargo build -p services` (or `just test`)",
        path.display()
    );
    path
}

/// `orders all` on `127.0.0.1:port` against `db` and `kafka`, quiet (warnings
/// only), stdout discarded, killed when dropped: the caller says where its
/// stderr goes and spawns it.
pub fn orders_all(db: &TestDb, kafka: &KafkaSource, port: u16) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(orders_bin());
    cmd.args(["all", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", kafka.brokers.join(","))
        .env("KAFKA_TOPIC", &kafka.topic)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `orders ARGS…` against `db` (and `kafka`, when given) to completion.
pub async fn run_orders(
    db: &TestDb,
    kafka: Option<&KafkaSource>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(orders_bin());
    cmd.args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn");
    if let Some(k) = kafka {
        cmd.env("KAFKA_BROKERS", k.brokers.join(","))
            .env("KAFKA_TOPIC", &k.topic);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("orders finishes within 60 s")
        .expect("run orders");
    output
}
