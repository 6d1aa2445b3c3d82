//! `orders projections …`: the operators' commands, with progress on a
//! terminal (a bar: events done, events/s, ETA) and plain progress lines
//! otherwise (logs, CI).

use projections::{checkpoint, held, registry};
use sqlx::PgPool;

use crate::config::{KafkaArgs, LogClockCmd, ProjectionsCmd};

mod holds;
mod menu;
mod report;
mod rework;
mod status;
mod stores;

pub use menu::run as menu;
pub use stores::run as stores;

pub async fn run(pool: &PgPool, kafka: &KafkaArgs, cmd: ProjectionsCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectionsCmd::List => list(pool).await,
        ProjectionsCmd::Held { name, json } => holds::list(pool, &name, json).await,
        ProjectionsCmd::Park {
            name,
            event,
            record,
            reason,
        } => holds::park(pool, &name, event, record, &reason).await,
        ProjectionsCmd::Parked => holds::parked(pool).await,
        ProjectionsCmd::Status { json } => status::print(pool, kafka, json).await,
        ProjectionsCmd::Replay {
            name,
            from,
            batch_size,
        } => rework::replay(pool, &name, from, batch_size).await,
        ProjectionsCmd::Rebuild {
            name,
            batch_size,
            accept_incomplete,
        } => rework::rebuild(pool, kafka, &name, batch_size, accept_incomplete).await,
    }
}

/// `orders verify [NAME…]`: each read model against the fold of the log.
pub async fn verify(pool: &PgPool, names: &[String]) -> anyhow::Result<()> {
    const SHOWN: usize = 50;
    let mut total = 0;
    for projection in registry::find_all(names)? {
        let name = projection.name();
        let differences = projection.verify(pool).await?;
        let accounted = {
            let mut conn = pool.acquire().await?;
            held::accounted(&mut conn, name).await?
        };
        let note = if accounted.held_from.is_empty() && accounted.parked.is_empty() {
            String::new()
        } else {
            format!(
                " ({} order(s) held back, compared as before their first held event; {} event(s) parked and passed over)",
                accounted.held_from.len(),
                accounted.parked.len()
            )
        };
        if differences.is_empty() {
            println!("{name}: OK, every row equals the fold of the log{note}");
            continue;
        }
        println!("{name}: {} differences", differences.len());
        for d in differences.iter().take(SHOWN) {
            println!("  {d}");
        }
        if differences.len() > SHOWN {
            println!("  … and {} more", differences.len() - SHOWN);
        }
        total += differences.len();
    }
    if total > 0 {
        anyhow::bail!("verify found {total} differences (is a projection still catching up? see `orders projections status`)");
    }
    Ok(())
}

/// `orders log-clock …`.
pub async fn log_clock(pool: &PgPool, cmd: LogClockCmd) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    match cmd {
        LogClockCmd::Status => {
            let s = projections::clock::status(&mut conn).await?;
            println!(
                "largest stored transaction id {}, next {} (shift {}, last changed {} by {}: {})",
                s.stored_max
                    .map_or_else(|| "none (empty log)".to_owned(), |m| m.to_string()),
                s.next,
                s.shift,
                crate::view::format_api_time(s.changed_at),
                s.changed_by.as_deref().unwrap_or("-"),
                s.reason.as_deref().unwrap_or("-"),
            );
            match s.ahead_by() {
                None => println!("OK: every new event sorts after every stored one"),
                Some(ahead) => anyhow::bail!(
                    "the stored ids are {ahead} ahead of the clock: new events would sort before old ones; run `orders log-clock advance --reason \"…\"` with every `orders` process stopped"
                ),
            }
        }
        LogClockCmd::Advance { reason } => {
            let who = format!("{} via {}", os_user(), infra::process_label());
            let (before, after) = projections::clock::advance(&mut conn, &who, &reason).await?;
            if before == after {
                println!("nothing to do: every new event already sorts after every stored one (shift {after})");
            } else {
                println!("log clock advanced: shift {before} -> {after}; new events now sort after every stored one");
            }
        }
    }
    Ok(())
}

/// The operating-system user running this command, for the audit trail.
pub(super) fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(user) = std::env::var(var) {
            if !user.is_empty() {
                return user.chars().take(100).collect();
            }
        }
    }
    // No login variables (a service manager, a container): the uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| format!("uid {uid}")))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

async fn list(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    println!("{:<10} {:>10}  DESCRIPTION", "NAME", "GENERATION");
    for projection in registry::ALL {
        let name = projection.name();
        let generation = checkpoint::active_generation(&mut conn, name).await?;
        println!("{name:<10} {generation:>10}  {}", projection.description());
    }
    Ok(())
}
