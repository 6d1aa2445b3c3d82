//! `orders projections replay|rebuild`: re-applying the log, and rebuilding
//! a projection beside the live one, with progress.

use projections::registry::{self, RebuildRequest, ReplayRequest};
use sqlx::PgPool;

use super::os_user;
use super::report::{rate, Reporter};
use crate::config::KafkaArgs;

/// `orders projections replay NAME [--from POS]`.
pub(super) async fn replay(
    pool: &PgPool,
    name: &str,
    from: Option<i64>,
    batch_size: i64,
) -> anyhow::Result<()> {
    let projection = registry::find(name)?;
    let mut reporter = Reporter::new("replay", name);
    let request = ReplayRequest {
        from,
        batch_size,
        progress: &mut |p| reporter.report(p),
    };
    let report = projection.replay(pool, request).await?;
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

/// `orders projections rebuild NAME [--accept-incomplete]`.
pub(super) async fn rebuild(
    pool: &PgPool,
    kafka: &KafkaArgs,
    name: &str,
    batch_size: i64,
    accept_incomplete: bool,
) -> anyhow::Result<()> {
    let projection = registry::find(name)?;
    let kafka = match projection.source() {
        registry::Source::Topic => {
            Some(kafka.require(&format!("rebuilding the {name} projection"))?)
        }
        registry::Source::Log => None,
    };
    let who = accept_incomplete.then(|| format!("{} via {}", os_user(), infra::process_label()));
    let mut reporter = Reporter::new("rebuild", name);
    let request = RebuildRequest {
        batch_size,
        kafka: kafka.as_ref(),
        accepted_incomplete_by: who.as_deref(),
        progress: &mut |p| reporter.report(p),
    };
    let report = projection.rebuild(pool, request).await?;
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
