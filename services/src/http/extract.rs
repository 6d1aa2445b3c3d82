//! Extractors that turn the raw request into checked input, answering with
//! problem+json (never axum's plain-text rejections) when they cannot.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use domain::{Metadata, OrderId, UserId};
use projections::consistency::Freshness;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Path parameters, with a problem+json rejection.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e: PathRejection| ApiError::InvalidPath {
                field: "path",
                message: e.body_text(),
            })
    }
}

/// Parses the `{user_id}` path segment (400 when malformed).
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::InvalidPath {
        field: "user_id",
        message: e.to_string(),
    })
}

/// Parses the `{order_id}` path segment. A malformed id names no order that
/// can exist, so it is answered exactly like a missing one: 404.
pub fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|_| ApiError::OrderNotFound)
}

/// A request body as a JSON object. Accepts `application/json` (and `+json`),
/// form data as the original clients could send it, and a body without a
/// content type if it is JSON. Size is bounded by the router's body limit.
pub struct Fields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let kind = body_kind(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedBody(format!(
                        "the request body could not be read: {}",
                        e.body_text()
                    ))
                }
            })?;
        // `curl -d '{…}'` labels JSON as form data: a body that is clearly a
        // JSON object is read as one, whatever the label says.
        let looks_like_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        match kind {
            BodyKind::Form if !looks_like_json => serde_urlencoded::from_bytes::<
                Vec<(String, String)>,
            >(&bytes)
            .map(|pairs| {
                Fields(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                )
            })
            .map_err(|e| ApiError::MalformedBody(format!("the form body cannot be read: {e}"))),
            BodyKind::Json | BodyKind::Form => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(Fields(map)),
                Ok(_) => Err(ApiError::MalformedBody(
                    "the request body must be a JSON object".into(),
                )),
                Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => Err(
                    ApiError::MalformedBody("the request body is empty; send a JSON object".into()),
                ),
                Err(e) => Err(ApiError::MalformedBody(format!(
                    "the request body is not valid JSON: {e}"
                ))),
            },
        }
    }
}

enum BodyKind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let mime = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType)?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyKind::Json),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The context a request records with its events.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Option<String>,
}

impl RequestContext {
    /// Event metadata for a command issued by `who` in this request. The
    /// request id is the correlation id of everything the request causes.
    pub fn metadata(&self, who: String) -> Metadata {
        Metadata {
            correlation_id: self.request_id.clone(),
            causation_id: None,
            request_id: self.request_id.clone(),
            who: Some(who),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get(super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(RequestContext { request_id })
    }
}

/// `If-Match`: the version the client last saw, from an ETag this API sent
/// (`"3"`; `W/"3"` and a bare `3` are accepted too). `*` means "any version".
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let invalid = || ApiError::InvalidHeader {
            header: "If-Match",
            message: "must be an ETag this API returned, such as \"3\"".into(),
        };
        let text = value.to_str().map_err(|_| invalid())?.trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        parse_etag(text)
            .map(|v| IfMatch(Some(v)))
            .ok_or_else(invalid)
    }
}

/// The version in an ETag this API produced, if `text` is one.
pub fn parse_etag(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub struct IdempotencyKeyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKeyHeader(None));
        };
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ApiError::InvalidHeader {
                header: "Idempotency-Key",
                message: "must be 1 to 255 visible ASCII characters".into(),
            })?;
        Ok(IdempotencyKeyHeader(Some(key.to_owned())))
    }
}

/// What a read asks of the read model: `X-Log-Position: N` (the header a
/// write returned) or `Prefer: consistency=strong` (RFC 7240 preference).
pub struct ReadFreshness(pub Freshness);

impl<S: Send + Sync> FromRequestParts<S> for ReadFreshness {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if let Some(value) = parts.headers.get(super::LOG_POSITION) {
            let position = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::InvalidHeader {
                    header: "X-Log-Position",
                    message: "must be a log position a write returned (a positive integer)".into(),
                })?;
            return Ok(ReadFreshness(Freshness::Position(position)));
        }
        let strong = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ';']))
            .any(|pref| {
                pref.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("consistency")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("strong")
                })
            });
        Ok(ReadFreshness(if strong {
            Freshness::Strong
        } else {
            Freshness::Any
        }))
    }
}

/// The query string as name → value pairs; a query that is not
/// `application/x-www-form-urlencoded` is a 400, not a silent default.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(QueryPairs)
            .map_err(|e| ApiError::InvalidQuery {
                field: "query",
                message: e.to_string(),
            })
    }
}

impl QueryPairs {
    /// The value of `name`; given twice is an error (which one would win?).
    pub fn get(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::InvalidQuery {
                field: name,
                message: "is given more than once".into(),
            });
        }
        Ok(first.map(String::as_str))
    }

    /// `?limit=`, a whole number from 1 to `max` (400 otherwise); `None`
    /// when absent.
    pub fn limit(&self, max: i64) -> Result<Option<i64>, ApiError> {
        self.get("limit")?
            .map(|text| {
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| ApiError::InvalidQuery {
                        field: "limit",
                        message: format!("must be a whole number from 1 to {max}"),
                    })
            })
            .transpose()
    }
}
