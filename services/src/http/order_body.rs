//! The place-order body: how it is read (the original single-drink fields,
//! or `items`, and a store) and the request's normal form for idempotency.
//! Its OpenAPI description is here too ([`PlaceOrderBody`],
//! [`PlaceOrderForm`]).

use domain::{
    AskedLine, AskedOptions, CoffeeName, DrinkOptions, OrderLines, Price, Quantity, StoreId,
};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::docs::{OptionsBody, PriceInput, QuantityInput};
use super::error::FieldError;

/// What a place-order body asks for: the store (`None`: not said, the
/// default store) and the lines, their options as said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AskedOrder {
    pub store_id: Option<StoreId>,
    pub lines: Vec<AskedLine>,
    /// Sent as `items` (faults then name `items[i].…`), not as the original
    /// single-drink fields.
    pub as_items: bool,
}

/// Reads a place-order body: the original single-drink fields, or `items`
/// (1 to 20 lines, each in the same fields), and an optional `store_id`.
/// Every invalid field is reported at once.
pub(super) fn parse_order(body: &Map<String, Value>) -> Result<AskedOrder, Vec<FieldError>> {
    let mut errors = Vec::new();
    let store_id = match body.get("store_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => check(&mut errors, "store_id", StoreId::parse(s.trim())),
        Some(_) => check(&mut errors, "store_id", Err(domain::ValueError::NotText)),
    };
    let as_items = !matches!(body.get("items"), None | Some(Value::Null));
    if as_items && body.contains_key("coffee_name") {
        errors.push(FieldError::new(
            "items",
            "give either items or the single-drink fields (coffee_name, …), not both",
        ));
    }
    let lines = match body.get("items") {
        Some(items) if as_items => parse_items(items),
        _ => parse_line(body, "").map(|line| vec![line]),
    };
    match lines {
        Ok(lines) if errors.is_empty() => Ok(AskedOrder {
            store_id,
            lines,
            as_items,
        }),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Reads `items`: an array of 1 to [`OrderLines::MAX`] lines.
fn parse_items(items: &Value) -> Result<Vec<AskedLine>, Vec<FieldError>> {
    let count = format!("must be an array of 1 to {} lines", OrderLines::MAX);
    let Value::Array(items) = items else {
        return Err(vec![FieldError::new("items", count)]);
    };
    if !(1..=OrderLines::MAX).contains(&items.len()) {
        return Err(vec![FieldError::new("items", count)]);
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            errors.push(FieldError::new(
                format!("items[{i}]"),
                domain::ValueError::NotAnObject,
            ));
            continue;
        };
        match parse_line(item, &format!("items[{i}].")) {
            Ok(line) => lines.push(line),
            Err(more) => errors.extend(more),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// Reads one drink (the original single-drink fields, at the top of the
/// body or in a line of `items`): every invalid field is reported at once,
/// named `{prefix}{field}`.
fn parse_line(body: &Map<String, Value>, prefix: &str) -> Result<AskedLine, Vec<FieldError>> {
    let mut errors = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    let name = match body.get("coffee_name") {
        None | Some(Value::Null) => required(&mut errors, &field("coffee_name")),
        Some(v) => check(&mut errors, &field("coffee_name"), CoffeeName::from_json(v)),
    };
    let price = match body.get("coffee_price") {
        None | Some(Value::Null) => required(&mut errors, &field("coffee_price")),
        Some(v) => check(&mut errors, &field("coffee_price"), Price::from_json(v)),
    };
    let qty = check(
        &mut errors,
        &field("coffee_qty"),
        Quantity::from_json(body.get("coffee_qty")),
    );
    let options = AskedOptions::from_json(body.get("options"))
        .map_err(|e| {
            errors.extend(
                e.into_iter()
                    .map(|(name, error)| FieldError::new(field(name), error)),
            )
        })
        .ok();
    match (name, price, qty, options) {
        (Some(coffee_name), Some(coffee_price), Some(coffee_qty), Some(options))
            if errors.is_empty() =>
        {
            Ok(AskedLine {
                coffee_name,
                coffee_price,
                coffee_qty,
                options,
            })
        }
        _ => Err(errors),
    }
}

/// Records a field's error, if any, and passes its value on.
fn check<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Result<T, domain::ValueError>,
) -> Option<T> {
    value
        .map_err(|e| errors.push(FieldError::new(field, e)))
        .ok()
}

fn required<T>(errors: &mut Vec<FieldError>, field: &str) -> Option<T> {
    errors.push(FieldError::new(field, "is required"));
    None
}

/// The request in normal form: `"5000"` and `5000` are the same request,
/// and so are `"아이스"` and `"iced"`. An order of one drink sent in the
/// original fields, without a store, keeps the fingerprint it had before
/// stores and several lines existed (and, without options, before options
/// existed), so a retry across an upgrade is still recognised.
pub(super) fn fingerprint(order: &AskedOrder) -> String {
    use serde_json::json;
    let said = |line: &AskedLine| {
        json!([
            line.coffee_name,
            line.coffee_price,
            line.coffee_qty,
            line.options.temperature,
            line.options.size
        ])
    };
    match (order.as_items, &order.store_id, order.lines.as_slice()) {
        (false, None, [line]) => {
            let options = DrinkOptions {
                temperature: line.options.temperature.unwrap_or_default(),
                size: line.options.size.unwrap_or_default(),
            };
            if options == DrinkOptions::default() {
                json!([line.coffee_name, line.coffee_price, line.coffee_qty]).to_string()
            } else {
                json!([
                    line.coffee_name,
                    line.coffee_price,
                    line.coffee_qty,
                    options
                ])
                .to_string()
            }
        }
        _ => json!({
            "store_id": order.store_id,
            "lines": order.lines.iter().map(said).collect::<Vec<_>>(),
        })
        .to_string(),
    }
}

/// The place-order body: one drink in the original fields, or several as
/// `items` (not both); either may name its store.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the wire form
pub enum PlaceOrderBody {
    Drink(DrinkOrderBody),
    Items(ItemsOrderBody),
}

/// An order of one drink, in the original clients' fields.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct DrinkOrderBody {
    #[serde(flatten)]
    pub drink: LineBody,
    /// The store the order is for (`GET /stores`); the default store when
    /// absent.
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,40}$", example = "main")]
    pub store_id: Option<String>,
}

/// An order of 1 to 20 drinks.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct ItemsOrderBody {
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<LineBody>,
    /// The store the order is for (`GET /stores`); the default store when
    /// absent.
    #[schema(
        nullable = false,
        pattern = "^[A-Za-z0-9._-]{1,40}$",
        example = "gangnam"
    )]
    pub store_id: Option<String>,
}

/// One drink of an order.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct LineBody {
    /// 1 to 100 characters after trimming, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^ \t\r\n\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "today's coffee"
    )]
    pub coffee_name: String,
    pub coffee_price: PriceInput,
    /// 1 when absent.
    #[schema(nullable = false)]
    pub coffee_qty: Option<QuantityInput>,
    /// The drink's options; each one absent is the drink's default (its
    /// first temperature and size on the menu; hot and regular without a
    /// menu).
    #[schema(nullable = false)]
    pub options: Option<OptionsBody>,
}

/// The place-order body as form data (`application/x-www-form-urlencoded`),
/// as the original clients send it: flat fields, so one drink and no
/// options (a drink ordered this way gets its defaults).
#[derive(ToSchema)]
#[allow(dead_code)] // documents the wire form
pub struct PlaceOrderForm {
    /// 1 to 100 characters after trimming, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^ \t\r\n\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "today's coffee"
    )]
    pub coffee_name: String,
    /// Whole won, 0 to 1,000,000.
    #[schema(
        pattern = r"^[ \t\r\n]*0*([0-9]{1,6}|1000000)[ \t\r\n]*$",
        example = "4500"
    )]
    pub coffee_price: String,
    /// 1 to 1,000; 1 when absent.
    #[schema(
        pattern = r"^[ \t\r\n]*0*([1-9][0-9]{0,2}|1000)[ \t\r\n]*$",
        example = "2",
        nullable = false
    )]
    pub coffee_qty: Option<String>,
    /// The store the order is for; the default store when absent.
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,40}$", example = "main")]
    pub store_id: Option<String>,
}
