//! The pages and their assets, compiled into the binary: nothing outside
//! the process is needed to serve them (no CDN, no other web server, no
//! files next to the binary). Each answer carries a strong `ETag` (a hash
//! of its bytes) and `Cache-Control: no-cache`: a browser keeps a copy and
//! asks each time whether it is still current (304), so a new build's
//! pages are never mixed with an old build's scripts.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: LazyLock<HeaderValue>,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../../assets/", $name)),
            etag: LazyLock::new(|| etag(include_bytes!(concat!("../../../assets/", $name)))),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";

pub static CUSTOMER_PAGE: Asset = asset!("index.html", HTML);
pub static BOARD_PAGE: Asset = asset!("board.html", HTML);
pub static FORBIDDEN_PAGE: Asset = asset!("forbidden.html", HTML);

/// What `/assets/{name}` serves.
static ASSETS: [Asset; 4] = [
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("customer.js", "text/javascript; charset=utf-8"),
    asset!("board.js", "text/javascript; charset=utf-8"),
];

fn etag(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

impl Asset {
    /// The asset, or 304 when the request's `If-None-Match` names it.
    pub fn respond(&'static self, request: &HeaderMap) -> Response {
        self.respond_with(StatusCode::OK, request)
    }

    pub fn respond_with(&'static self, status: StatusCode, request: &HeaderMap) -> Response {
        let etag = &*self.etag;
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes());
        let headers = [
            (header::ETAG, etag.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ];
        if fresh && status == StatusCode::OK {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let mut response = (status, headers, self.bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        response
    }
}

/// `GET /assets/{name}`: a stylesheet or script of the pages.
pub async fn serve(Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => asset.respond(&request),
        None => ApiError::RouteNotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_html_and_tags_differ_per_file() {
        assert_eq!(CUSTOMER_PAGE.content_type, HTML);
        assert_eq!(BOARD_PAGE.content_type, HTML);
        let tags: std::collections::HashSet<_> =
            ASSETS.iter().map(|a| a.etag.as_bytes().to_vec()).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[test]
    fn a_matching_if_none_match_is_answered_304() {
        let asset = &ASSETS[0];
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, asset.etag.clone());
        assert_eq!(asset.respond(&headers).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset.respond(&headers).status(), StatusCode::OK);
    }
}
