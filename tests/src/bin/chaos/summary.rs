//! After a run: the invariants, checked from outside, and the summary that
//! says what was injected and what held.

use std::sync::atomic::Ordering;

use anyhow::Result;
use tokio::process::Command;

use crate::checks::{
    delivery_check, leadership_log, orders_check, topic_check, DeliveryCheck, LeadershipLog,
    OrdersCheck, TopicCheck,
};
use crate::faults::Freeze;
use crate::Run;

/// Checks every invariant, prints the summary; the failures (none: every
/// invariant holds).
pub(crate) async fn check_and_print(run: &Run<'_>) -> Result<Vec<String>> {
    let findings = check(run).await?;
    print_faults(run, &findings);
    print_outcomes(run, &findings);
    Ok(findings.failures)
}

/// What the checks found.
struct Findings {
    failures: Vec<String>,
    accepted: usize,
    orders: OrdersCheck,
    verify_out: String,
    topic: TopicCheck,
    delivery: DeliveryCheck,
    reads: u64,
    reads_missing: u64,
    rejected: u64,
    freezes: Vec<Freeze>,
    leadership: LeadershipLog,
    reached: Vec<(String, i64)>,
}

async fn check(run: &Run<'_>) -> Result<Findings> {
    let mut failures = Vec::new();
    let accepted = run.stats.accepted();
    let orders = orders_check(run.pool, &accepted).await?;
    if orders.lost > 0 || orders.ghosts > 0 || orders.duplicated > 0 {
        failures.push("orders: lost, ghost or duplicated".to_owned());
    }
    let (verify_out, verify_failed) = verify(run).await?;
    failures.extend(verify_failed);
    let topic = topic_check(run.pool, run.broker, run.topic).await?;
    failures.extend(topic.failures.iter().cloned());
    let delivery = delivery_check(run.pool, run.topic, &topic.per_partition).await?;
    failures.extend(delivery.failures.iter().cloned());
    if run.stats.server_errors.load(Ordering::Relaxed) > 0 {
        failures
            .push("5xx answers other than 503 with Retry-After (a bug, not a fault)".to_owned());
    }
    if run.stats.unresolved.load(Ordering::Relaxed) > 0 {
        failures.push("requests without a definitive answer".to_owned());
    }
    let reads = run.stats.reads.load(Ordering::Relaxed);
    let reads_missing = run.stats.reads_missing.load(Ordering::Relaxed);
    if reads_missing > 0 {
        failures.push(format!(
            "{reads_missing} strong reads did not show the order just placed"
        ));
    }
    let freezes = run
        .faults
        .freezes
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    for f in freezes.iter().filter(|f| f.takeover.is_none()) {
        failures.push(format!(
            "pid {}, frozen while leading {}, was not replaced within {} s",
            f.pid, f.lease, run.args.freeze_secs
        ));
    }
    let leadership = leadership_log(&[run.dir.join("work-1.log"), run.dir.join("work-2.log")]);
    let rejected = run.stats.rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        failures.push(format!(
            "{rejected} moves or cancels refused without an explanation"
        ));
    }
    let reached: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM order_view GROUP BY status ORDER BY min(CASE status
             WHEN 'received' THEN 1 WHEN 'preparing' THEN 2 WHEN 'delivering' THEN 3
             WHEN 'delivered' THEN 4 ELSE 5 END)",
    )
    .fetch_all(run.pool)
    .await?;
    Ok(Findings {
        failures,
        accepted: accepted.len(),
        orders,
        verify_out,
        topic,
        delivery,
        reads,
        reads_missing,
        rejected,
        freezes,
        leadership,
        reached,
    })
}

/// `orders verify`'s answer on one line, and a failure when it found the
/// read models apart from the log.
async fn verify(run: &Run<'_>) -> Result<(String, Option<String>)> {
    let verify = Command::new(run.orders_bin)
        .arg("verify")
        .envs(run.env.iter().cloned())
        .output()
        .await?;
    let out = String::from_utf8_lossy(&verify.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let failed = (!verify.status.success()).then(|| {
        format!(
            "orders verify: {out} {}",
            String::from_utf8_lossy(&verify.stderr).trim()
        )
    });
    Ok((out, failed))
}

/// The summary's first part: what was done to the system.
fn print_faults(run: &Run<'_>, found: &Findings) {
    let kills = run.faults.kills.load(Ordering::Relaxed);
    println!();
    println!("chaos summary (seed {})", run.seed);
    println!(
        "  faults injected      {kills} × kill -9 of `orders work`, broker stopped {} s × {}, PostgreSQL crash-restart × {}",
        run.args.broker_down,
        u8::from(run.args.broker_down > 0),
        u8::from(run.args.postgres_restart)
    );
    println!(
        "                       leaders frozen (SIGSTOP, {} s, then SIGCONT) × {}: {}",
        run.args.freeze_secs,
        found.freezes.len(),
        found
            .freezes
            .iter()
            .map(|f| format!(
                "{} taken over after {}",
                f.lease,
                f.takeover
                    .map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "                       pg_cancel_backend bursts on the workers × {} ({} statements cancelled); a transaction held the horizon {} s × {}",
        run.faults.cancel_bursts.load(Ordering::Relaxed),
        run.faults.statements_cancelled.load(Ordering::Relaxed),
        run.args.long_secs,
        run.faults.long_transactions.load(Ordering::Relaxed)
    );
    println!(
        "  traffic              {:.0} s, {} clients; {} orders accepted (201), {} staff moves and cancels accepted",
        run.traffic_secs,
        run.args.clients,
        found.accepted,
        run.stats.moves.load(Ordering::Relaxed)
    );
    println!(
        "  retried by clients   {} requests (503, timeouts, cut connections; same Idempotency-Key)",
        run.stats.retries.load(Ordering::Relaxed)
    );
}

/// The summary's second part: what held.
fn print_outcomes(run: &Run<'_>, found: &Findings) {
    println!(
        "  orders reached       {}",
        found
            .reached
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  unexplained refusals {} (should be 0)", found.rejected);
    println!(
        "  read own writes      {} strong reads, {} without the order just placed (should be 0)",
        found.reads, found.reads_missing
    );
    let leadership = &found.leadership;
    println!(
        "  leadership           {} takeovers after a lease expired; woken or cut-off leaders stepped down {} times; the relay re-sent {} records it had sent after losing its lease (counted; absorbed below)",
        leadership.takeovers_after_expiry, leadership.stepped_down, leadership.resent
    );
    let orders = &found.orders;
    println!(
        "  orders               lost {}   ghost {}   duplicated {}   (log holds {})",
        orders.lost, orders.ghosts, orders.duplicated, orders.in_log
    );
    let topic = &found.topic;
    println!(
        "  topic                {} records for {} events: {} redelivered, {} missing, {} out of order",
        topic.records, topic.events, topic.redelivered, topic.missing, topic.out_of_order
    );
    println!(
        "  delivery model       {} records consumed, each once ({} consumed twice); version guard absorbed the redelivered",
        found.delivery.consumed, found.delivery.consumed_twice
    );
    println!("  orders verify        {}", found.verify_out);
    println!(
        "  restarts             serve {} (should be 0), work {} (after each kill)",
        run.restarts[0], run.restarts[1]
    );
    println!(
        "  converged            {:.1} s after the last fault",
        run.converge_secs
    );
    if found.failures.is_empty() {
        println!("  result               every invariant holds");
    } else {
        for f in &found.failures {
            println!("  FAILED               {f}");
        }
    }
}
