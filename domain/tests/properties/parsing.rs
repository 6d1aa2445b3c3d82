//! Property tests of input parsing: every value an order is made of is
//! accepted exactly when the HTTP contract kept beside the repository
//! (API.md) allows it, from numbers or from text.

use domain::{
    whole_number, CoffeeName, DrinkOptions, OptionValue, OrderId, OrderLines, Price, Quantity,
    Size, StoreId, Temperature, UserId, ValueError,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::strategies::{arb_line, v7};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_order_holds_1_to_20_lines(count in 0usize..40, line in arb_line()) {
        let lines = OrderLines::new(vec![line; count]);
        prop_assert_eq!(lines.is_ok(), (1..=20).contains(&count));
    }

    #[test]
    fn store_ids_are_1_to_40_safe_characters(s in "\\PC{0,50}") {
        let ok = !s.is_empty()
            && s.chars().count() <= 40
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        prop_assert_eq!(StoreId::parse(&s).is_ok(), ok);
    }

    #[test]
    fn options_parse_from_codes_and_labels_and_nothing_else(s in prop_oneof![
        "\\PC{0,10}",
        prop::sample::select(vec![" hot", "Iced", "핫", "아이스 ", "regular", "LARGE", "레귤러", "라지", "Hot!"])
            .prop_map(String::from),
    ]) {
        let t = s.trim();
        let temperature = match t.to_ascii_lowercase().as_str() {
            "hot" => Some(Temperature::Hot),
            "iced" => Some(Temperature::Iced),
            _ if t == "핫" => Some(Temperature::Hot),
            _ if t == "아이스" => Some(Temperature::Iced),
            _ => None,
        };
        prop_assert_eq!(Temperature::parse(&s).ok(), temperature);
        let size = match t.to_ascii_lowercase().as_str() {
            "regular" => Some(Size::Regular),
            "large" => Some(Size::Large),
            _ if t == "레귤러" => Some(Size::Regular),
            _ if t == "라지" => Some(Size::Large),
            _ => None,
        };
        prop_assert_eq!(Size::parse(&s).ok(), size);
    }

    #[test]
    fn prices_accept_whole_won_from_0_to_1_000_000_as_numbers_or_strings(n in -2_000_000i64..3_000_000) {
        let ok = (0..=1_000_000).contains(&n);
        prop_assert_eq!(Price::from_json(&json!(n)).is_ok(), ok);
        let as_text = Price::from_json(&json!(n.to_string()));
        // Strings are digits only: a minus sign is never a number here.
        prop_assert_eq!(as_text.is_ok(), ok);
        if ok {
            prop_assert_eq!(u64::from(as_text.expect("ok")), n as u64);
            prop_assert_eq!(u64::from(Price::from_json(&json!(format!(" {n} "))).expect("trimmed")), n as u64);
        }
    }

    #[test]
    fn quantities_accept_1_to_1000_as_numbers_or_strings(n in -10i64..2_000) {
        let ok = (1..=1_000).contains(&n);
        prop_assert_eq!(Quantity::from_json(Some(&json!(n))).is_ok(), ok);
        prop_assert_eq!(Quantity::from_json(Some(&json!(n.to_string()))).is_ok(), ok);
    }

    #[test]
    fn numeric_text_is_only_ascii_digits(s in "\\PC{0,12}") {
        let digits = s.trim();
        let expected = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(whole_number(&Value::String(s.clone())).is_ok(), expected);
    }

    #[test]
    fn fractional_numbers_are_rejected(whole in 0u32..1000, frac in 1u32..1000) {
        let x: f64 = f64::from(whole) + f64::from(frac) / 1000.0;
        prop_assert_eq!(whole_number(&json!(x)), Err(ValueError::NotAWholeNumber));
        let text = format!("{whole}.{frac}");
        prop_assert!(whole_number(&json!(text)).is_err());
    }

    #[test]
    fn user_ids_are_1_to_100_safe_characters(s in "\\PC{0,120}") {
        let expected = (1..=100).contains(&s.chars().count())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        prop_assert_eq!(UserId::parse(&s).is_ok(), expected);
    }

    #[test]
    fn coffee_names_are_1_to_100_characters_after_trimming(s in "\\PC{0,120}") {
        let t = s.trim();
        let expected = !t.is_empty() && t.chars().count() <= 100 && !t.chars().any(char::is_control);
        let parsed = CoffeeName::parse(&s);
        prop_assert_eq!(parsed.is_ok(), expected);
        if let Ok(name) = parsed {
            prop_assert_eq!(name.as_str(), t);
        }
    }

    #[test]
    fn order_ids_are_uuid_v7_only(bits in any::<u128>()) {
        let random = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid(); // v4
        prop_assert!(OrderId::parse(&random.to_string()).is_err());
        let id = v7(bits);
        prop_assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
    }
}

#[test]
fn absent_or_null_quantity_means_one() {
    assert_eq!(Quantity::from_json(None).map(Quantity::get), Ok(1));
    assert_eq!(
        Quantity::from_json(Some(&Value::Null)).map(Quantity::get),
        Ok(1)
    );
}

#[test]
fn non_numbers_are_not_whole_numbers() {
    for v in [
        json!(true),
        json!([1]),
        json!({"n": 1}),
        json!(""),
        json!("1e3"),
        json!("+5"),
        json!("0x10"),
        json!("５"),
    ] {
        assert_eq!(whole_number(&v), Err(ValueError::NotAWholeNumber), "{v}");
    }
    assert_eq!(whole_number(&json!(3.0)), Ok(3));
    assert!(Price::from_json(&json!(1e300)).is_err());
    assert!(Price::from_json(&json!("99999999999999999999999999999999999999999")).is_err());
}

#[test]
fn options_in_a_body_default_and_accept_labels() {
    let parse = |v: Value| DrinkOptions::from_json(Some(&v));
    assert_eq!(DrinkOptions::from_json(None), Ok(DrinkOptions::default()));
    assert_eq!(
        parse(json!({"temperature": "아이스", "size": "라지"})),
        Ok(DrinkOptions {
            temperature: Temperature::Iced,
            size: Size::Large
        })
    );
    assert_eq!(
        parse(json!({"size": "large"})),
        Ok(DrinkOptions {
            temperature: Temperature::Hot,
            size: Size::Large
        })
    );
    let fields = |r: Result<DrinkOptions, Vec<(&'static str, ValueError)>>| {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|(f, _)| f)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(parse(json!({"temperature": "warm", "size": 3}))),
        ["options.temperature", "options.size"]
    );
    assert_eq!(fields(parse(json!("iced"))), ["options"]);
    assert_eq!(fields(parse(json!({"milk": "oat"}))), ["options"]);
}
