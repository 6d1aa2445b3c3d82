//! The OpenAPI description: the document's header and the request shapes that
//! exist only on the wire (handlers parse bodies field by field, so that every
//! invalid field is reported at once). The paths come from the handlers'
//! `#[utoipa::path]` attributes, registered together with their routes, so
//! the document lists exactly the routes that are mounted.

use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffee orders",
        description = "The event-sourced coffee-order system: order-ms (customers) and delivery-ms (staff). Errors are RFC 9457 problem+json.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    tags(
        (name = "order-ms", description = "Customers place, read and cancel orders"),
        (name = "delivery-ms", description = "Staff move orders on; the delivery view"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// A whole number, sent as a JSON number or as a string of digits (the
/// original clients send strings).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the wire form
pub enum WholeNumber {
    Number(u64),
    /// Digits, optionally surrounded by spaces.
    Text(String),
}

/// The place-order body.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct PlaceOrderBody {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100, example = "today's coffee")]
    pub coffee_name: String,
    /// Whole won, 0 to 1,000,000.
    pub coffee_price: WholeNumber,
    /// 1 to 1,000; 1 when absent.
    pub coffee_qty: Option<WholeNumber>,
    /// The drink's options; hot and regular when absent.
    pub options: Option<OptionsBody>,
}

/// A drink's options as a client sends them: codes or the Korean labels.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct OptionsBody {
    /// `hot` (`핫`) or `iced` (`아이스`); `hot` when absent.
    #[schema(example = "iced")]
    pub temperature: Option<TemperatureInput>,
    /// `regular` (`레귤러`) or `large` (`라지`); `regular` when absent.
    #[schema(example = "large")]
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

/// A staff move: the status to move to, by code or Korean label.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct MoveBody {
    #[schema(example = "preparing")]
    pub status: String,
}
