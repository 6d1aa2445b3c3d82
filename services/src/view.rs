//! The JSON shapes of the HTTP contract kept beside the repository (API.md): an order, and an order's delivery status. Built
//! here by folding a stream's envelopes (the domain state plus the timestamps
//! the envelopes carry).

use domain::{fold, DrinkOptions, EventEnvelope, OrderLine, Status};
use projections::OrderRow;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;

/// An order as the contract (API.md) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub user_id: String,
    /// The original single-drink fields: the order's drink, or its first
    /// line when it has several.
    pub coffee_name: String,
    pub coffee_price: u64,
    pub coffee_qty: u64,
    pub total_price: u64,
    #[schema(value_type = OptionsView)]
    pub options: DrinkOptions,
    #[schema(value_type = OrderStatus)]
    pub status: Status,
    #[schema(value_type = String, example = "접수완료")]
    pub status_label: &'static str,
    /// The short number staff call out, per store per day; `null` for
    /// orders placed before pickup numbers existed.
    pub pickup_number: Option<u32>,
    /// The store the order is for (`GET /stores`).
    #[schema(example = "main")]
    pub store_id: String,
    /// Every drink of the order, in the order the customer listed them (one
    /// for a single-drink order). `total_price` is the sum of their
    /// `line_price`s.
    pub items: Vec<ItemView>,
    #[serde(serialize_with = "api_time")]
    #[schema(value_type = String, format = DateTime)]
    pub ordered_at: OffsetDateTime,
    #[serde(serialize_with = "api_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

/// One line of an order: a drink, its options, how many, the price of one
/// and of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub coffee_name: String,
    pub coffee_price: u64,
    pub coffee_qty: u64,
    #[schema(value_type = OptionsView)]
    pub options: DrinkOptions,
    /// `coffee_price` × `coffee_qty`.
    pub line_price: u64,
}

impl From<&OrderLine> for ItemView {
    fn from(line: &OrderLine) -> Self {
        ItemView {
            coffee_name: line.coffee_name.to_string(),
            coffee_price: line.coffee_price.into(),
            coffee_qty: line.coffee_qty.get(),
            options: line.options,
            line_price: line.line_price().0,
        }
    }
}

/// One line of an order as the delivery side shows it: as on the order,
/// with the prices `null` for an order the delivery model applied before
/// it kept them (until it is rebuilt from the topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryItemView {
    pub coffee_name: String,
    pub coffee_price: Option<u64>,
    pub coffee_qty: u64,
    #[schema(value_type = OptionsView)]
    pub options: DrinkOptions,
    pub line_price: Option<u64>,
}

impl From<&ItemView> for DeliveryItemView {
    fn from(item: &ItemView) -> Self {
        DeliveryItemView {
            coffee_name: item.coffee_name.clone(),
            coffee_price: Some(item.coffee_price),
            coffee_qty: item.coffee_qty,
            options: item.options,
            line_price: Some(item.line_price),
        }
    }
}

/// A status code (the Korean labels are accepted wherever a status is sent).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // documents the wire form of domain::Status
pub enum OrderStatus {
    Received,
    Preparing,
    Delivering,
    Delivered,
    Cancelled,
}

/// A drink's options as the contract (API.md) shows them (codes).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire form of domain::DrinkOptions
pub struct OptionsView {
    #[schema(value_type = String, example = "iced", pattern = "^(hot|iced)$")]
    temperature: String,
    #[schema(value_type = String, example = "regular", pattern = "^(regular|large)$")]
    size: String,
}

/// An order's delivery status as the contract (API.md) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryStatusView {
    pub order_id: Uuid,
    pub user_id: String,
    pub coffee_name: String,
    pub coffee_qty: u64,
    #[schema(value_type = OptionsView)]
    pub options: DrinkOptions,
    #[schema(value_type = OrderStatus)]
    pub status: Status,
    #[schema(value_type = String, example = "제작중")]
    pub status_label: &'static str,
    /// The short number staff call out (as on the order).
    pub pickup_number: Option<u32>,
    #[schema(example = "main")]
    pub store_id: String,
    /// Every drink of the order (as on the order).
    pub items: Vec<DeliveryItemView>,
    #[serde(serialize_with = "api_time")]
    #[schema(value_type = String, format = DateTime)]
    pub ordered_at: OffsetDateTime,
    #[serde(serialize_with = "api_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// The order's version as the delivery side has applied it (`ETag`).
    pub version: u64,
}

impl OrderView {
    /// Folds a stream (oldest first). `None` for an empty stream.
    pub fn from_stream(stream: &[EventEnvelope]) -> Option<OrderView> {
        let state = fold(stream.iter().map(|e| &e.event));
        let order = state.order()?;
        let first = stream.first()?;
        let last = stream.last()?;
        let line = order.lines.first();
        Some(OrderView {
            order_id: order.order_id.as_uuid(),
            user_id: order.user_id.to_string(),
            coffee_name: line.coffee_name.to_string(),
            coffee_price: line.coffee_price.into(),
            coffee_qty: line.coffee_qty.get(),
            total_price: order.total_price.0,
            options: line.options,
            status: order.status,
            status_label: order.status.label(),
            pickup_number: order.pickup_number,
            store_id: order.store_id.to_string(),
            items: order.lines.iter().map(ItemView::from).collect(),
            ordered_at: first.recorded_at,
            updated_at: last.recorded_at,
            version: order.version,
        })
    }

    pub fn delivery_status(&self) -> DeliveryStatusView {
        DeliveryStatusView {
            order_id: self.order_id,
            user_id: self.user_id.clone(),
            coffee_name: self.coffee_name.clone(),
            coffee_qty: self.coffee_qty,
            options: self.options,
            status: self.status,
            status_label: self.status_label,
            pickup_number: self.pickup_number,
            store_id: self.store_id.clone(),
            items: self.items.iter().map(DeliveryItemView::from).collect(),
            ordered_at: self.ordered_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

impl From<&OrderRow> for OrderView {
    fn from(row: &OrderRow) -> Self {
        OrderView {
            order_id: row.order_id,
            user_id: row.user_id.clone(),
            coffee_name: row.coffee_name.clone(),
            coffee_price: u64::try_from(row.coffee_price).unwrap_or_default(),
            coffee_qty: u64::try_from(row.coffee_qty).unwrap_or_default(),
            total_price: u64::try_from(row.total_price).unwrap_or_default(),
            options: row.options,
            status: row.status,
            status_label: row.status.label(),
            pickup_number: row.pickup_number.and_then(|n| u32::try_from(n).ok()),
            store_id: row.store_id.clone(),
            items: row.lines.iter().map(ItemView::from).collect(),
            ordered_at: row.ordered_at,
            updated_at: row.updated_at,
            version: u64::try_from(row.version).unwrap_or_default(),
        }
    }
}

impl From<&projections::delivery::DeliveryRow> for DeliveryStatusView {
    fn from(row: &projections::delivery::DeliveryRow) -> Self {
        DeliveryStatusView {
            order_id: row.order_id,
            user_id: row.user_id.clone(),
            coffee_name: row.coffee_name.clone(),
            coffee_qty: u64::try_from(row.coffee_qty).unwrap_or_default(),
            options: row.options,
            status: row.status,
            status_label: row.status.label(),
            pickup_number: row.pickup_number.and_then(|n| u32::try_from(n).ok()),
            store_id: row.store_id.clone(),
            items: row
                .lines
                .iter()
                .map(|line| {
                    let item = DeliveryItemView::from(&ItemView::from(line));
                    if row.prices_known {
                        item
                    } else {
                        DeliveryItemView {
                            coffee_price: None,
                            line_price: None,
                            ..item
                        }
                    }
                })
                .collect(),
            ordered_at: row.ordered_at,
            updated_at: row.updated_at,
            version: u64::try_from(row.version).unwrap_or_default(),
        }
    }
}

/// `2026-11-22T12:00:00.123Z`: UTC, milliseconds, as the contract (API.md) shows.
pub fn format_api_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn api_time<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_api_time(*t))
}
