//! The pages and their assets, compiled into the binary: nothing outside
//! the process is needed to serve them (no CDN, no other web server, no
//! files next to the binary). Each answer carries a strong `ETag` (a hash
//! of its bytes) and `Cache-Control: no-cache`: a browser keeps a copy and
//! asks each time whether it is still current (304), so a new build's
//! pages are never mixed with an old build's scripts.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::http::PathPrefix;

/// One file as served: its bytes, their type and their tag.
pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    bytes: Bytes,
    etag: HeaderValue,
}

macro_rules! embedded {
    ($name:literal) => {
        ($name, include_bytes!(concat!("../../../assets/", $name)))
    };
}

const HTML: &str = "text/html; charset=utf-8";

/// The pages, with the path they are served under written into them.
pub struct Pages {
    pub customer: Asset,
    pub board: Asset,
    pub forbidden: Asset,
}

impl Pages {
    /// Every `{{base}}` in the pages becomes `prefix` (`""` or `/coffee`):
    /// their links, and the `orders-base` the scripts read. Every `{{head}}`
    /// first becomes what every page's head holds (`head.html`:
    /// the character set, the viewport, the base, the style sheet).
    pub fn new(prefix: &PathPrefix) -> Pages {
        let (_, head) = embedded!("head.html");
        let head = String::from_utf8_lossy(head);
        let page = |(name, bytes): (&'static str, &'static [u8])| {
            let text = String::from_utf8_lossy(bytes)
                .replace("{{head}}", head.trim_end())
                .replace("{{base}}", prefix.as_str());
            Asset::new(name, HTML, Bytes::from(text))
        };
        Pages {
            customer: page(embedded!("index.html")),
            board: page(embedded!("board.html")),
            forbidden: page(embedded!("forbidden.html")),
        }
    }
}

/// What `/assets/{name}` serves.
static ASSETS: LazyLock<[Asset; 5]> = LazyLock::new(|| {
    let asset = |(name, bytes): (&'static str, &'static [u8]), content_type| {
        Asset::new(name, content_type, Bytes::from_static(bytes))
    };
    [
        asset(embedded!("app.css"), "text/css; charset=utf-8"),
        asset(embedded!("common.js"), "text/javascript; charset=utf-8"),
        asset(embedded!("customer.js"), "text/javascript; charset=utf-8"),
        asset(embedded!("cart.js"), "text/javascript; charset=utf-8"),
        asset(embedded!("board.js"), "text/javascript; charset=utf-8"),
    ]
});

fn etag(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, bytes: Bytes) -> Asset {
        Asset {
            name,
            content_type,
            etag: etag(&bytes),
            bytes,
        }
    }

    /// The asset, or 304 when the request's `If-None-Match` names it.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        self.respond_with(StatusCode::OK, request)
    }

    pub fn respond_with(&self, status: StatusCode, request: &HeaderMap) -> Response {
        let etag = &self.etag;
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
        let mut response = (status, headers, self.bytes.clone()).into_response();
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
        let pages = Pages::new(&PathPrefix::default());
        assert_eq!(pages.customer.content_type, HTML);
        assert_eq!(pages.board.content_type, HTML);
        let tags: std::collections::HashSet<_> =
            ASSETS.iter().map(|a| a.etag.as_bytes().to_vec()).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[test]
    fn the_pages_link_under_the_prefix_and_only_there() {
        let text = |asset: &Asset| String::from_utf8_lossy(&asset.bytes).into_owned();
        let root = Pages::new(&PathPrefix::default());
        let coffee = Pages::new(&PathPrefix::parse("/coffee").expect("valid"));
        for (at_root, under) in [
            (&root.customer, &coffee.customer),
            (&root.board, &coffee.board),
            (&root.forbidden, &coffee.forbidden),
        ] {
            let (at_root, under) = (text(at_root), text(under));
            assert!(!at_root.contains("{{") && !under.contains("{{"));
            assert!(at_root.contains(r#"href="/assets/app.css""#));
            assert!(under.contains(r#"href="/coffee/assets/app.css""#));
            assert!(under.contains(r#"<meta name="orders-base" content="/coffee">"#));
            // Every link is under the prefix (or data, not a path).
            for link in under
                .split(r#"href=""#)
                .skip(1)
                .chain(under.split(r#"src=""#).skip(1))
            {
                assert!(
                    link.starts_with("/coffee/") || link.starts_with("data:"),
                    "{link:.40}"
                );
            }
        }
        assert_ne!(root.customer.etag, coffee.customer.etag);
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
