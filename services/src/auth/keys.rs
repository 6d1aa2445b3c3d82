//! The issuer's signing keys: found through its discovery document, cached,
//! fetched again on a timer and, at most once per [`REFETCH_GAP`], when a
//! token names a key id the cache does not know (the provider rotated its
//! keys). A failed fetch keeps the keys already known, so tokens signed with
//! them are still accepted while the provider is down.
//!
//! The set is judged by its material, not its names: its version moves
//! whenever a fetch finds other key bytes, so a key replaced under the same
//! `kid` (or a lone key without one) stops what was verified with the old
//! one at once. The keys are fetched over https only (plain http to this
//! machine, as for the issuer), and a redirect is never followed: the
//! discovery document names where the keys are, nothing else may.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The least time between two fetches asked for by unknown key ids, so that
/// tokens with made-up key ids cannot make the service hammer the provider.
pub const REFETCH_GAP: Duration = Duration::from_secs(10);

/// How long one fetch of the discovery document or the keys may take.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The algorithms a token may be signed with: asymmetric only, so a public
/// key can never be used as an HMAC secret, and never `none`.
pub const ALLOWED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the key set at {url} has no key this service can use (RS256, ES256, EdDSA)")]
    NoUsableKey { url: String },
}

/// One verification key and the one algorithm it verifies.
#[derive(Clone)]
pub struct Key {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// The cached keys, shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    /// Bumped whenever a fetch finds other key material than before.
    version: std::sync::atomic::AtomicU64,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Held while a fetch runs, so that concurrent requests with an unknown
    /// key id wait for one fetch instead of each starting their own; holds
    /// when an unknown key id last made it fetch.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, Key>,
    /// Keys published without a key id (tokens without one try these).
    unnamed: Vec<Key>,
    /// Whether a fetch ever succeeded.
    loaded: bool,
    /// SHA-256 of the usable keys as published (ids and material).
    fingerprint: [u8; 32],
}

/// What a lookup found.
pub enum Lookup {
    Found(Vec<Key>),
    /// No key by that id (or none of that algorithm), even after asking.
    Unknown,
    /// No key was ever fetched: the provider has not answered yet.
    Unavailable,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// The keys of `issuer`, fetched with `http` (a client that follows no
    /// redirects: [`crate::auth::AuthConfig::issuer_client`]).
    pub fn new(issuer: &str, http: reqwest::Client) -> KeySet {
        KeySet {
            inner: Arc::new(Inner {
                issuer: issuer.to_owned(),
                version: std::sync::atomic::AtomicU64::new(0),
                http,
                keys: RwLock::new(Keys::default()),
                fetching: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The keys that may verify a token naming `kid` (or none) signed with
    /// `algorithm`. An unknown key id fetches the key set again, unless that
    /// was done less than [`REFETCH_GAP`] ago.
    pub async fn lookup(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup {
        if let Some(found) = self.find(kid, algorithm) {
            return Lookup::Found(found);
        }
        {
            let mut last = self.inner.fetching.lock().await;
            // Someone else may have fetched while this request waited.
            if let Some(found) = self.find(kid, algorithm) {
                return Lookup::Found(found);
            }
            if last.is_none_or(|at| at.elapsed() >= REFETCH_GAP) {
                *last = Some(Instant::now());
                if let Err(e) = self.fetch().await {
                    tracing::warn!(error = %e, "cannot fetch the identity provider's keys");
                }
            }
        }
        match self.find(kid, algorithm) {
            Some(found) => Lookup::Found(found),
            None if self.loaded() => Lookup::Unknown,
            None => Lookup::Unavailable,
        }
    }

    /// The version of the key set: it changes when the issuer publishes
    /// other keys (what was verified against the old ones is checked again).
    pub fn version(&self) -> u64 {
        self.inner
            .version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn loaded(&self) -> bool {
        self.inner.keys.read().map(|k| k.loaded).unwrap_or(false)
    }

    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Vec<Key>> {
        let keys = self.inner.keys.read().ok()?;
        let found: Vec<Key> = match kid {
            Some(kid) => keys.by_id.get(kid).into_iter().cloned().collect(),
            None => keys
                .unnamed
                .iter()
                .chain(keys.by_id.values())
                .cloned()
                .collect(),
        };
        let found: Vec<Key> = found
            .into_iter()
            .filter(|k| k.algorithm == algorithm)
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Fetches the keys now (at start, and on the timer; this does not count
    /// against the unknown key ids' [`REFETCH_GAP`]).
    pub async fn refresh(&self) -> Result<(), KeysError> {
        let _one_at_a_time = self.inner.fetching.lock().await;
        self.fetch().await
    }

    /// Fetches the keys every `every` until `shutdown`; a failure keeps the
    /// keys known and is retried sooner (every [`REFETCH_GAP`]).
    pub async fn keep_fresh(self, every: Duration, shutdown: CancellationToken) {
        let mut wait = every;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = match self.refresh().await {
                Ok(()) => every,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the identity provider's keys; keeping the ones known");
                    REFETCH_GAP.min(every)
                }
            };
        }
    }

    async fn fetch(&self) -> Result<(), KeysError> {
        let issuer = self.inner.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name
        // the issuer it was fetched for.
        if discovery.issuer.trim_end_matches('/') != issuer {
            return Err(KeysError::IssuerMismatch {
                expected: self.inner.issuer.clone(),
                found: discovery.issuer.chars().take(200).collect(),
            });
        }
        check_jwks_uri(&discovery.jwks_uri)?;
        let raw: RawKeySet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = Keys {
            loaded: true,
            ..Keys::default()
        };
        let mut published = Vec::new();
        for value in raw.keys {
            // A key of a kind this build does not know is passed over, not
            // a reason to refuse the whole set.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                continue;
            };
            let Some(key) = usable(&jwk) else { continue };
            published.push(value.to_string());
            match jwk.common.key_id {
                Some(kid) => {
                    keys.by_id.insert(kid, key);
                }
                None => keys.unnamed.push(key),
            }
        }
        if keys.by_id.is_empty() && keys.unnamed.is_empty() {
            return Err(KeysError::NoUsableKey {
                url: discovery.jwks_uri,
            });
        }
        keys.fingerprint = fingerprint(published);
        let mut ids: Vec<String> = keys.by_id.keys().cloned().collect();
        ids.sort();
        if let Ok(mut current) = self.inner.keys.write() {
            let changed = !current.loaded || current.fingerprint != keys.fingerprint;
            *current = keys;
            if changed {
                self.inner
                    .version
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        tracing::debug!(?ids, "identity provider keys fetched");
        Ok(())
    }

    /// GETs `url` as JSON, reading at most [`MAX_DOCUMENT_BYTES`].
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, KeysError> {
        let failed = |message: String| KeysError::Fetch {
            url: url.to_owned(),
            message,
        };
        let mut response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(e.to_string()))?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(failed(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("not the expected JSON: {e}")))
    }
}

/// The SHA-256 of a key set's usable keys, each as published (its id,
/// parameters and material), in an order that does not depend on the
/// document's.
fn fingerprint(mut published: Vec<String>) -> [u8; 32] {
    use sha2::Digest;
    published.sort_unstable();
    let mut hash = sha2::Sha256::new();
    for key in &published {
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key.as_bytes());
    }
    hash.finalize().into()
}

/// A key set URL the keys may be fetched from: https, or plain http to this
/// machine only, as for the issuer (`config::access::check_issuer`): keys
/// fetched in clear over a network could be replaced on the way.
fn check_jwks_uri(url: &str) -> Result<(), KeysError> {
    let refused = |why: &str| KeysError::Fetch {
        url: url.chars().take(200).collect(),
        message: why.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| refused("not a URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        _ => Err(refused(
            "the key set must be served over https (plain http only on this machine)",
        )),
    }
}

/// Whether `url` names this machine (`localhost` or a loopback address).
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The key a JWK publishes for signatures with one of [`ALLOWED`], if it
/// does: the algorithm is the one the key names, or the one its type and
/// curve imply; a key for encryption, or for another algorithm, is not used.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // Symmetric keys (`oct`) and other curves are never used.
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Algorithm::EdDSA,
        Some(_) => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        algorithm,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_material_not_the_ids_or_their_order() {
        let a = r#"{"kid":"k1","kty":"RSA","n":"AAA","e":"AQAB"}"#.to_owned();
        let b = r#"{"kid":"k2","kty":"RSA","n":"BBB","e":"AQAB"}"#.to_owned();
        let same_id_new_material = r#"{"kid":"k1","kty":"RSA","n":"CCC","e":"AQAB"}"#.to_owned();
        assert_eq!(
            fingerprint(vec![a.clone(), b.clone()]),
            fingerprint(vec![b.clone(), a.clone()]),
            "the document's order does not matter"
        );
        assert_ne!(
            fingerprint(vec![a.clone(), b.clone()]),
            fingerprint(vec![same_id_new_material, b]),
            "a key replaced under the same kid is another set"
        );
        assert_ne!(fingerprint(vec![a.clone()]), fingerprint(vec![]));
    }

    #[test]
    fn keys_come_over_https_or_from_this_machine_only() {
        for good in [
            "https://login.example.com/jwks",
            "http://127.0.0.1:8081/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(check_jwks_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "http://login.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/keys",
            "not a url",
        ] {
            assert!(check_jwks_uri(bad).is_err(), "{bad}");
        }
    }
}
