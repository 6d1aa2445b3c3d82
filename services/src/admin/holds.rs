//! `orders projections held|park|parked`: what a projection holds back,
//! and operators' decisions to pass over it.

use projections::{held, registry};
use sqlx::PgPool;

use super::os_user;

/// `orders projections park NAME --event ID | --record T/P/O --reason …`.
pub(super) async fn park(
    pool: &PgPool,
    name: &str,
    event: Option<uuid::Uuid>,
    record: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let name = registry::find(name)?.name();
    let which = match (event, record) {
        (Some(id), _) => held::HeldRef::Event(id),
        (None, Some(record)) => held::HeldRef::Source(record),
        (None, None) => {
            anyhow::bail!("name the held event: --event ID or --record TOPIC/PARTITION/OFFSET")
        }
    };
    let mut conn = pool.acquire().await?;
    let parked = held::park(&mut conn, name, &which, reason, &os_user()).await?;
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

pub(super) async fn list(pool: &PgPool, name: &str, json: bool) -> anyhow::Result<()> {
    let name = registry::find(name)?.name();
    let mut conn = pool.acquire().await?;
    let events = held::list(&mut conn, name).await?;
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

pub(super) fn held_json(h: &held::HeldEvent) -> serde_json::Value {
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

pub(super) async fn parked(pool: &PgPool) -> anyhow::Result<()> {
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
