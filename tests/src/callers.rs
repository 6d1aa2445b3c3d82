//! Who a test's request is sent as ([`As`]), and how a test's application
//! authenticates callers ([`Auth`]).

use std::sync::Arc;

use crate::oidc::Provider;

/// Who a request is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum As {
    /// No credentials.
    Nobody,
    /// A signed-in user without roles.
    Customer(String),
    /// A member of staff (user `barista`).
    Staff,
    /// An operator (user `ops`).
    Operator,
    /// This `Authorization` header value, as it is.
    Header(String),
}

impl As {
    pub fn customer(user: &str) -> As {
        As::Customer(user.to_owned())
    }

    /// The caller a request to `path` is sent as unless the test says
    /// otherwise: the path's user on `/order-ms/{user}/…`, staff on
    /// `/delivery-ms`, an operator on `/metrics`, nobody elsewhere.
    pub fn for_path(path: &str) -> As {
        let path = path.split('?').next().unwrap_or_default();
        let mut segments = path.trim_start_matches('/').split('/');
        match (segments.next(), segments.next()) {
            (Some("order-ms"), Some(user)) if !user.is_empty() => {
                let valid = user.len() <= 100
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                As::Customer(if valid {
                    user.to_owned()
                } else {
                    "someone".to_owned()
                })
            }
            (Some("delivery-ms"), _) => As::Staff,
            (Some("metrics"), _) => As::Operator,
            _ => As::Nobody,
        }
    }
}

/// How a test's application authenticates callers.
#[derive(Clone, Default)]
pub enum Auth {
    /// Tokens from the test binary's shared provider (as deployed).
    #[default]
    Shared,
    /// Tokens from a provider of the test's own.
    Own(Arc<Provider>),
    /// No issuer: the unauthenticated development mode.
    Off,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Shared => "Shared",
            Auth::Own(_) => "Own",
            Auth::Off => "Off",
        })
    }
}
