//! The OpenAPI description: the document's header and the request shapes that
//! exist only on the wire (handlers parse bodies field by field, so that every
//! invalid field is reported at once). The paths come from the handlers'
//! `#[utoipa::path]` attributes, registered together with their routes, so
//! the document lists exactly the routes that are mounted.

use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffee orders",
        description = "The event-sourced coffee-order system: order-ms (customers) and delivery-ms (staff). Errors are RFC 9457 problem+json.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    // Path and header parameters refer to these; request bodies register
    // their own schemas.
    components(schemas(UserIdParam, OrderIdParam, EtagParam, IdempotencyKeyParam, StatusInput, ListOrderParam)),
    modifiers(&BearerTokens),
    tags(
        (name = "order-ms", description = "Customers place, read and cancel orders"),
        (name = "delivery-ms", description = "Staff move orders on; the delivery view"),
        (name = "menu", description = "The drinks on sale, their prices per size and temperatures"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

// The constraints below are the ones the service enforces (domain/src/values.rs,
// http/extract.rs): generated clients and fuzzers can only send valid
// requests if the document states them.

/// A user id: 1 to 100 letters, digits, `-`, `_`, `.`.
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "sam")]
#[allow(dead_code)] // documents the wire form
pub struct UserIdParam(String);

/// An order id, a UUID v7 as the API returns it. A malformed one names no
/// order that can exist, and is answered 404 like a missing one.
#[derive(ToSchema)]
#[schema(
    format = Uuid,
    pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$",
    example = "019abc12-3456-7def-8abc-0123456789ab"
)]
#[allow(dead_code)] // documents the wire form
pub struct OrderIdParam(String);

/// An ETag this API returned (`"3"`, weak or strong), or `*`.
#[derive(ToSchema)]
#[schema(pattern = r#"^(\*|(W/)?"[0-9]{1,18}")$"#, example = "\"3\"")]
#[allow(dead_code)] // documents the wire form
pub struct EtagParam(String);

/// 1 to 255 visible ASCII characters.
#[derive(ToSchema)]
#[schema(pattern = r"^[!-~]{1,255}$", example = "a1b2c3")]
#[allow(dead_code)] // documents the wire form
pub struct IdempotencyKeyParam(String);

/// An order status by code or by its Korean label.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub enum StatusInput {
    #[serde(rename = "received")]
    Received,
    #[serde(rename = "preparing")]
    Preparing,
    #[serde(rename = "delivering")]
    Delivering,
    #[serde(rename = "delivered")]
    Delivered,
    #[serde(rename = "cancelled")]
    Cancelled,
    #[serde(rename = "접수완료")]
    ReceivedLabel,
    #[serde(rename = "제작중")]
    PreparingLabel,
    #[serde(rename = "배송중")]
    DeliveringLabel,
    #[serde(rename = "배송완료")]
    DeliveredLabel,
    #[serde(rename = "취소")]
    CancelledLabel,
}

/// Digits for 0 to 1,000,000 (leading zeros and surrounding spaces allowed;
/// attributes below repeat these: utoipa takes only literals there).
const PRICE_DIGITS: &str = r"^[ \t\r\n]*0*([0-9]{1,6}|1000000)[ \t\r\n]*$";
/// Digits for 1 to 1,000.
const QUANTITY_DIGITS: &str = r"^[ \t\r\n]*0*([1-9][0-9]{0,2}|1000)[ \t\r\n]*$";

/// A price in whole won, 0 to 1,000,000: a JSON number or a string of
/// digits (the original clients send strings).
pub struct PriceInput;

impl PartialSchema for PriceInput {
    fn schema() -> RefOr<Schema> {
        whole_number(0, 1_000_000, PRICE_DIGITS, "4500")
    }
}

impl ToSchema for PriceInput {}

/// A quantity, 1 to 1,000: a JSON number or a string of digits.
pub struct QuantityInput;

impl PartialSchema for QuantityInput {
    fn schema() -> RefOr<Schema> {
        whole_number(1, 1_000, QUANTITY_DIGITS, "2")
    }
}

impl ToSchema for QuantityInput {}

/// A whole number from `min` to `max`, as a JSON integer or a string of
/// digits (`pattern` says which strings are in range). utoipa's derive
/// cannot put bounds on an untagged enum's variants, so it is built here.
fn whole_number(min: u64, max: u64, pattern: &str, example: &str) -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as f64))
        .maximum(Some(max as f64));
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .examples([example]);
    OneOfBuilder::new().item(number).item(text).into()
}

/// A drink's options as a client sends them: codes or the Korean labels;
/// no other members.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the wire form
pub struct OptionsBody {
    /// `hot` (`핫`) or `iced` (`아이스`); `hot` when absent.
    #[schema(example = "iced", nullable = false)]
    pub temperature: Option<TemperatureInput>,
    /// `regular` (`레귤러`) or `large` (`라지`); `regular` when absent.
    #[schema(example = "large", nullable = false)]
    pub size: Option<SizeInput>,
}

/// A temperature by code or label.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub enum TemperatureInput {
    #[serde(rename = "hot")]
    Hot,
    #[serde(rename = "iced")]
    Iced,
    #[serde(rename = "핫")]
    HotLabel,
    #[serde(rename = "아이스")]
    IcedLabel,
}

/// A size by code or label.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub enum SizeInput {
    #[serde(rename = "regular")]
    Regular,
    #[serde(rename = "large")]
    Large,
    #[serde(rename = "레귤러")]
    RegularLabel,
    #[serde(rename = "라지")]
    LargeLabel,
}

/// The order of a status list.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub enum ListOrderParam {
    #[serde(rename = "oldest")]
    Oldest,
    #[serde(rename = "newest")]
    Newest,
}

/// A staff move: the status to move to, by code or Korean label.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct MoveBody {
    pub status: StatusInput,
}

// The problem answers several routes share, each stated once (a route's own
// problems are written at the route).
macro_rules! problem_response {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {$(
        $(#[$doc])*
        #[derive(utoipa::ToResponse)]
        #[response(description = $description, content_type = "application/problem+json")]
        #[allow(dead_code)] // documents the wire form
        pub struct $name(crate::http::error::Problem);
    )*};
}

problem_response! {
    /// The database cannot be reached right now.
    Unavailable => "Unavailable";
    /// A write: unavailable (nothing was written; `Retry-After`), or its
    /// outcome unknown (`/problems/outcome-unknown`: the write was sent and
    /// its answer lost, it may have taken effect; retry with the same
    /// `Idempotency-Key`).
    WriteUnavailable => "Unavailable, nothing written (`Retry-After`); or `/problems/outcome-unknown`: the write was sent and its answer lost, it may have taken effect; retry with the same `Idempotency-Key`";
    /// No order with this id for this user.
    OrderNotFound => "No such order for this user";
    /// A body that is neither JSON nor form data.
    UnsupportedBody => "Neither JSON nor form data";
    /// A body over the limit.
    BodyTooLarge => "Body over 1 MiB";
    /// `If-Match` names another version than the order's.
    VersionMismatch => "If-Match names another version";
    /// A user id that cannot exist.
    InvalidUserId => "A malformed user id";
    /// No bearer token, or one that is refused (`WWW-Authenticate` says why).
    Unauthenticated => "No valid access token";
    /// Signed in, without the role the route needs.
    Forbidden => "The caller's roles do not allow this";
    /// Over the caller's rate limit (`Retry-After` says when to retry).
    RateLimited => "Too many requests";
}

/// Declares the bearer tokens the protected routes ask for.
pub struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token (a JWT) from the configured OpenID Connect issuer, for this API's audience",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers every route that needs a caller may give (401, 403, 429),
/// stated here once and added to each operation that asks for a bearer
/// token, rather than repeated at every route. Applied once the routes'
/// paths are in the document (`http::routes_and_document`).
pub struct CallerResponses;

impl utoipa::Modify for CallerResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::ToResponse;
        let shared = [
            ("401", Unauthenticated::response().1),
            ("403", Forbidden::response().1),
            ("429", RateLimited::response().1),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    for (status, response) in &shared {
                        operation
                            .responses
                            .responses
                            .entry((*status).to_owned())
                            .or_insert_with(|| response.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_that_needs_a_caller_documents_401_403_and_429() {
        let (_, doc) = super::super::routes_and_document(super::super::Apis::All);
        let mut protected = 0;
        for (path, item) in &doc.paths.paths {
            for operation in [&item.get, &item.post, &item.put, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                let responses = &operation.responses.responses;
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    protected += 1;
                    for status in ["401", "403", "429"] {
                        assert!(responses.contains_key(status), "{path}: no {status}");
                    }
                } else {
                    assert!(!responses.contains_key("403"), "{path}: public, with 403");
                }
            }
        }
        assert!(protected >= 8, "{protected} protected operations");
    }
}
