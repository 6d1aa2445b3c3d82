//! What an order carries about what was ordered: its lines, each a drink
//! with its options, how many, and the price of one; the order's total is the
//! sum of its lines. The one definition used by the command, the event, the
//! order's state, and through them the HTTP body, both read models, the views
//! and the Kafka message.

use serde::{Deserialize, Serialize};

use crate::error::ValueError;
use crate::options::DrinkOptions;
use crate::values::{CoffeeName, Price, Quantity, Won};

/// A drink as ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub coffee_name: CoffeeName,
    /// The price of one, for its size.
    pub coffee_price: Price,
    pub coffee_qty: Quantity,
    pub options: DrinkOptions,
}

impl OrderLine {
    /// What the line costs: its price times its quantity.
    pub fn line_price(&self) -> Won {
        self.coffee_price.times(self.coffee_qty)
    }
}

/// The drinks of one order, as the customer listed them: 1 to
/// [`OrderLines::MAX`] lines. Holding one is proof of the count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<OrderLine>", into = "Vec<OrderLine>")]
pub struct OrderLines(Vec<OrderLine>);

impl OrderLines {
    /// The most lines one order holds.
    pub const MAX: usize = 20;

    pub fn new(lines: Vec<OrderLine>) -> Result<Self, ValueError> {
        if (1..=Self::MAX).contains(&lines.len()) {
            Ok(OrderLines(lines))
        } else {
            Err(ValueError::OutOfRange {
                min: 1,
                max: Self::MAX as u64,
            })
        }
    }

    /// An order of one drink.
    pub fn one(line: OrderLine) -> Self {
        OrderLines(vec![line])
    }

    /// The first line: what the original single-drink fields show.
    pub fn first(&self) -> &OrderLine {
        // Never empty: `new` and `one` are the only ways in.
        &self.0[0]
    }

    pub fn as_slice(&self) -> &[OrderLine] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, OrderLine> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true; here for the convention that goes with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The order's total: the sum of its lines' prices. At most 20 lines of
    /// 1,000 drinks at 1,000,000 won: far inside a `u64`.
    pub fn total(&self) -> Won {
        Won(self.0.iter().map(|l| l.line_price().0).sum())
    }
}

impl TryFrom<Vec<OrderLine>> for OrderLines {
    type Error = ValueError;
    fn try_from(lines: Vec<OrderLine>) -> Result<Self, ValueError> {
        OrderLines::new(lines)
    }
}

impl From<OrderLines> for Vec<OrderLine> {
    fn from(lines: OrderLines) -> Vec<OrderLine> {
        lines.0
    }
}

impl<'a> IntoIterator for &'a OrderLines {
    type Item = &'a OrderLine;
    type IntoIter = std::slice::Iter<'a, OrderLine>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
