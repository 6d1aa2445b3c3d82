//! `orders projections status`: every projection's position and lag, held
//! orders, stopped partitions.

use projections::{delivery, held, operate};
use sqlx::PgPool;

use super::holds::held_json;
use crate::config::KafkaArgs;

pub(super) async fn print(pool: &PgPool, kafka: &KafkaArgs, json: bool) -> anyhow::Result<()> {
    let clock = {
        let mut conn = pool.acquire().await?;
        projections::clock::status(&mut conn).await?
    };
    if let Some(ahead) = clock.ahead_by() {
        eprintln!(
            "WARNING: the log's stored transaction ids are {ahead} ahead of this cluster's clock (a restore into another cluster?): new events would never reach the projections, whatever the lag below says. Stop every `orders` process and run `orders log-clock advance --reason \"…\"`."
        );
    }
    let statuses = projections::registry::status(pool, kafka.source()?.as_ref()).await?;
    let stopped = delivery::stopped_partitions(pool, &kafka.kafka_topic).await?;
    let held = {
        let mut conn = pool.acquire().await?;
        held::summary(&mut conn).await?
    };
    if json {
        let rows = json_rows(&statuses, &stopped, &held);
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&statuses, &stopped, &held);
    }
    Ok(())
}

/// `--json`: a row per projection, with what it holds back and, for the
/// delivery projection, its topic.
fn json_rows(
    statuses: &[operate::ProjectionStatus],
    stopped: &[(i32, String)],
    held: &[held::HeldSummary],
) -> Vec<serde_json::Value> {
    let held_of = |name: &str| held.iter().find(|h| h.projection == name);
    statuses
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
                    .collect()
            }
            row
        })
        .collect()
}

/// The table, then the lines that need an operator's eye.
fn print_table(
    statuses: &[operate::ProjectionStatus],
    stopped: &[(i32, String)],
    held: &[held::HeldSummary],
) {
    println!(
        "{:<10} {:>4} {:>12} {:>12} {:>12} {:>10} {:>14}  UPDATED",
        "NAME", "GEN", "POSITION", "HEAD", "LAG EVENTS", "LAG", "APPLIED"
    );
    for s in statuses {
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
    for s in statuses {
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
    for (partition, reason) in stopped {
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
}

fn summary_json(h: &held::HeldSummary) -> serde_json::Value {
    serde_json::json!({
        "orders": h.orders,
        "events": h.events,
        "first": h.first.as_ref().map(held_json),
    })
}
