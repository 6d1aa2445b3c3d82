//! `orders projections replay|rebuild`: re-applying the log, and rebuilding
//! a projection beside the live one, with progress.

use std::time::Instant;

use projections::delivery;
use projections::operate::{self, Phase, Progress};
use projections::orders::OrdersReadModel;
use projections::ProjectionName;
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
    let mut reporter = Reporter::new("replay", name);
    let report = match name.parse()? {
        ProjectionName::Orders => {
            operate::replay(pool, &OrdersReadModel, from, batch_size, |p| {
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

/// `orders projections rebuild NAME [--accept-incomplete]`.
pub(super) async fn rebuild(
    pool: &PgPool,
    kafka: &KafkaArgs,
    name: &str,
    batch_size: i64,
    accept_incomplete: bool,
) -> anyhow::Result<()> {
    let mut reporter = Reporter::new("rebuild", name);
    let report = match name.parse()? {
        ProjectionName::Orders if accept_incomplete => anyhow::bail!(
            "--accept-incomplete is for the delivery projection: the order read model rebuilds from the whole log"
        ),
        ProjectionName::Orders => {
            operate::rebuild(pool, &OrdersReadModel, batch_size, |p| reporter.report(p))
                .await?
        }
        ProjectionName::Delivery => {
            let source = kafka.require("rebuilding the delivery projection")?;
            let started = Instant::now();
            let who = accept_incomplete
                .then(|| format!("{} via {}", os_user(), infra::process_label()));
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
