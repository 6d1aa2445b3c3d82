//! The delivery read model in the registry: fed from the Kafka topic (so it
//! is rebuilt from the topic, never replayed from the log), verified
//! against the fold of the log.

use std::time::Instant;

use infra::kafka::KafkaSource;
use sqlx::PgPool;

use super::{DeliveryReadModel, NAME};
use crate::error::ProjectionError;
use crate::operate::{Phase, Progress, ProjectionStatus, RebuildReport, ReplayReport};
use crate::registry::{Pending, RebuildRequest, Registration, ReplayRequest, Source, Worker};
use crate::verify::{self, Difference};
use crate::Projection;

/// The registry's entry ([`crate::registry::ALL`]).
pub struct Delivery;

pub static REGISTRATION: Delivery = Delivery;

fn needs_kafka() -> ProjectionError {
    ProjectionError::Kafka("projection delivery needs KAFKA_BROKERS".to_owned())
}

impl Registration for Delivery {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        DeliveryReadModel.description()
    }

    fn source(&self) -> Source {
        Source::Topic
    }

    fn install<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, ()> {
        Box::pin(crate::checkpoint::install(pool, &DeliveryReadModel))
    }

    fn run(&self, w: Worker) -> Pending<'static, ()> {
        Box::pin(async move {
            let source = w.kafka.ok_or_else(needs_kafka)?;
            super::run_consumer(w.pool, source, w.options.lease_ttl, w.shutdown).await
        })
    }

    fn replay<'a>(&'a self, _: &'a PgPool, _: ReplayRequest<'a>) -> Pending<'a, ReplayReport> {
        Box::pin(async {
            Err(ProjectionError::NotFor {
                name: NAME,
                why: "the delivery projection reads Kafka, not the log: rebuild it (`orders projections rebuild delivery`) to replay the topic",
            })
        })
    }

    fn rebuild<'a>(
        &'a self,
        pool: &'a PgPool,
        request: RebuildRequest<'a>,
    ) -> Pending<'a, RebuildReport> {
        let progress = request.progress;
        Box::pin(async move {
            let source = request.kafka.ok_or_else(needs_kafka)?;
            let started = Instant::now();
            let (old, new, records) =
                super::rebuild(pool, source, request.accepted_incomplete_by, |done| {
                    progress(Progress {
                        phase: Phase::CatchingUp,
                        done,
                        total: done,
                        elapsed: started.elapsed(),
                    })
                })
                .await?;
            // It ends when the topic does.
            progress(Progress {
                phase: Phase::Done,
                done: records,
                total: records,
                elapsed: started.elapsed(),
            });
            Ok(RebuildReport {
                old_generation: old,
                new_generation: new,
                events: records,
                elapsed: started.elapsed(),
            })
        })
    }

    fn verify<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, Vec<Difference>> {
        Box::pin(verify::delivery(pool))
    }

    fn status<'a>(
        &'a self,
        pool: &'a PgPool,
        kafka: Option<&'a KafkaSource>,
        head: i64,
    ) -> Pending<'a, ProjectionStatus> {
        Box::pin(super::status(pool, kafka, head))
    }
}
