//! A short run of the chaos tool (`just chaos` runs the long one): real
//! processes (two API, two worker), `kill -9` of the workers, a leader
//! frozen and woken, `pg_cancel_backend` bursts, a transaction holding the
//! horizon while clients read their writes, the broker stopped and started,
//! PostgreSQL crashed and restarted, under steady traffic; then every
//! invariant (nothing lost, nothing duplicated, read models equal the fold,
//! every event on the topic in order, each record consumed once, every
//! strong read saw its write, the frozen leader replaced).

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
        .args([
            "--freezes",
            "1",
            "--freeze-secs",
            "8",
            "--cancel-every",
            "4",
        ])
        .args(["--long-transactions", "1", "--long-secs", "5"])
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
    assert!(
        stdout.contains("× 1: ")
            && stdout.contains("taken over after")
            && !stdout.contains("never"),
        "the frozen leader was replaced: {stdout}"
    );
    assert!(stdout.contains("strong reads, 0 without"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
