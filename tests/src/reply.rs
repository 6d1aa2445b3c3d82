//! A response as a test reads it: status, headers and the whole body, with
//! the assertions every test makes of problems and successes.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "errors are problem+json"
        );
        let body = self.json();
        for member in ["type", "title", "status", "detail"] {
            assert!(
                body.get(member).is_some(),
                "problem lacks {member:?}: {body}"
            );
        }
        assert_eq!(body["status"], status);
        body
    }

    /// Asserts a problem with this status and returns the fields it blames
    /// (`errors[].field`).
    #[track_caller]
    pub fn fields_at_fault(&self, status: u16) -> Vec<String> {
        self.problem(status)["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self.json()
    }
}
