//! `orders projections …`: the operators' commands, with progress on a
//! terminal (a bar: events done, events/s, ETA) and plain progress lines
//! otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use projections::delivery;
use projections::operate::{self, Phase, Progress};
use projections::order_view::OrderReadModel;
use projections::{checkpoint, held, ProjectionName};
use sqlx::PgPool;

use crate::config::{KafkaArgs, LogClockCmd, ProjectionsCmd};

pub async fn run(pool: &PgPool, kafka: &KafkaArgs, cmd: ProjectionsCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectionsCmd::List => list(pool).await,
        ProjectionsCmd::Held { name, json } => held_list(pool, &name, json).await,
        ProjectionsCmd::Park {
            name,
            event,
            record,
            reason,
        } => {
            let name: ProjectionName = name.parse()?;
            let which = match (event, record) {
                (Some(id), _) => held::HeldRef::Event(id),
                (None, Some(record)) => held::HeldRef::Source(record),
                (None, None) => anyhow::bail!(
                    "name the held event: --event ID or --record TOPIC/PARTITION/OFFSET"
                ),
            };
            let mut conn = pool.acquire().await?;
            let parked = held::park(&mut conn, name.as_str(), &which, &reason, &os_user()).await?;
            println!(
                "{name}: parked event {} of order {} ({} v{}, {}) as {} ({}): \"{}\"; the running worker passes over it and applies the order's later events within seconds",
                parked.event_id,
                parked.stream_id,
                parked.event_type,
                parked.schema_version,
                parked.source,
                parked.os_user,
                parked.database_role,
                parked.reason
            );
            Ok(())
        }
        ProjectionsCmd::Parked => parked_list(pool).await,
        ProjectionsCmd::Status { json } => status(pool, kafka, json).await,
        ProjectionsCmd::Replay {
            name,
            from,
            batch_size,
        } => {
            let mut reporter = Reporter::new("replay", &name);
            let report = match name.parse()? {
                ProjectionName::Orders => {
                    operate::replay(pool, &OrderReadModel, from, batch_size, |p| {
                        reporter.report(p)
                    })
                    .await?
                }
                ProjectionName::Delivery => anyhow::bail!(
                    "the delivery projection reads Kafka, not the log: rebuild it (`orders projections rebuild delivery`) to replay the topic"
                ),
            };
            reporter.finish();
            if report.handed_to_worker {
                println!(
                    "{name}: checkpoint rewound from position {} to {}; the running worker re-applies from there",
                    report.from_position,
                    from.map_or_else(|| "the start".to_owned(), |p| format!("just before position {p}"))
                );
            } else {
                println!(
                    "{name}: replayed {} events (checkpoint was at position {})",
                    report.events, report.from_position
                );
            }
            Ok(())
        }
        ProjectionsCmd::Rebuild {
            name,
            batch_size,
            accept_incomplete,
        } => {
            let mut reporter = Reporter::new("rebuild", &name);
            let report = match name.parse()? {
                ProjectionName::Orders if accept_incomplete => anyhow::bail!(
                    "--accept-incomplete is for the delivery projection: the order read model rebuilds from the whole log"
                ),
                ProjectionName::Orders => {
                    operate::rebuild(pool, &OrderReadModel, batch_size, |p| reporter.report(p))
                        .await?
                }
                ProjectionName::Delivery => {
                    let source = kafka.require("rebuilding the delivery projection")?;
                    let started = Instant::now();
                    let who = accept_incomplete
                        .then(|| format!("{} via {}", os_user(), projections::runner::process_label()));
                    let (old, new, records) = delivery::rebuild(pool, &source, who.as_deref(), |done| {
                        reporter.report(Progress {
                            phase: Phase::CatchingUp,
                            done,
                            total: done,
                            elapsed: started.elapsed(),
                        })
                    })
                    .await?;
                    // The order rebuild reports its own end; this one ends
                    // when the topic does.
                    reporter.report(Progress {
                        phase: Phase::Done,
                        done: records,
                        total: records,
                        elapsed: started.elapsed(),
                    });
                    operate::RebuildReport {
                        old_generation: old,
                        new_generation: new,
                        events: records,
                        elapsed: started.elapsed(),
                    }
                }
            };
            reporter.finish();
            let secs = report.elapsed.as_secs_f64();
            println!(
                "{name}: rebuilt generation {} from {} events in {:.1} s ({:.0} events/s); readers switched from generation {}",
                report.new_generation,
                report.events,
                secs,
                rate(report.events, report.elapsed),
                report.old_generation
            );
            Ok(())
        }
    }
}

/// `orders verify [NAME…]`: each read model against the fold of the log.
pub async fn verify(pool: &PgPool, names: &[String]) -> anyhow::Result<()> {
    const SHOWN: usize = 50;
    let mut total = 0;
    for projection in ProjectionName::parse_all(names)? {
        let name = projection.as_str();
        let differences = match projection {
            ProjectionName::Orders => projections::verify::orders(pool).await?,
            ProjectionName::Delivery => projections::verify::delivery(pool).await?,
        };
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
            let who = format!("{} via {}", os_user(), projections::runner::process_label());
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
fn os_user() -> String {
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

async fn held_list(pool: &PgPool, name: &str, json: bool) -> anyhow::Result<()> {
    let name: ProjectionName = name.parse()?;
    let mut conn = pool.acquire().await?;
    let events = held::list(&mut conn, name.as_str()).await?;
    if json {
        let rows: Vec<serde_json::Value> = events.iter().map(held_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if events.is_empty() {
        println!("{name}: holds nothing back");
        return Ok(());
    }
    println!(
        "{:<36} {:>4} {:<36} {:<26} {:<30}  REASON",
        "ORDER", "VER", "EVENT", "TYPE", "SOURCE"
    );
    for h in &events {
        println!(
            "{:<36} {:>4} {:<36} {:<26} {:<30}  {}",
            h.stream_id,
            h.version,
            h.event_id,
            format!("{} v{}", h.event_type, h.schema_version),
            h.source,
            h.reason
        );
    }
    Ok(())
}

fn held_json(h: &held::HeldEvent) -> serde_json::Value {
    serde_json::json!({
        "order_id": h.stream_id,
        "version": h.version,
        "event_id": h.event_id,
        "event_type": h.event_type,
        "schema_version": h.schema_version,
        "source": h.source,
        "reason": h.reason,
        "held_at": crate::view::format_api_time(h.held_at),
    })
}

async fn parked_list(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let parked = held::parked(&mut conn).await?;
    if parked.is_empty() {
        println!("no event has been parked");
        return Ok(());
    }
    for p in parked {
        println!(
            "{} {}: event {} of order {} ({} v{}, {}) parked by {} as database role {}: \"{}\" (it was held: {})",
            crate::view::format_api_time(p.parked_at),
            p.projection,
            p.event_id,
            p.stream_id,
            p.event_type,
            p.schema_version,
            p.source,
            p.os_user,
            p.database_role,
            p.reason,
            p.held_reason
        );
    }
    Ok(())
}

async fn list(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    println!("{:<10} {:>10}  DESCRIPTION", "NAME", "GENERATION");
    for name in ProjectionName::ALL {
        let generation = checkpoint::active_generation(&mut conn, name.as_str()).await?;
        println!("{name:<10} {generation:>10}  {}", name.description());
    }
    Ok(())
}

async fn status(pool: &PgPool, kafka: &KafkaArgs, json: bool) -> anyhow::Result<()> {
    let clock = {
        let mut conn = pool.acquire().await?;
        projections::clock::status(&mut conn).await?
    };
    if let Some(ahead) = clock.ahead_by() {
        eprintln!(
            "WARNING: the log's stored transaction ids are {ahead} ahead of this cluster's clock (a restore into another cluster?): new events would never reach the projections, whatever the lag below says. Stop every `orders` process and run `orders log-clock advance --reason \"…\"`."
        );
    }
    let statuses = operate::status(pool, kafka.source().as_ref()).await?;
    let stopped = delivery::stopped_partitions(pool, &kafka.kafka_topic).await?;
    let held = {
        let mut conn = pool.acquire().await?;
        held::summary(&mut conn).await?
    };
    let held_of = |name: &str| held.iter().find(|h| h.projection == name);
    if json {
        let rows: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                let mut row = serde_json::json!({
                    "name": s.name,
                    "generation": s.generation,
                    "position": s.position,
                    "head": s.head,
                    "lag_events": s.lag_events,
                    "lag_seconds": s.lag.as_secs_f64(),
                    "events_applied": s.events_applied,
                    "updated_at": crate::view::format_api_time(s.updated_at),
                    "held": held_of(&s.name).map(summary_json),
                });
                if let Some(t) = &s.topic {
                    row["topic"] = t.topic.clone().into();
                    row["offsets"] = serde_json::json!(t.offsets);
                    row["ends"] = serde_json::json!(t.ends);
                    row["lag_records"] = serde_json::json!(t.lag_records());
                    row["stopped_partitions"] = stopped
                        .iter()
                        .map(|(partition, reason)| {
                            serde_json::json!({"partition": partition, "reason": reason})
                        })
                        .collect();
                }
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<10} {:>4} {:>12} {:>12} {:>12} {:>10} {:>14}  UPDATED",
        "NAME", "GEN", "POSITION", "HEAD", "LAG EVENTS", "LAG", "APPLIED"
    );
    for s in &statuses {
        println!(
            "{:<10} {:>4} {:>12} {:>12} {:>12} {:>9.1}s {:>14}  {}",
            s.name,
            s.generation,
            s.position,
            s.head,
            s.lag_events,
            s.lag.as_secs_f64(),
            s.events_applied,
            crate::view::format_api_time(s.updated_at)
        );
    }
    for s in &statuses {
        let Some(t) = &s.topic else { continue };
        let offsets: Vec<String> = t.offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        println!(
            "{}: topic {} offsets [{}], {} records not consumed yet (counted in its lag, with the outbox)",
            s.name,
            t.topic,
            offsets.join(" "),
            t.lag_records()
                .map_or_else(|| "? (Kafka not reachable)".to_owned(), |l| l.to_string()),
        );
    }
    for (partition, reason) in &stopped {
        println!(
            "STOPPED: delivery partition {partition}: {reason} (docs/runbook.md, \"The topic lost records\")"
        );
    }
    for h in held.iter().filter(|h| h.orders > 0) {
        let first = h.first.as_ref().map_or_else(String::new, |f| {
            format!(
                ", first event {} of order {} ({} v{}, {}): {}",
                f.event_id, f.stream_id, f.event_type, f.schema_version, f.source, f.reason
            )
        });
        println!(
            "HELD: {} holds back {} order(s), {} event(s){first} (`orders projections held {}`)",
            h.projection, h.orders, h.events, h.projection
        );
    }
    Ok(())
}

fn summary_json(h: &held::HeldSummary) -> serde_json::Value {
    serde_json::json!({
        "orders": h.orders,
        "events": h.events,
        "first": h.first.as_ref().map(held_json),
    })
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}

/// Renders [`Progress`]: a bar on a terminal, a line every two seconds
/// otherwise.
struct Reporter {
    what: String,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Reporter {
    fn new(verb: &str, name: &str) -> Self {
        let what = format!("{verb} {name}");
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.clone());
            bar
        });
        Reporter {
            what,
            bar,
            last_line: None,
        }
    }

    fn report(&mut self, p: Progress) {
        if let Some(bar) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
            if p.phase == Phase::Switching {
                bar.set_message(format!("{} (switching)", self.what));
            }
            return;
        }
        let due = self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if !due && p.phase != Phase::Done {
            return;
        }
        self.last_line = Some(Instant::now());
        let per_sec = rate(p.done, p.elapsed);
        let eta = if per_sec > 0.0 {
            format!("{:.0}s", p.total.saturating_sub(p.done) as f64 / per_sec)
        } else {
            "?".into()
        };
        let phase = match p.phase {
            Phase::CatchingUp => "catching up",
            Phase::Switching => "switching",
            Phase::Replaying => "replaying",
            Phase::Done => "done",
        };
        eprintln!(
            "{}: {phase}: {}/{} events, {per_sec:.0} events/s, ETA {eta}",
            self.what, p.done, p.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
