//! Who is on the other end of a request, as the network says ([`Peers`]):
//! the connection's address, or, when that address is a configured trusted
//! proxy (the load balancer), the client address the proxy states in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`. Those headers from anyone
//! else are ignored: a client could write any address there.
//!
//! The address becomes the key of the per-address rate limit
//! ([`Peers::bucket`]): IPv4 addresses as they are, IPv6 addresses by their
//! network prefix (/64 unless configured), because one IPv6 client holds a
//! whole /64 and could otherwise take a fresh budget per address. The
//! request's log span records the same address ([`ClientAddr`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

/// How client addresses are found and grouped. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// The proxies whose forwarding headers are believed.
    pub trusted: Vec<IpNet>,
    /// The prefix length IPv6 clients are limited by (1 to 128).
    pub ipv6_prefix: u8,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            trusted: Vec::new(),
            ipv6_prefix: Peers::DEFAULT_IPV6_PREFIX,
        }
    }
}

/// The client's address as [`Peers::client`] found it, in the request's
/// extensions for the limiter and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The most addresses read from forwarding headers, over all of them (a
/// longer chain is cut: nothing a client sends travels unbounded).
const CHAIN_MAX: usize = 32;

impl Peers {
    pub const DEFAULT_IPV6_PREFIX: u8 = 64;

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer`: `peer` itself, unless
    /// it is a trusted proxy; then the nearest address in the forwarding
    /// chain that is not a trusted proxy (walking from the proxy back
    /// towards the client; an address a client wrote further left is never
    /// taken over the one the proxy saw). `Forwarded` wins over
    /// `X-Forwarded-For` when both are present.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded(headers).or_else(|| x_forwarded_for(headers));
        let Some(chain) = chain else {
            return peer;
        };
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.trusts(client) {
                        return client;
                    }
                }
                // An entry that is no address (`unknown`, an obfuscated
                // name, garbage): nothing further left can be believed.
                None => return client,
            }
        }
        client
    }

    /// The rate limit's key for `client`: IPv6 addresses cut to the
    /// configured prefix.
    pub fn bucket(&self, client: IpAddr) -> IpAddr {
        match canonical(client) {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let prefix = u32::from(self.ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

/// An IPv4 client on a dual-stack socket (`::ffff:192.0.2.1`) is an IPv4
/// client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` addresses of every `Forwarded` header, in order; `None` for an
/// entry that is not an address.
fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    let mut any = false;
    for value in headers.get_all("forwarded") {
        any = true;
        let Ok(text) = value.to_str() else {
            chain.push(None);
            continue;
        };
        for element in text.split(',').take(CHAIN_MAX.saturating_sub(chain.len())) {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            });
            if let Some(node) = node {
                chain.push(node_address(node));
            }
        }
    }
    (any && !chain.is_empty()).then_some(chain)
}

/// A `Forwarded` node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.parse()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The addresses of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            chain.push(None);
            continue;
        };
        let room = CHAIN_MAX.saturating_sub(chain.len());
        chain.extend(
            text.split(',')
                .take(room)
                .map(|entry| node_address(entry.trim())),
        );
    }
    (!chain.is_empty()).then_some(chain)
}

/// Finds the request's client (see [`Peers::client`]) once, first of all,
/// and leaves it in the request's extensions.
pub async fn find_client(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(peer) = peer {
        let client = state.access.peers.client(peer, req.headers());
        tracing::Span::current().record("client", tracing::field::display(client));
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("a header value"));
        }
        map
    }

    fn behind(proxies: &[&str]) -> Peers {
        Peers {
            trusted: proxies
                .iter()
                .map(|p| p.parse().expect("a network"))
                .collect(),
            ..Peers::default()
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let peers = behind(&["10.0.0.0/24"]);
        let forged = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            peers.client(ip("198.51.100.7"), &forged),
            ip("198.51.100.7")
        );
        assert_eq!(peers.client(ip("10.0.0.2"), &forged), ip("203.0.113.9"));
        assert_eq!(
            Peers::default().client(ip("10.0.0.2"), &forged),
            ip("10.0.0.2"),
            "no proxy is trusted unless configured"
        );
    }

    #[test]
    fn the_address_the_proxy_saw_wins_over_what_the_client_wrote() {
        let peers = behind(&["10.0.0.2/32", "10.0.0.3/32"]);
        // The client wrote 1.1.1.1 itself; the proxy appended what it saw.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.3")]);
        assert_eq!(peers.client(ip("10.0.0.2"), &chain), ip("203.0.113.9"));
        let rfc7239 = headers(&[(
            "forwarded",
            r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https"#,
        )]);
        assert_eq!(
            peers.client(ip("10.0.0.2"), &rfc7239),
            ip("2001:db8:cafe::17")
        );
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, unknown")]);
        assert_eq!(
            peers.client(ip("10.0.0.2"), &garbage),
            ip("10.0.0.2"),
            "nothing left of an entry that is no address is believed"
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_prefix() {
        let peers = Peers::default();
        assert_eq!(
            peers.bucket(ip("2001:db8:1:2:aaaa::1")),
            peers.bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            peers.bucket(ip("2001:db8:1:2::1")),
            peers.bucket(ip("2001:db8:1:3::1"))
        );
        assert_eq!(peers.bucket(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(peers.bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let exact = Peers {
            ipv6_prefix: 128,
            ..Peers::default()
        };
        assert_ne!(
            exact.bucket(ip("2001:db8::1")),
            exact.bucket(ip("2001:db8::2"))
        );
    }
}
