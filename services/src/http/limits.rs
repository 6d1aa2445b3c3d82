//! Who may call how often: the per-user and per-address rate limits
//! (GCRA, keyed), and the checks every request shares ([`Access`]).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use domain::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Authenticator;

/// How callers are checked and limited, shared by every request.
#[derive(Clone, Default)]
pub struct Access {
    /// `None`: no issuer configured, development on loopback only; every
    /// request may do everything, as before authentication existed.
    pub auth: Option<Authenticator>,
    pub limits: Option<Arc<RateLimits>>,
    /// Where a request's client address comes from, and how addresses
    /// share a rate limit.
    pub peers: super::peer::Peers,
}

/// How long a refused caller should wait.
fn wait(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// Requests per second and burst, per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `None` (no limit) when `per_second` is 0; a burst below the rate is
    /// raised to it.
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
        Some(RateLimit { per_second, burst })
    }
}

/// The configured limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Per signed-in user.
    pub users: Option<RateLimit>,
    /// Per peer address, for requests without a valid token.
    pub peers: Option<RateLimit>,
}

/// The limiters: one budget per signed-in user, one per peer address for
/// requests without a valid token.
pub struct RateLimits {
    users: Option<DefaultKeyedRateLimiter<UserId>>,
    peers: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    /// The limiters, or `None` when nothing is limited.
    pub fn new(config: RateLimitConfig) -> Option<RateLimits> {
        let quota = |l: RateLimit| Quota::per_second(l.per_second).allow_burst(l.burst);
        if config.users.is_none() && config.peers.is_none() {
            return None;
        }
        Some(RateLimits {
            users: config
                .users
                .map(|l| DefaultKeyedRateLimiter::keyed(quota(l))),
            peers: config
                .peers
                .map(|l| DefaultKeyedRateLimiter::keyed(quota(l))),
        })
    }

    /// `Err(wait)` when a signed-in user is over their budget.
    pub(super) fn check_user(&self, user: &UserId) -> Result<(), Duration> {
        match &self.users {
            Some(users) => users.check_key(user).map_err(wait),
            None => Ok(()),
        }
    }

    /// `Err(wait)` when an address (see `peer::Peers::bucket`) is over its
    /// budget.
    pub(super) fn check_peer(&self, bucket: IpAddr) -> Result<(), Duration> {
        match &self.peers {
            Some(peers) => peers.check_key(&bucket).map_err(wait),
            None => Ok(()),
        }
    }

    /// Forgets callers whose budget is full again, every minute until
    /// `shutdown` (the limiters' memory stays bounded by recent callers).
    pub async fn forget_idle(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            if let Some(users) = &self.users {
                users.retain_recent();
                users.shrink_to_fit();
            }
            if let Some(peers) = &self.peers {
                peers.retain_recent();
                peers.shrink_to_fit();
            }
        }
    }
}
