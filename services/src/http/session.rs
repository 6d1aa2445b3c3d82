//! The cookie session of a signed-in browser, as every part of the edge
//! reads it: who it stands for ([`SignedIn::identity`]), and the CSRF token
//! its writes must echo. The pages' sign-in writes it
//! ([`super::pages::signin`]); caller authentication reads it
//! ([`super::access`]).

use axum::http::HeaderMap;
use domain::UserId;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::auth::{Identity, Roles};

/// The session key of a signed-in user.
pub(crate) const USER: &str = "user";

/// A signed-in browser, as its session holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub(crate) user: String,
    pub(crate) staff: bool,
    pub(crate) operator: bool,
    /// Echoed by the page in `X-CSRF-Token` on every write.
    pub(crate) csrf: String,
    /// The provider's ID token, for ending the provider's session too.
    pub(crate) id_token: String,
    /// Unix seconds: the access token's end.
    pub(crate) expires_at: i64,
}

impl SignedIn {
    /// The caller this session stands for; `None` when it expired or no
    /// longer names a valid user.
    pub fn identity(&self) -> Option<Identity> {
        if self.expires_at <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return None;
        }
        Some(Identity {
            user: UserId::parse(&self.user).ok()?,
            roles: Roles {
                staff: self.staff,
                operator: self.operator,
            },
        })
    }

    /// Whether `headers` carry this session's CSRF token (compared in
    /// constant time).
    pub fn csrf_matches(&self, headers: &HeaderMap) -> bool {
        let Some(sent) = headers.get(CSRF_HEADER).map(|v| v.as_bytes()) else {
            return false;
        };
        let expected = self.csrf.as_bytes();
        sent.len() == expected.len()
            && sent
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The header a page's writes carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in user of `session`, if any (and not expired).
pub async fn signed_in(session: &Session) -> Result<Option<SignedIn>, anyhow::Error> {
    let user: Option<SignedIn> = session
        .get(USER)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the session: {e}"))?;
    Ok(user.filter(|u| u.identity().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let user = SignedIn {
            user: "alice".into(),
            staff: false,
            operator: false,
            csrf: "token-123".into(),
            id_token: String::new(),
            expires_at: i64::MAX,
        };
        let mut headers = HeaderMap::new();
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-12".parse().expect("a header value"));
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-123".parse().expect("a header value"));
        assert!(user.csrf_matches(&headers));
        let expired = SignedIn {
            expires_at: 0,
            ..user
        };
        assert!(expired.identity().is_none());
    }
}
