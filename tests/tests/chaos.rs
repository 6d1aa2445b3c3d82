//! A short run of the chaos tool (`just chaos` runs the long one): real
//! processes, `kill -9` of the worker process, the broker stopped and started,
//! PostgreSQL crashed and restarted, under steady traffic; then every
//! invariant (nothing lost, nothing duplicated, read models equal the fold,
//! every event on the topic in order, each record consumed once).

use std::process::Command;

#[test]
fn a_short_chaos_run_loses_and_duplicates_nothing() {
    let dir = std::env::temp_dir().join(format!("orders-chaos-{}", uuid::Uuid::new_v4().simple()));
    let output = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .arg("--orders-bin")
        .arg(e2e::orders_bin())
        .arg("--dir")
        .arg(&dir)
        .args(["--seconds", "24", "--clients", "4", "--rate", "20"])
        .args([
            "--min-kills",
            "6",
            "--broker-down",
            "5",
            "--postgres-restart",
            "true",
        ])
        .args(["--converge-timeout", "90"])
        .output()
        .expect("run the chaos tool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chaos failed:\n{stdout}\n{stderr}");
    // The summary says what was checked; the exit status says it held.
    assert!(
        stdout.contains("lost 0   ghost 0   duplicated 0"),
        "{stdout}"
    );
    assert!(stdout.contains("every invariant holds"), "{stdout}");
    let kills: u32 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("faults injected"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts the kills");
    assert!(kills >= 6, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
