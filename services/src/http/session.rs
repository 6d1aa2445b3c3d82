//! The cookie session of a signed-in browser, as every part of the edge
//! reads it: who it stands for ([`SignedIn::identity`]), and the CSRF token
//! its writes must echo. The pages' sign-in writes it
//! ([`super::pages::signin`]); caller authentication reads it
//! ([`super::access`]).

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::auth::{Authenticator, Identity, TokenError};

/// The session key of a signed-in user.
pub(crate) const USER: &str = "user";

/// A signed-in browser, as its session holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub(crate) user: String,
    /// Echoed by the page in `X-CSRF-Token` on every write.
    pub(crate) csrf: String,
    /// The provider's ID token, for ending the provider's session too.
    pub(crate) id_token: String,
    /// The access token the sign-in verified: every use of the session
    /// judges it again as a bearer token is judged ([`SignedIn::judge`]).
    pub(crate) access_token: String,
    /// Unix seconds: the session's end (the access token's `exp`, or
    /// sooner).
    pub(crate) expires_at: i64,
}

impl SignedIn {
    /// The caller this session stands for now: its access token verified as
    /// a bearer token is (remembered, or checked again once the issuer's
    /// keys changed), ending at the sooner of the token's and the session's
    /// end. `Ok(None)`: it stands for nobody any more (expired, its key
    /// withdrawn, its user no longer valid).
    pub async fn judge(&self, auth: &Authenticator) -> Result<Option<Identity>, TokenError> {
        if self.expires_at <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return Ok(None);
        }
        let verified = match auth.remembered(&self.access_token) {
            Some(identity) => identity,
            None => match auth.verify(&self.access_token).await {
                Ok(identity) => identity,
                Err(TokenError::KeysUnavailable) => return Err(TokenError::KeysUnavailable),
                Err(why) => {
                    tracing::debug!(reason = %why, "a session's access token no longer passes");
                    return Ok(None);
                }
            },
        };
        Ok(Some(Identity {
            until: verified.until.min(self.expires_at),
            ..verified
        }))
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

/// The name a session's end is announced under (`notify::SESSIONS`): a
/// digest of its id, never the id itself, which is the cookie's secret.
pub fn ended_key(id: &tower_sessions::session::Id) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The header a page's writes carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The signed-in user of `session`, if any (and not expired). A session
/// this build cannot read (written by an older one, whose `SignedIn` had
/// other fields, or by another version of the session store) stands for
/// nobody: the browser is signed out and signs in again, instead of being
/// refused with 503 for as long as its cookie lives. Only the store being
/// unreachable is an error.
pub async fn signed_in(session: &Session) -> Result<Option<SignedIn>, anyhow::Error> {
    use tower_sessions::session::Error;
    use tower_sessions::session_store::Error as StoreError;
    let user: Option<SignedIn> = match session.get(USER).await {
        Ok(user) => user,
        Err(Error::SerdeJson(_) | Error::Store(StoreError::Decode(_))) => {
            tracing::info!("a session this build cannot read is treated as signed out");
            None
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read the session: {e}")),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(user.filter(|u| u.expires_at > now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let user = SignedIn {
            user: "alice".into(),
            csrf: "token-123".into(),
            id_token: String::new(),
            access_token: String::new(),
            expires_at: i64::MAX,
        };
        let mut headers = HeaderMap::new();
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-12".parse().expect("a header value"));
        assert!(!user.csrf_matches(&headers));
        headers.insert(CSRF_HEADER, "token-123".parse().expect("a header value"));
        assert!(user.csrf_matches(&headers));
    }
}
