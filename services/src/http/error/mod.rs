//! The one HTTP error type. Every failure a handler can meet becomes an
//! `ApiError`; one table (`class`) gives each its HTTP status, problem type
//! and title, and `IntoResponse` writes an RFC 9457 `application/problem+json`
//! body. 5xx are logged with their cause chain and never shown to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{DomainError, Status};
use serde::Serialize;

mod class;
mod from;

use class::Class;

/// One field at fault in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        FieldError {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path segment that cannot name anything (e.g. a malformed user id).
    #[error("invalid {field} in the path: {message}")]
    InvalidPath {
        field: &'static str,
        message: String,
    },
    #[error("invalid {header} header: {message}")]
    InvalidHeader {
        header: &'static str,
        message: String,
    },
    /// The body is not JSON (or form data) at all, or not an object.
    #[error("{0}")]
    MalformedBody(String),
    /// Well-formed, but some fields are invalid; lists every one of them.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{given:?} is not a known status")]
    UnknownStatus { given: String },
    #[error("invalid query parameter {field}: {message}")]
    InvalidQuery {
        field: &'static str,
        message: String,
    },
    /// A read asked for its own writes and the read model did not catch up
    /// within the wait.
    #[error("the read model has not caught up with the requested writes yet")]
    NotCaughtUp,
    /// More requests in flight than the server takes: shed, not queued.
    #[error("the server is at capacity")]
    Overloaded,
    /// The request took longer than the server's request timeout.
    #[error("the request took too long")]
    Timeout,
    /// The request took too long after its write was sent: it may or may
    /// not have taken effect.
    #[error("the outcome of the request is unknown")]
    OutcomeUnknown,
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit")]
    PayloadTooLarge,
    #[error("no such order")]
    OrderNotFound,
    #[error("no such store")]
    StoreNotFound,
    #[error("no such resource")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Rejected(DomainError),
    #[error("the order is being changed by others; retry")]
    Contended,
    #[error("the order is at version {current}, not the one in If-Match")]
    PreconditionFailed { current: u64 },
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// The order has an event this build cannot read (a newer build wrote
    /// it), or a projection holds the order back behind one.
    #[error("order {order_id} is held back: {event}")]
    OrderHeld { order_id: uuid::Uuid, event: String },
    /// No credentials on a route that needs a caller.
    #[error("this request needs a bearer token")]
    Unauthenticated,
    /// An `Authorization` header of another scheme than `Bearer`.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("{0}")]
    InvalidToken(crate::auth::TokenError),
    /// Signed in, but not allowed this (why, in a fixed sentence).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A write authenticated by the session cookie without the session's
    /// `X-CSRF-Token` (a page on another site may make the browser send the
    /// cookie, never the token).
    #[error("a write from a signed-in page must carry the session's X-CSRF-Token header")]
    CsrfRejected,
    /// The browser sign-in could not finish (why, in a fixed sentence).
    #[error("{0}")]
    SignInFailed(&'static str),
    /// Browser sign-in is not configured (no web client), or the identity
    /// provider cannot be reached to start it.
    #[error("{0}")]
    SignInUnavailable(&'static str),
    #[error("too many requests")]
    RateLimited { retry_after: std::time::Duration },
    /// The caller has as many live streams open as one may.
    #[error("too many live streams open")]
    TooManyStreams,
    /// The identity provider's keys could not be fetched yet: a token
    /// cannot be checked either way.
    #[error("the identity provider cannot be reached")]
    IdentityProviderUnavailable,
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The problem details body (RFC 9457), with this API's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem (`/problems/validation`, …).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'static str,
    #[schema(value_type = String)]
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_statuses: Option<Vec<ValidStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidStatus {
    #[schema(value_type = String)]
    code: &'static str,
    #[schema(value_type = String)]
    label: &'static str,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        self.class().status
    }

    /// The fields at fault, for the problem's `errors` member.
    fn field_errors(self) -> Vec<FieldError> {
        match self {
            ApiError::Validation(errors) => errors,
            ApiError::InvalidPath { field, message }
            | ApiError::InvalidQuery { field, message } => {
                vec![FieldError::new(field, message)]
            }
            ApiError::InvalidHeader { header, message } => vec![FieldError::new(header, message)],
            ApiError::UnknownStatus { .. } => {
                vec![FieldError::new("status", "is not a known status")]
            }
            _ => Vec::new(),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::UnknownStatus { given } => {
                format!(
                    "{given:?} is not a known status; valid statuses are {}",
                    Status::valid_list()
                )
            }
            ApiError::PayloadTooLarge => format!(
                "the request body must be at most {} bytes",
                super::BODY_LIMIT
            ),
            ApiError::UnsupportedMediaType => {
                "send the body as application/json (or application/x-www-form-urlencoded)"
                    .to_owned()
            }
            ApiError::OrderNotFound => "no order with this id exists for this user".to_owned(),
            ApiError::StoreNotFound => "no store with this id exists (GET /stores lists them)".to_owned(),
            ApiError::Unauthenticated => {
                "send an access token from the configured issuer: Authorization: Bearer <token>"
                    .to_owned()
            }
            ApiError::InvalidToken(why) => format!("{why}; sign in again for a new token"),
            ApiError::RateLimited { retry_after } => format!(
                "this caller sent more requests than its rate limit allows; retry in {} s",
                retry_seconds(*retry_after)
            ),
            ApiError::TooManyStreams => "this caller has as many live streams open as one may; close one (another tab) or retry later".to_owned(),
            ApiError::IdentityProviderUnavailable => "the identity provider's signing keys cannot be fetched yet, so the token cannot be checked; retry shortly".to_owned(),
            ApiError::Unavailable(_) => {
                "the database cannot be reached right now; retry shortly".to_owned()
            }
            ApiError::Overloaded => "too many requests are in flight; retry shortly".to_owned(),
            ApiError::Timeout => {
                "the request did not finish within the server's timeout; nothing was written; retry shortly".to_owned()
            }
            ApiError::OutcomeUnknown => "the request timed out after its change was sent to the database: it may or may not have taken effect. Retry with the same Idempotency-Key (a retry returns the first result if it did, and makes the change if it did not); without one, read the order or your order list before retrying".to_owned(),
            ApiError::NotCaughtUp => {
                "the read model did not reach the requested log position in time; retry shortly"
                    .to_owned()
            }
            ApiError::Internal(_) => {
                "the server failed to handle the request; it has been logged".to_owned()
            }
            ApiError::OrderHeld { order_id, event } => format!(
                "order {order_id} is held back: {event}. Nothing was changed; it can be read and changed again once the service is upgraded to a version that knows the event (or an operator decides about it). Retry later."
            ),
            other => other.to_string(),
        }
    }
}

/// When a caller refused another live stream may try again.
const STREAM_RETRY_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if status.is_server_error() {
            match &self {
                ApiError::Unavailable(cause) => {
                    tracing::warn!(error = format!("{cause:#}"), "dependency unavailable")
                }
                ApiError::Internal(cause) => {
                    tracing::error!(error = format!("{cause:#}"), "request failed")
                }
                _ => {}
            }
        }
        let Class { kind, title, .. } = self.class();
        let challenge = self.challenge();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } => Some(retry_seconds(*retry_after)),
            ApiError::TooManyStreams => Some(STREAM_RETRY_SECS),
            _ => None,
        };
        let current_version = match &self {
            ApiError::PreconditionFailed { current } => Some(*current),
            _ => None,
        };
        let valid_statuses = matches!(self, ApiError::UnknownStatus { .. }).then(|| {
            Status::ALL
                .iter()
                .map(|s| ValidStatus {
                    code: s.code(),
                    label: s.label(),
                })
                .collect()
        });
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: self.detail(),
            errors: self.field_errors(),
            valid_statuses,
            current_version,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(current) = current_version {
            if let Ok(etag) = HeaderValue::from_str(&super::etag(current)) {
                headers.insert(header::ETAG, etag);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl ApiError {
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750, section 3): no
    /// error code without credentials, `invalid_request` for another scheme,
    /// `invalid_token` with a fixed description for a refused token.
    fn challenge(&self) -> Option<HeaderValue> {
        let value = match self {
            ApiError::Unauthenticated => "Bearer realm=\"orders\"".to_owned(),
            ApiError::NotBearer => "Bearer realm=\"orders\", error=\"invalid_request\"".to_owned(),
            ApiError::InvalidToken(why) => format!(
                "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"{why}\""
            ),
            _ => return None,
        };
        HeaderValue::from_str(&value).ok()
    }
}

/// Whole seconds to wait, at least one (`Retry-After` has no fractions).
fn retry_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
