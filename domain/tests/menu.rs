//! Property tests of the menu: an order fits it exactly when its drink,
//! size, temperature and price do.

use std::collections::BTreeMap;

use domain::{CoffeeName, Drink, DrinkOptions, Menu, Price, Size, Temperature};
use proptest::prelude::*;
use serde_json::json;

fn price(n: u64) -> Price {
    Price::from_json(&json!(n)).expect("a price in range")
}

prop_compose! {
    fn drink()(
        name in "[a-z]{1,12}",
        regular in proptest::option::of(0u64..=1_000_000),
        large in proptest::option::of(0u64..=1_000_000),
        hot in any::<bool>(),
        iced in any::<bool>(),
        sold_out in any::<bool>(),
    ) -> Drink {
        // At least one size and one temperature, as a menu requires.
        let regular = if regular.is_none() && large.is_none() { Some(1000) } else { regular };
        let mut prices = BTreeMap::new();
        for (size, p) in [(Size::Regular, regular), (Size::Large, large)] {
            if let Some(p) = p { prices.insert(size, price(p)); }
        }
        let mut temperatures = Vec::new();
        if hot || !iced { temperatures.push(Temperature::Hot); }
        if iced { temperatures.push(Temperature::Iced); }
        Drink { coffee_name: CoffeeName::parse(&name).expect("a name"), prices, temperatures, sold_out }
    }
}

proptest! {
    /// An order fits the menu exactly when its drink is on sale, served
    /// at its temperature, comes in its size, and its price is the menu's
    /// price for that size; an empty menu takes everything.
    #[test]
    fn an_order_fits_the_menu_exactly_when_drink_size_temperature_and_price_do(
        drink in drink(),
        ask_price in 0u64..=1_000_000,
        use_menu_price in any::<bool>(),
        iced in any::<bool>(),
        large in any::<bool>(),
    ) {
        let size = if large { Size::Large } else { Size::Regular };
        let temperature = if iced { Temperature::Iced } else { Temperature::Hot };
        let options = DrinkOptions { temperature, size };
        let menu_price = drink.prices.get(&size).copied();
        let asked = match (use_menu_price, menu_price) {
            (true, Some(p)) => p,
            _ => price(ask_price),
        };
        let fits = !drink.sold_out
            && drink.temperatures.contains(&temperature)
            && menu_price == Some(asked);
        let name = drink.coffee_name.clone();
        let menu = Menu::new(vec![drink]).expect("a valid menu");
        prop_assert_eq!(menu.check(&name, asked, options).is_ok(), fits);
        prop_assert!(Menu::default().check(&name, asked, options).is_ok());
        let other = CoffeeName::parse("not-on-the-menu-1").expect("a name");
        let faults = menu.check(&other, asked, options).expect_err("not on the menu");
        prop_assert_eq!(faults[0].0.as_str(), "coffee_name");
    }

    /// A line that leaves an option out gets the drink's own default, one
    /// it is served at: an iced-only drink ordered without options is iced,
    /// a drink in large only is large, and the line fits the menu at the
    /// menu's price for that size. What a line says is kept.
    #[test]
    fn a_line_without_options_gets_one_the_drink_is_served_at(
        drink in drink(),
        said_temperature in proptest::option::of(prop::sample::select(vec![Temperature::Hot, Temperature::Iced])),
        said_size in proptest::option::of(prop::sample::select(vec![Size::Regular, Size::Large])),
    ) {
        let name = drink.coffee_name.clone();
        let menu = Menu::new(vec![drink.clone()]).expect("a valid menu");
        let options = menu.complete(&name, None, None);
        prop_assert!(drink.temperatures.contains(&options.temperature));
        let price = drink.prices.get(&options.size).copied();
        prop_assert!(price.is_some());
        if let Some(price) = price {
            prop_assert_eq!(menu.check(&name, price, options).is_ok(), !drink.sold_out);
        }
        let kept = menu.complete(&name, said_temperature, said_size);
        prop_assert_eq!(kept.temperature, said_temperature.unwrap_or(options.temperature));
        prop_assert_eq!(kept.size, said_size.unwrap_or(options.size));
        // No menu: hot, regular, as before options existed.
        prop_assert_eq!(Menu::default().complete(&name, None, None), DrinkOptions::default());
    }
}
