//! Verifying one access token: its header names an allowed algorithm and a
//! key the issuer publishes for it, the signature holds, and so do the
//! issuer, the audience, `exp` and `nbf` (with the configured leeway); the
//! user claim fits the `user_id` rule. It must be an access token: an ID
//! token signed by the same issuer is refused even when its audience
//! matches ([`access_token`]).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};

use domain::{StoreId, UserId};

use super::cache::Verified;
use super::keys::{KeySet, Lookup, ALLOWED};
use super::{AuthConfig, Identity, Roles, StoreScope};

/// The longest token read: a JWT carrying roles is well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. The texts are fixed (never the token's own
/// content), so they can travel into `WWW-Authenticate` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted (RS256, ES256, EdDSA)")]
    Algorithm,
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token lacks a required claim")]
    MissingClaim,
    #[error("the token's user claim is not a valid user id")]
    User,
    #[error("the token is not an access token")]
    NotAccessToken,
    /// Not the token's fault: no key could be fetched yet.
    #[error("the identity provider's keys cannot be fetched")]
    KeysUnavailable,
}

/// `token`'s caller from the cache of verified tokens, if it is there.
pub(super) fn remembered(keys: &KeySet, verified: &Verified, token: &str) -> Option<Identity> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    verified.get(token, now, keys.version())
}

pub(super) async fn verify(
    config: &AuthConfig,
    keys: &KeySet,
    verified: &Verified,
    token: &str,
) -> Result<Identity, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Some(identity) = verified.get(token, now, keys.version()) {
        return Ok(identity);
    }
    let version = keys.version();
    let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !ALLOWED.contains(&header.alg) {
        return Err(TokenError::Algorithm);
    }
    let candidates = match keys.lookup(header.kid.as_deref(), header.alg).await {
        Lookup::Found(keys) => keys,
        Lookup::Unknown => return Err(TokenError::UnknownKey),
        Lookup::Unavailable => return Err(TokenError::KeysUnavailable),
    };
    let validation = validation(config, header.alg);
    let mut refused = TokenError::Signature;
    for key in candidates {
        // What a flood of forged tokens would cost: the metric says how many.
        metrics::counter!("auth_signature_checks_total").increment(1);
        match decode::<Map<String, Value>>(token, &key.decoding, &validation) {
            Ok(data) => {
                access_token(header.typ.as_deref(), &data.claims)?;
                let identity = identity(config, &data.claims)?;
                verified.put(
                    token,
                    &identity,
                    validity(config, &data.claims),
                    now,
                    version,
                );
                return Ok(identity);
            }
            Err(e) => refused = refusal(e.kind()),
        }
        // Only a bad signature makes the next key worth trying.
        if refused != TokenError::Signature {
            break;
        }
    }
    Err(refused)
}

/// Whether a verified JWT is an access token. RFC 9068's `typ: at+jwt` says
/// so; a plain `JWT` (or no `typ`) is taken, as many providers issue, unless
/// it carries what only an ID token carries (OpenID Connect Core 1.0: a
/// `nonce`, an `at_hash` or `c_hash`; Keycloak's `typ` claim `ID`). Any other
/// `typ` (`logout+jwt`, `dpop+jwt`, …) is not an access token.
fn access_token(typ: Option<&str>, claims: &Map<String, Value>) -> Result<(), TokenError> {
    let typ = typ.map(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    });
    match typ.as_deref() {
        Some("at+jwt") => Ok(()),
        None | Some("jwt") => {
            let id_token = ["nonce", "at_hash", "c_hash"]
                .iter()
                .any(|name| claims.contains_key(*name))
                || claims
                    .get("typ")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("id"));
            if id_token {
                Err(TokenError::NotAccessToken)
            } else {
                Ok(())
            }
        }
        Some(_) => Err(TokenError::NotAccessToken),
    }
}

fn validation(config: &AuthConfig, algorithm: Algorithm) -> Validation {
    let mut v = Validation::new(algorithm);
    v.algorithms = vec![algorithm];
    v.leeway = config.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[config.issuer.as_str()]);
    v.set_audience(&[config.audience.as_str()]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}

fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        _ => TokenError::Malformed,
    }
}

/// From when until when (unix seconds, leeway included) a verified token
/// stays valid.
fn validity(config: &AuthConfig, claims: &Map<String, Value>) -> (i64, i64) {
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(0);
    let at = |name: &str| claims.get(name).and_then(Value::as_i64);
    (
        at("nbf").map_or(i64::MIN, |nbf| nbf - leeway),
        at("exp").map_or(i64::MIN, |exp| exp + leeway),
    )
}

/// The caller a verified token names.
fn identity(config: &AuthConfig, claims: &Map<String, Value>) -> Result<Identity, TokenError> {
    let user = match claim(claims, &config.user_claim) {
        Some(Value::String(user)) => UserId::parse(user).map_err(|_| TokenError::User)?,
        Some(_) => return Err(TokenError::User),
        None => return Err(TokenError::MissingClaim),
    };
    let roles = roles(claim(claims, &config.roles_claim));
    Ok(Identity {
        user,
        stores: if roles.operator {
            StoreScope::Every
        } else {
            stores(claim(claims, &config.stores_claim))
        },
        roles,
        // Required and checked by the validation.
        until: claims
            .get("exp")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MIN),
    })
}

/// A claim by a dotted path (`realm_access.roles`); a claim whose own name
/// has a dot is found too.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The stores a claim names (ids this service could not hold are left
/// out): an array of strings or one string separated by spaces or commas;
/// the default store when it names none.
fn stores(value: Option<&Value>) -> StoreScope {
    let mut stores = std::collections::BTreeSet::new();
    let mut add = |name: &str| {
        if let Ok(id) = StoreId::parse(name.trim()) {
            stores.insert(id);
        }
    };
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .take(StoreScope::MAX)
            .filter_map(Value::as_str)
            .for_each(&mut add),
        Some(Value::String(s)) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .take(StoreScope::MAX)
            .for_each(&mut add),
        _ => {}
    }
    if stores.is_empty() {
        stores.insert(StoreId::default_store());
    }
    StoreScope::Only(stores)
}

/// The roles this service knows among a claim's values (others are
/// ignored): an array of strings or one space-separated string.
fn roles(value: Option<&Value>) -> Roles {
    let mut roles = Roles::default();
    let mut grant = |name: &str| match name {
        "staff" => roles.staff = true,
        "operator" => roles.operator = true,
        _ => {}
    };
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .take(64)
            .filter_map(Value::as_str)
            .for_each(&mut grant),
        Some(Value::String(s)) => s.split_whitespace().take(64).for_each(&mut grant),
        _ => {}
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> AuthConfig {
        AuthConfig::new("http://issuer", "orders-api")
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn only_access_tokens_pass() {
        let plain = claims(json!({"sub": "alice"}));
        assert_eq!(access_token(Some("at+jwt"), &plain), Ok(()));
        assert_eq!(access_token(Some("application/at+JWT"), &plain), Ok(()));
        assert_eq!(access_token(Some("JWT"), &plain), Ok(()));
        assert_eq!(access_token(None, &plain), Ok(()));
        for marked in [
            json!({"sub": "alice", "nonce": "n"}),
            json!({"sub": "alice", "at_hash": "h"}),
            json!({"sub": "alice", "c_hash": "h"}),
            json!({"sub": "alice", "typ": "ID"}),
        ] {
            assert_eq!(
                access_token(Some("JWT"), &claims(marked.clone())),
                Err(TokenError::NotAccessToken),
                "{marked}"
            );
        }
        assert_eq!(
            access_token(Some("logout+jwt"), &plain),
            Err(TokenError::NotAccessToken)
        );
    }

    #[test]
    fn roles_come_from_an_array_or_a_space_separated_string() {
        let both = Roles {
            staff: true,
            operator: true,
        };
        assert_eq!(roles(Some(&json!(["staff", "operator", "x"]))), both);
        assert_eq!(roles(Some(&json!("operator staff"))), both);
        assert_eq!(roles(Some(&json!(42))), Roles::default());
        assert_eq!(roles(None), Roles::default());
    }

    #[test]
    fn staff_work_at_the_stores_their_token_names_or_at_the_default_store() {
        let only = |ids: &[&str]| {
            StoreScope::Only(
                ids.iter()
                    .map(|i| StoreId::parse(i).expect("a store id"))
                    .collect(),
            )
        };
        assert_eq!(
            stores(Some(&json!(["gangnam", "jamsil"]))),
            only(&["gangnam", "jamsil"])
        );
        assert_eq!(
            stores(Some(&json!("gangnam, jamsil"))),
            only(&["gangnam", "jamsil"])
        );
        // Ids no store can have are left out; none left is the default store.
        assert_eq!(
            stores(Some(&json!(["no/such", "gangnam"]))),
            only(&["gangnam"])
        );
        assert_eq!(stores(Some(&json!(["no/such"]))), only(&["main"]));
        assert_eq!(stores(Some(&json!(42))), only(&["main"]));
        assert_eq!(stores(None), only(&["main"]));
        // Operators reach every store, whatever the claim says.
        let id = identity(
            &config(),
            &claims(json!({"sub": "ops", "roles": ["operator"], "stores": ["gangnam"]})),
        );
        assert_eq!(id.map(|i| i.stores), Ok(StoreScope::Every));
    }

    #[test]
    fn a_dotted_claim_reaches_into_objects() {
        let mut c = config();
        c.roles_claim = "realm_access.roles".to_owned();
        let id = identity(
            &c,
            &claims(json!({"sub": "bob", "realm_access": {"roles": ["staff"]}})),
        );
        assert_eq!(id.map(|i| i.roles.staff), Ok(true));
    }

    #[test]
    fn a_user_claim_outside_the_user_id_rule_is_refused() {
        let c = config();
        for sub in [
            json!("auth0|123"),
            json!(""),
            json!("a".repeat(101)),
            json!(7),
        ] {
            assert_eq!(
                identity(&c, &claims(json!({ "sub": sub }))),
                Err(TokenError::User)
            );
        }
        assert_eq!(
            identity(&c, &claims(json!({}))),
            Err(TokenError::MissingClaim)
        );
        let mut by_name = config();
        by_name.user_claim = "preferred_username".to_owned();
        let id = identity(
            &by_name,
            &claims(json!({"sub": "auth0|123", "preferred_username": "alice"})),
        );
        assert_eq!(
            id.map(|i| i.user.as_str().to_owned()),
            Ok("alice".to_owned())
        );
    }
}
