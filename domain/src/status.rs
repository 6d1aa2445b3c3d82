//! The order lifecycle: status codes, their Korean labels as shops use them,
//! and which moves between them are allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValueError;

/// Where an order is in its lifecycle.
///
/// ```text
/// received ─▶ preparing ─▶ delivering ─▶ delivered
///     │            │
///     └────────────┴─▶ cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Preparing,
    Delivering,
    Delivered,
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] = [
        Status::Received,
        Status::Preparing,
        Status::Delivering,
        Status::Delivered,
        Status::Cancelled,
    ];

    /// The stable machine-readable code (`received`, …).
    pub const fn code(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Preparing => "preparing",
            Status::Delivering => "delivering",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }

    /// The Korean label shops use (`접수완료`, …).
    pub const fn label(self) -> &'static str {
        match self {
            Status::Received => "접수완료",
            Status::Preparing => "제작중",
            Status::Delivering => "배송중",
            Status::Delivered => "배송완료",
            Status::Cancelled => "취소",
        }
    }

    /// The statuses an order in this status may move to next.
    pub const fn next(self) -> &'static [Status] {
        match self {
            Status::Received => &[Status::Preparing, Status::Cancelled],
            Status::Preparing => &[Status::Delivering, Status::Cancelled],
            Status::Delivering => &[Status::Delivered],
            Status::Delivered | Status::Cancelled => &[],
        }
    }

    pub fn can_move_to(self, to: Status) -> bool {
        self.next().contains(&to)
    }

    /// A final status has no way out.
    pub const fn is_final(self) -> bool {
        self.next().is_empty()
    }

    /// Parses a code (case-insensitive) or a Korean label, ignoring surrounding
    /// whitespace: the forms the original clients send.
    pub fn parse(input: &str) -> Result<Status, ValueError> {
        let input = input.trim();
        Status::ALL
            .into_iter()
            .find(|s| s.code().eq_ignore_ascii_case(input) || s.label() == input)
            .ok_or(ValueError::UnknownStatus)
    }

    /// `received (접수완료), preparing (제작중), …` for error messages.
    pub fn valid_list() -> String {
        Status::ALL
            .iter()
            .map(|s| format!("{} ({})", s.code(), s.label()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Status {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_labels_parse_back_to_their_status() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.code()), Ok(s));
            assert_eq!(Status::parse(s.label()), Ok(s));
            assert_eq!(Status::parse(&s.code().to_uppercase()), Ok(s));
        }
        assert_eq!(Status::parse(" 제작중 "), Ok(Status::Preparing));
        assert_eq!(Status::parse("shipped"), Err(ValueError::UnknownStatus));
        assert_eq!(Status::parse(""), Err(ValueError::UnknownStatus));
    }

    #[test]
    fn only_delivered_and_cancelled_are_final() {
        let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, vec![Status::Delivered, Status::Cancelled]);
    }

    #[test]
    fn no_status_moves_back_to_received() {
        assert!(Status::ALL.iter().all(|s| !s.can_move_to(Status::Received)));
    }
}
