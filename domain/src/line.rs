//! One drink of an order: the one definition of what an order carries about
//! what was ordered (the drink, its options, how many, at what price), used
//! by the command, the order's state, and through them the HTTP body, both
//! read models and the views. The placement event's released wire form
//! (`OrderPlaced`, schema version 3) keeps its fields flat; it converts to
//! and from a line.

use serde::{Deserialize, Serialize};

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
