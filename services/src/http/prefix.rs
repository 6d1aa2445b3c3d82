//! The path prefix the whole product may be served under (`PATH_PREFIX`,
//! e.g. `/coffee` behind a load balancer that routes `/coffee/…` to this
//! service): every route, the pages' links and scripts, redirects, cookie
//! paths, `Location` headers and the OpenAPI `servers` begin with it. Without
//! one, paths are as API.md writes them.

use std::sync::Arc;

/// A validated prefix: empty, or `/` followed by segments of unreserved URL
/// characters (`/coffee`, `/shops/coffee`), without a trailing slash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPrefix(Arc<str>);

impl PathPrefix {
    /// The longest prefix accepted.
    pub const MAX: usize = 100;

    /// `""` and `"/"` are no prefix; a trailing slash is dropped.
    pub fn parse(text: &str) -> Result<PathPrefix, String> {
        let trimmed = text.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(PathPrefix::default());
        }
        let sound = trimmed.len() <= Self::MAX
            && trimmed.starts_with('/')
            && trimmed[1..].split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            });
        if sound {
            Ok(PathPrefix(Arc::from(trimmed)))
        } else {
            Err(format!(
                "a path such as /coffee: a slash, then segments of letters, digits, '-', '.', '_' or '~', at most {} characters",
                Self::MAX
            ))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `""` or `/coffee`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `path` (which begins with `/`) as the browser and clients see it.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The customer page: `/` or `/coffee/`.
    pub fn home(&self) -> String {
        self.join("/")
    }

    /// The path a cookie for the whole product is scoped to.
    pub fn cookie_path(&self) -> &str {
        if self.is_empty() {
            "/"
        } else {
            &self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_the_root() {
        for text in ["", "/", "  ", "//"] {
            let prefix = PathPrefix::parse(text).expect(text);
            assert!(prefix.is_empty(), "{text:?}");
            assert_eq!(prefix.join("/order-ms"), "/order-ms");
            assert_eq!(prefix.home(), "/");
            assert_eq!(prefix.cookie_path(), "/");
        }
    }

    #[test]
    fn a_prefix_begins_every_path() {
        let prefix = PathPrefix::parse("/coffee/").expect("valid");
        assert_eq!(prefix.as_str(), "/coffee");
        assert_eq!(prefix.join("/order-ms"), "/coffee/order-ms");
        assert_eq!(prefix.home(), "/coffee/");
        assert_eq!(prefix.cookie_path(), "/coffee");
        assert_eq!(
            PathPrefix::parse("/shops/coffee-1")
                .expect("valid")
                .as_str(),
            "/shops/coffee-1"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "coffee",
            "/coffee//x",
            "/../x",
            "/./x",
            "/cof fee",
            "/coffee?x=1",
            "/coffee#x",
            "/커피",
            "/%2e%2e",
            "https://example.com/coffee",
        ] {
            assert!(PathPrefix::parse(bad).is_err(), "{bad}");
        }
        assert!(PathPrefix::parse(&format!("/{}", "a".repeat(PathPrefix::MAX))).is_err());
    }
}
