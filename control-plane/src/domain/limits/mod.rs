//! Limits of SPEC §13: request rates behind one small trait ([`Limiter`], check-and-count a key
//! against the limiter's quota; in process on `governor` today, a shared Redis one comes with
//! scale-out), the login throttle ([`LoginThrottle`]) and the keys they count by.

mod login;

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

pub use login::{LoginAttempt, LoginPolicy, LoginThrottle};

use super::DomainError;

/// Counts requests by key against one quota.
pub trait Limiter: Send + Sync {
    /// Counts one request for `key`: `Ok` within the quota, else how long until one would be.
    fn check(&self, key: String) -> Result<(), Duration>;
}

/// A shared limiter, or `None` when the limit is off.
pub type SharedLimiter = Option<Arc<dyn Limiter>>;

/// Checks between two sweeps of keys back at a full bucket.
const SWEEP_EVERY: u64 = 4096;

/// An in-process [`Limiter`]: one GCRA bucket per key (`governor`), idle keys swept.
pub struct LocalLimiter {
    buckets: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl LocalLimiter {
    /// `rate` per second sustained with bursts of `burst`; `None` when `rate` is 0.
    pub fn per_second(rate: u32, burst: u32) -> SharedLimiter {
        let rate = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst.max(1))?;
        Some(Arc::new(LocalLimiter::new(
            Quota::per_second(rate).allow_burst(burst),
        )))
    }

    /// `n` per hour, all of them at once if need be; `None` when `n` is 0.
    pub fn per_hour(n: u32) -> SharedLimiter {
        let n = NonZeroU32::new(n)?;
        Some(Arc::new(LocalLimiter::new(Quota::per_hour(n))))
    }

    fn new(quota: Quota) -> LocalLimiter {
        LocalLimiter {
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }
}

impl Limiter for LocalLimiter {
    fn check(&self, key: String) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }
}

/// Counts one request of `key` on `limiter` (when there is one); `RateLimited` beyond it.
pub fn check(limiter: &SharedLimiter, key: String, what: &str) -> Result<(), DomainError> {
    let Some(l) = limiter else {
        return Ok(());
    };
    l.check(key).map_err(|wait| rate_limited(what, wait))
}

/// The error of a limit reached, with the time to wait (at least one second).
pub fn rate_limited(what: &str, wait: Duration) -> DomainError {
    let wait = wait.max(Duration::from_secs(1));
    DomainError::RateLimited {
        reason: format!("{what}: retry in {} s", wait.as_secs_f64().ceil() as u64),
        retry_after: wait,
    }
}

/// The key a client address is counted by: the address for IPv4, its /64 for IPv6 (one
/// host usually holds a whole /64); "" (one shared key) when unknown.
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let l = LocalLimiter::per_second(10, 5).unwrap();
        for _ in 0..5 {
            assert!(l.check("a".into()).is_ok());
        }
        let wait = l.check("a".into()).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(l.check("b".into()).is_ok(), "keys are independent");
        assert!(LocalLimiter::per_second(0, 5).is_none());
        assert!(LocalLimiter::per_hour(0).is_none());
    }

    #[test]
    fn ip_keys() {
        assert_eq!(ip_key("127.0.0.2"), "127.0.0.2");
        assert_eq!(ip_key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(ip_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(ip_key("garbage"), "");
    }
}
