//! Value types. Each can only be built through `parse`/`TryFrom`, so holding one
//! is proof that the input was valid (parse, don't validate).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ValueError;

/// Who placed an order: 1 to 100 characters of letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 100;

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        safe_id(input, Self::MAX_LEN).map(UserId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which store of the chain an order is for: 1 to 40 characters of letters,
/// digits, `-`, `_`, `.` (`main`, `gangnam`). Orders placed before stores
/// existed, and orders that name none, are the default store's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreId(String);

impl StoreId {
    pub const MAX_LEN: usize = 40;
    /// The default store's id.
    pub const DEFAULT: &'static str = "main";

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        safe_id(input, Self::MAX_LEN).map(StoreId)
    }

    /// The default store, where orders that name no store go.
    pub fn default_store() -> Self {
        StoreId(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StoreId {
    fn default() -> Self {
        StoreId::default_store()
    }
}

/// An identifier that is safe anywhere (paths, logs, claims): 1 to `max`
/// characters of letters, digits, `-`, `_`, `.`.
fn safe_id(input: &str, max: usize) -> Result<String, ValueError> {
    if input.is_empty() {
        return Err(ValueError::Empty);
    }
    if input.chars().count() > max {
        return Err(ValueError::TooLong { max });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !input.chars().all(allowed) {
        return Err(ValueError::InvalidCharacters);
    }
    Ok(input.to_owned())
}

/// An order's identity, a UUID v7 (time-ordered, so newer orders sort later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Uuid", into = "Uuid")]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh id for a new order.
    pub fn generate() -> Self {
        OrderId(Uuid::now_v7())
    }

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let uuid = Uuid::try_parse(input.trim()).map_err(|_| ValueError::InvalidOrderId)?;
        OrderId::try_from(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// The name of the coffee ordered: non-empty after trimming, at most 100
/// characters, no control characters. Stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CoffeeName(String);

impl CoffeeName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ValueError::Empty);
        }
        if trimmed.chars().count() > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValueError::ControlCharacters);
        }
        Ok(CoffeeName(trimmed.to_owned()))
    }

    /// Parses a JSON value, which must be a string.
    pub fn from_json(value: &Value) -> Result<Self, ValueError> {
        match value {
            Value::String(s) => CoffeeName::parse(s),
            _ => Err(ValueError::NotText),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount of Korean won. Whole won only; the currency has no minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Won(pub u64);

/// The price of one coffee: 0 to 1,000,000 won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Price(u64);

impl Price {
    pub const MAX: u64 = 1_000_000;

    pub fn won(self) -> Won {
        Won(self.0)
    }

    /// Parses a JSON number or numeric string (the original clients send strings).
    pub fn from_json(value: &Value) -> Result<Self, ValueError> {
        within(whole_number(value)?, 0, Price::MAX).map(Price)
    }

    /// The price of `quantity` coffees. Cannot overflow: both factors are bounded.
    pub fn times(self, quantity: Quantity) -> Won {
        Won(self.0 * quantity.get())
    }
}

/// How many coffees: 1 to 1,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Quantity(u64);

impl Quantity {
    pub const MIN: u64 = 1;
    pub const MAX: u64 = 1_000;

    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses a JSON number or numeric string; absent (or `null`) means one.
    pub fn from_json(value: Option<&Value>) -> Result<Self, ValueError> {
        match value {
            None | Some(Value::Null) => Ok(Quantity(1)),
            Some(v) => within(whole_number(v)?, Quantity::MIN, Quantity::MAX).map(Quantity),
        }
    }
}

/// Reads a whole number from JSON the way the original clients send it: a JSON
/// number with no fractional part (`3`, `3.0`, `-2`), or a string of ASCII
/// digits with optional surrounding whitespace (`"3"`, `" 3 "`). Anything else
/// (decimals, signs or exponents inside strings, empty strings, booleans) is
/// not a whole number. Range checks are the caller's: the result is wide enough
/// that any out-of-range input stays out of range instead of wrapping.
pub fn whole_number(value: &Value) -> Result<i128, ValueError> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u.into())
            } else if let Some(i) = n.as_i64() {
                Ok(i.into())
            } else {
                match n.as_f64() {
                    // `as` saturates, so 1e300 stays far out of every range.
                    Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(f as i128),
                    _ => Err(ValueError::NotAWholeNumber),
                }
            }
        }
        Value::String(s) => {
            let digits = s.trim();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValueError::NotAWholeNumber);
            }
            // All digits: the only possible failure is overflow, which is just "too big".
            Ok(digits.parse().unwrap_or(i128::MAX))
        }
        _ => Err(ValueError::NotAWholeNumber),
    }
}

fn within(n: i128, min: u64, max: u64) -> Result<u64, ValueError> {
    if (i128::from(min)..=i128::from(max)).contains(&n) {
        // In range of u64 by the check above.
        Ok(u64::try_from(n).unwrap_or(max))
    } else {
        Err(ValueError::OutOfRange { min, max })
    }
}

macro_rules! bounded {
    ($ty:ident, $min:expr, $max:expr) => {
        impl TryFrom<u64> for $ty {
            type Error = ValueError;
            fn try_from(n: u64) -> Result<Self, ValueError> {
                if ($min..=$max).contains(&n) {
                    Ok($ty(n))
                } else {
                    Err(ValueError::OutOfRange {
                        min: $min,
                        max: $max,
                    })
                }
            }
        }
        impl From<$ty> for u64 {
            fn from(v: $ty) -> u64 {
                v.0
            }
        }
    };
}
bounded!(Price, 0, Price::MAX);
bounded!(Quantity, Quantity::MIN, Quantity::MAX);

macro_rules! string_newtype {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                $ty::parse(&s)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype!(UserId);
string_newtype!(StoreId);
string_newtype!(CoffeeName);

impl TryFrom<Uuid> for OrderId {
    type Error = ValueError;
    fn try_from(uuid: Uuid) -> Result<Self, ValueError> {
        if uuid.get_version_num() == 7 {
            Ok(OrderId(uuid))
        } else {
            Err(ValueError::InvalidOrderId)
        }
    }
}

impl From<OrderId> for Uuid {
    fn from(id: OrderId) -> Uuid {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
