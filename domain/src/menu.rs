//! The menu: the drinks on sale, a price per size, the temperatures each is
//! served at, sold out or not. When a shop has a menu, an order must fit it:
//! a client names a drink, a size and a temperature, never its own price
//! ([`Menu::check`]). A shop without a menu (no drinks) takes any drink at
//! any price in range, as the original clients expect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::line::{OrderLine, OrderLines};
use crate::options::{AskedOptions, DrinkOptions, OptionValue, Size, Temperature};
use crate::values::{CoffeeName, Price, Quantity};

/// One drink on the menu, in the shape `GET /menu` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drink {
    pub coffee_name: CoffeeName,
    /// The price per size it comes in; at least one.
    pub prices: BTreeMap<Size, Price>,
    /// The temperatures it is served at; at least one.
    pub temperatures: Vec<Temperature>,
    #[serde(default)]
    pub sold_out: bool,
}

/// The menu, in the order it lists its drinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Menu {
    drinks: Vec<Drink>,
}

/// Why a menu cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenuError {
    #[error("{0} is on the menu twice")]
    Duplicate(String),
    #[error("{0} has no price: give at least one size")]
    NoPrice(String),
    #[error("{0} has no temperature: give hot, iced or both")]
    NoTemperature(String),
}

/// What in an order does not fit the menu: the field at fault and why.
pub type OffMenu = Vec<(String, String)>;

/// A line as a client asked for it: the options it did not say are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedLine {
    pub coffee_name: CoffeeName,
    pub coffee_price: Price,
    pub coffee_qty: Quantity,
    pub options: AskedOptions,
}

impl Menu {
    /// A menu of `drinks`, checked: names unique, every drink with a price and
    /// a temperature. Temperatures are kept in their usual order, once each.
    pub fn new(drinks: Vec<Drink>) -> Result<Menu, MenuError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut checked = Vec::with_capacity(drinks.len());
        for mut drink in drinks {
            let name = drink.coffee_name.to_string();
            if !seen.insert(name.clone()) {
                return Err(MenuError::Duplicate(name));
            }
            if drink.prices.is_empty() {
                return Err(MenuError::NoPrice(name));
            }
            drink.temperatures.sort();
            drink.temperatures.dedup();
            if drink.temperatures.is_empty() {
                return Err(MenuError::NoTemperature(name));
            }
            checked.push(drink);
        }
        Ok(Menu { drinks: checked })
    }

    /// The menu as one store offers it: the drinks sold out at every store
    /// and those in `sold_out` (the store's own) sold out.
    pub fn at_store(&self, sold_out: &crate::store::SoldOut) -> Menu {
        Menu {
            drinks: self
                .drinks
                .iter()
                .map(|d| Drink {
                    sold_out: d.sold_out || sold_out.contains(&d.coffee_name),
                    ..d.clone()
                })
                .collect(),
        }
    }

    /// No menu is set: any drink at any price in range is taken.
    pub fn is_empty(&self) -> bool {
        self.drinks.is_empty()
    }

    pub fn drinks(&self) -> &[Drink] {
        &self.drinks
    }

    pub fn drink(&self, name: &CoffeeName) -> Option<&Drink> {
        self.drinks.iter().find(|d| &d.coffee_name == name)
    }

    /// The options of a line that says only some of them (or none): what it
    /// does not say is the drink's default, the first temperature and the
    /// first size it is served at (hot before iced, regular before large).
    /// A drink not on the menu (or no menu at all) defaults to hot, regular;
    /// the check then says what is wrong with it.
    pub fn complete(
        &self,
        name: &CoffeeName,
        temperature: Option<Temperature>,
        size: Option<Size>,
    ) -> DrinkOptions {
        let drink = self.drink(name);
        let first_temperature = drink.and_then(|d| d.temperatures.first().copied());
        let first_size = drink.and_then(|d| d.prices.keys().next().copied());
        DrinkOptions {
            temperature: temperature.or(first_temperature).unwrap_or_default(),
            size: size.or(first_size).unwrap_or_default(),
        }
    }

    /// The lines of an order as the menu takes them: each line's options
    /// completed with the drink's defaults ([`Menu::complete`]), then
    /// checked ([`Menu::check`]). Every fault of every line is named, with
    /// `prefix(i)` before the field of line `i` (`items[1].` for a list of
    /// lines, nothing for the original single-drink body). `lines` holds 1
    /// to [`OrderLines::MAX`] lines (the caller checked the count).
    pub fn take(
        &self,
        lines: &[AskedLine],
        prefix: impl Fn(usize) -> String,
    ) -> Result<OrderLines, OffMenu> {
        let mut taken = Vec::with_capacity(lines.len());
        let mut faults = Vec::new();
        for (i, asked) in lines.iter().enumerate() {
            let options = self.complete(
                &asked.coffee_name,
                asked.options.temperature,
                asked.options.size,
            );
            let line = OrderLine {
                coffee_name: asked.coffee_name.clone(),
                coffee_price: asked.coffee_price,
                coffee_qty: asked.coffee_qty,
                options,
            };
            if let Err(off) = self.check_line(&line) {
                let at = prefix(i);
                faults.extend(
                    off.into_iter()
                        .map(|(field, why)| (format!("{at}{field}"), why)),
                );
            }
            taken.push(line);
        }
        if !faults.is_empty() {
            return Err(faults);
        }
        OrderLines::new(taken).map_err(|e| vec![("items".to_owned(), e.to_string())])
    }

    /// Whether a line of an order fits the menu ([`Menu::check`]).
    pub fn check_line(&self, line: &OrderLine) -> Result<(), OffMenu> {
        self.check(&line.coffee_name, line.coffee_price, line.options)
    }

    /// Whether an order of `name` at `price` with `options` fits the menu.
    /// Every field at fault is named; an empty menu takes everything.
    pub fn check(
        &self,
        name: &CoffeeName,
        price: Price,
        options: DrinkOptions,
    ) -> Result<(), OffMenu> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(drink) = self.drink(name) else {
            return Err(vec![(
                "coffee_name".to_owned(),
                format!("“{name}” is not on the menu (GET /menu lists the drinks)"),
            )]);
        };
        if drink.sold_out {
            return Err(vec![(
                "coffee_name".to_owned(),
                format!("“{name}” is sold out"),
            )]);
        }
        let mut faults = Vec::new();
        if !drink.temperatures.contains(&options.temperature) {
            faults.push((
                "options.temperature".to_owned(),
                format!(
                    "“{name}” is not served {} ({})",
                    options.temperature.code(),
                    options.temperature.label()
                ),
            ));
        }
        match drink.prices.get(&options.size) {
            None => faults.push((
                "options.size".to_owned(),
                format!(
                    "“{name}” does not come in {} ({})",
                    options.size.code(),
                    options.size.label()
                ),
            )),
            Some(&menu_price) if menu_price != price => faults.push((
                "coffee_price".to_owned(),
                format!(
                    "must be the menu's price for {} “{name}”: {}",
                    options.size.code(),
                    u64::from(menu_price)
                ),
            )),
            Some(_) => {}
        }
        if faults.is_empty() {
            Ok(())
        } else {
            Err(faults)
        }
    }
}
