//! Tokens already verified. A client sends the same token with every request
//! until it expires, and checking an RS256 signature costs more than routing
//! the rest of the request (`just bench-place`: `orders serve` answered 1,788
//! requests/s with a signature check per request against 2,498 without an
//! issuer). An entry keeps what the check found and until when the token is
//! valid; it is keyed by the SHA-256 of the whole token, so only the very
//! same bytes hit, and it lapses when the issuer's key set changes (a key
//! withdrawn stops its tokens at once, as without the cache).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Identity;

/// Entries kept at most; when full, expired ones go first, then all.
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    identity: Identity,
    /// Unix seconds, leeway included.
    valid_from: i64,
    valid_until: i64,
    /// The key set's version the token was checked against.
    keys: u64,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Verified {
    /// The identity `token` was found to carry, if it was checked against
    /// key set version `keys` and is valid at `now`.
    pub fn get(&self, token: &str, now: i64, keys: u64) -> Option<Identity> {
        let key = digest(token);
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(&key)?;
        if entry.keys == keys && (entry.valid_from..=entry.valid_until).contains(&now) {
            return Some(entry.identity.clone());
        }
        entries.remove(&key);
        None
    }

    /// Remembers a token that passed every check.
    pub fn put(&self, token: &str, identity: &Identity, valid: (i64, i64), now: i64, keys: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.valid_until >= now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            digest(token),
            Entry {
                identity: identity.clone(),
                valid_from: valid.0,
                valid_until: valid.1,
                keys,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Roles;

    fn alice() -> Identity {
        Identity {
            user: domain::UserId::parse("alice").expect("a user id"),
            roles: Roles::default(),
            stores: crate::auth::StoreScope::Every,
            until: 200,
        }
    }

    #[test]
    fn an_entry_serves_only_the_same_token_in_its_validity_and_key_set() {
        let cache = Verified::default();
        cache.put("a.b.c", &alice(), (100, 200), 150, 1);
        assert_eq!(cache.get("a.b.c", 150, 1), Some(alice()));
        assert_eq!(cache.get("a.b.d", 150, 1), None, "other bytes");
        assert_eq!(cache.get("a.b.c", 150, 2), None, "the keys changed");
        cache.put("a.b.c", &alice(), (100, 200), 150, 1);
        assert_eq!(cache.get("a.b.c", 201, 1), None, "expired");
        assert_eq!(
            cache.get("a.b.c", 150, 1),
            None,
            "an expired entry is dropped"
        );
    }
}
