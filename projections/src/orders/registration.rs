//! The order read model in the registry: fed from the log, rebuilt and
//! replayed from it, verified against its fold.

use infra::kafka::KafkaSource;
use sqlx::PgPool;

use super::{OrdersReadModel, NAME};
use crate::error::ProjectionError;
use crate::operate::{self, ProjectionStatus, RebuildReport, ReplayReport};
use crate::registry::{Pending, RebuildRequest, Registration, ReplayRequest, Source, Worker};
use crate::runner;
use crate::verify::{self, Difference};
use crate::Projection;

/// The registry's entry ([`crate::registry::ALL`]).
pub struct Orders;

pub static REGISTRATION: Orders = Orders;

impl Registration for Orders {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        OrdersReadModel.description()
    }

    fn source(&self) -> Source {
        Source::Log
    }

    fn install<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, ()> {
        Box::pin(crate::checkpoint::install(pool, &OrdersReadModel))
    }

    fn run(&self, w: Worker) -> Pending<'static, ()> {
        Box::pin(runner::run_worker(
            w.pool,
            OrdersReadModel,
            w.options,
            w.shutdown,
        ))
    }

    fn replay<'a>(&'a self, pool: &'a PgPool, r: ReplayRequest<'a>) -> Pending<'a, ReplayReport> {
        Box::pin(operate::replay(
            pool,
            &OrdersReadModel,
            r.from,
            r.batch_size,
            r.progress,
        ))
    }

    fn rebuild<'a>(
        &'a self,
        pool: &'a PgPool,
        request: RebuildRequest<'a>,
    ) -> Pending<'a, RebuildReport> {
        Box::pin(async move {
            if request.accepted_incomplete_by.is_some() {
                return Err(ProjectionError::NotFor {
                    name: NAME,
                    why: "--accept-incomplete is for the delivery projection: the order read model rebuilds from the whole log",
                });
            }
            operate::rebuild(pool, &OrdersReadModel, request.batch_size, request.progress).await
        })
    }

    fn verify<'a>(&'a self, pool: &'a PgPool) -> Pending<'a, Vec<Difference>> {
        Box::pin(verify::orders(pool))
    }

    fn status<'a>(
        &'a self,
        pool: &'a PgPool,
        _kafka: Option<&'a KafkaSource>,
        head: i64,
    ) -> Pending<'a, ProjectionStatus> {
        Box::pin(operate::log_status(pool, NAME, head))
    }
}
