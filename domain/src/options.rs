//! A drink's options: served hot or iced, regular or large. Codes travel in
//! events and JSON; the Korean labels shops use (`핫`/`아이스`, `레귤러`/`라지`)
//! are accepted wherever a client sends an option.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ValueError;

/// Hot or iced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Temperature {
    #[default]
    Hot,
    Iced,
}

/// The cup size.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    #[default]
    Regular,
    Large,
}

/// Everything a customer chooses about a drink besides its name. Orders
/// placed before options existed read as the default: hot, regular.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrinkOptions {
    pub temperature: Temperature,
    pub size: Size,
}

/// An option's machine code and the label shops use, and parsing from either.
pub trait OptionValue: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn code(self) -> &'static str;
    fn label(self) -> &'static str;

    /// Parses a code (any case) or a label, ignoring surrounding whitespace.
    fn parse(input: &str) -> Result<Self, ValueError> {
        let input = input.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.code().eq_ignore_ascii_case(input) || v.label() == input)
            .ok_or_else(|| ValueError::UnknownOption {
                valid: Self::ALL
                    .iter()
                    .map(|v| format!("{} ({})", v.code(), v.label()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl OptionValue for Temperature {
    const ALL: &'static [Self] = &[Temperature::Hot, Temperature::Iced];
    fn code(self) -> &'static str {
        match self {
            Temperature::Hot => "hot",
            Temperature::Iced => "iced",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Temperature::Hot => "핫",
            Temperature::Iced => "아이스",
        }
    }
}

impl OptionValue for Size {
    const ALL: &'static [Self] = &[Size::Regular, Size::Large];
    fn code(self) -> &'static str {
        match self {
            Size::Regular => "regular",
            Size::Large => "large",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Size::Regular => "레귤러",
            Size::Large => "라지",
        }
    }
}

impl fmt::Display for Temperature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Temperature {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Temperature::parse(s)
    }
}

impl std::str::FromStr for Size {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Size::parse(s)
    }
}

impl DrinkOptions {
    /// Reads the `options` member of a place-order body, each option not
    /// said being the default (hot, regular) ([`AskedOptions::from_json`]).
    pub fn from_json(value: Option<&Value>) -> Result<Self, Vec<(&'static str, ValueError)>> {
        AskedOptions::from_json(value).map(|asked| DrinkOptions {
            temperature: asked.temperature.unwrap_or_default(),
            size: asked.size.unwrap_or_default(),
        })
    }
}

/// The options a client said for a line; each one it did not say is `None`
/// (the menu then gives the drink's own default, [`crate::Menu::complete`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AskedOptions {
    pub temperature: Option<Temperature>,
    pub size: Option<Size>,
}

impl AskedOptions {
    /// Reads the `options` member of a place-order body: absent or `null`
    /// says nothing; otherwise an object with optional `temperature` and
    /// `size` (codes or labels). Errors name the field at fault
    /// (`options.size`), so a client sees every problem at once.
    pub fn from_json(value: Option<&Value>) -> Result<Self, Vec<(&'static str, ValueError)>> {
        let map = match value {
            None | Some(Value::Null) => return Ok(AskedOptions::default()),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(vec![("options", ValueError::NotAnObject)]),
        };
        let mut errors = Vec::new();
        if let Some(unknown) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "temperature" | "size"))
        {
            errors.push((
                "options",
                ValueError::UnknownMember {
                    name: unknown.chars().take(40).collect(),
                },
            ));
        }
        let temperature = option_field::<Temperature>(map, "temperature", &mut errors);
        let size = option_field::<Size>(map, "size", &mut errors);
        if errors.is_empty() {
            Ok(AskedOptions { temperature, size })
        } else {
            Err(errors)
        }
    }
}

fn option_field<T: OptionValue>(
    map: &Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<(&'static str, ValueError)>,
) -> Option<T> {
    let field = match name {
        "temperature" => "options.temperature",
        _ => "options.size",
    };
    match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => T::parse(s).map_err(|e| errors.push((field, e))).ok(),
        Some(_) => {
            errors.push((field, ValueError::NotText));
            None
        }
    }
}
