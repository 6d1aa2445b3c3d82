//! The one table of every error's HTTP status, problem `type` and `title`.

use axum::http::StatusCode;

use super::ApiError;

/// What kind of problem an error is: its HTTP status and its problem `type`
/// (a URI reference) and `title`, stable per kind.
pub(super) struct Class {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) title: &'static str,
}

const fn class(status: StatusCode, kind: &'static str, title: &'static str) -> Class {
    Class {
        status,
        kind,
        title,
    }
}

impl ApiError {
    /// The one table of every error's status, problem type and title.
    pub(super) fn class(&self) -> Class {
        use StatusCode as S;
        match self {
            ApiError::InvalidPath { .. } => class(
                S::BAD_REQUEST,
                "/problems/invalid-path",
                "The path names nothing that can exist",
            ),
            ApiError::InvalidHeader { .. } => class(
                S::BAD_REQUEST,
                "/problems/invalid-header",
                "A request header is not valid",
            ),
            ApiError::InvalidQuery { .. } => class(
                S::BAD_REQUEST,
                "/problems/invalid-query",
                "A query parameter is not valid",
            ),
            ApiError::MalformedBody(_) => class(
                S::BAD_REQUEST,
                "/problems/malformed-body",
                "The request body cannot be read",
            ),
            ApiError::UnknownStatus { .. } => class(
                S::BAD_REQUEST,
                "/problems/unknown-status",
                "Unknown order status",
            ),
            ApiError::Validation(_) => class(
                S::UNPROCESSABLE_ENTITY,
                "/problems/validation",
                "The request has invalid fields",
            ),
            ApiError::IdempotencyKeyReused => class(
                S::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency key reused",
            ),
            ApiError::UnsupportedMediaType => class(
                S::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::PayloadTooLarge => class(
                S::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Request body too large",
            ),
            ApiError::OrderNotFound => {
                class(S::NOT_FOUND, "/problems/order-not-found", "Order not found")
            }
            ApiError::StoreNotFound => {
                class(S::NOT_FOUND, "/problems/store-not-found", "Store not found")
            }
            ApiError::RouteNotFound => class(S::NOT_FOUND, "about:blank", "Not Found"),
            ApiError::MethodNotAllowed => {
                class(S::METHOD_NOT_ALLOWED, "about:blank", "Method Not Allowed")
            }
            ApiError::Rejected(_) => class(
                S::CONFLICT,
                "/problems/transition-not-allowed",
                "The order's lifecycle does not allow this",
            ),
            ApiError::Contended => class(
                S::CONFLICT,
                "/problems/concurrent-modification",
                "The order is being changed concurrently",
            ),
            ApiError::PreconditionFailed { .. } => class(
                S::PRECONDITION_FAILED,
                "/problems/version-mismatch",
                "The order has changed",
            ),
            ApiError::Unauthenticated | ApiError::NotBearer => class(
                S::UNAUTHORIZED,
                "/problems/unauthenticated",
                "Sign-in required",
            ),
            ApiError::InvalidToken(_) => class(
                S::UNAUTHORIZED,
                "/problems/invalid-token",
                "The access token is not valid",
            ),
            ApiError::Forbidden(_) => class(
                S::FORBIDDEN,
                "/problems/forbidden",
                "Not allowed for this caller",
            ),
            ApiError::CsrfRejected => class(
                S::FORBIDDEN,
                "/problems/csrf",
                "The request did not come from this service's pages",
            ),
            ApiError::SignInFailed(_) => class(
                S::BAD_REQUEST,
                "/problems/sign-in-failed",
                "Sign-in did not complete",
            ),
            ApiError::SignInUnavailable(_) => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/sign-in-unavailable",
                "Sign-in is not available",
            ),
            ApiError::RateLimited { .. } => class(
                S::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many requests",
            ),
            ApiError::TooManyStreams => class(
                S::TOO_MANY_REQUESTS,
                "/problems/too-many-streams",
                "Too many live streams",
            ),
            ApiError::IdentityProviderUnavailable => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/identity-provider-unavailable",
                "The identity provider cannot be reached",
            ),
            ApiError::Unavailable(_) => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service temporarily unavailable",
            ),
            ApiError::OrderHeld { .. } => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/order-held",
                "The order has an event this version of the service cannot read",
            ),
            ApiError::NotCaughtUp => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/read-model-behind",
                "The read model has not caught up yet",
            ),
            ApiError::Overloaded => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/overloaded",
                "The server is at capacity",
            ),
            ApiError::Timeout => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/timeout",
                "The request took too long",
            ),
            ApiError::OutcomeUnknown => class(
                S::SERVICE_UNAVAILABLE,
                "/problems/outcome-unknown",
                "The outcome of the request is unknown",
            ),
            ApiError::Internal(_) => class(
                S::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal server error",
            ),
        }
    }
}
