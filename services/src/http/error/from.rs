//! How the other crates' errors become answers.

use domain::DomainError;
use projections::ProjectionError;

use super::{ApiError, FieldError};
use crate::commands::Rejection;
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Unreadable(event) = &e {
            tracing::warn!(error = %event, "an order's stream has an event this build cannot read");
            return ApiError::OrderHeld {
                order_id: event.order_id,
                event: format!(
                    "event {} ({} v{}, {}) cannot be read by this version: {}",
                    event.event_id,
                    event.event_type,
                    event.schema_version,
                    event.source,
                    event.reason
                ),
            };
        }
        if let StoreError::OutcomeUnknown { cause } = &e {
            tracing::warn!(error = %cause, "a write's outcome is unknown");
            return ApiError::OutcomeUnknown;
        }
        if e.is_unavailable() {
            ApiError::Unavailable(e.into())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::NoSuchPosition(position) => ApiError::InvalidHeader {
                header: "x-log-position",
                message: format!("no committed event is at log position {position}"),
            },
            ProjectionError::Database(db) if infra::pg::is_unavailable(&db) => {
                ApiError::Unavailable(db.into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::NotFound => ApiError::OrderNotFound,
            Rejection::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
            Rejection::Domain(DomainError::NotPlaced) => ApiError::OrderNotFound,
            Rejection::Domain(e) => ApiError::Rejected(e),
            Rejection::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            Rejection::Contended => ApiError::Contended,
            Rejection::OffMenu(faults) => ApiError::Validation(
                faults
                    .into_iter()
                    .map(|(field, why)| FieldError::new(field, why))
                    .collect(),
            ),
        }
    }
}
