//! The login throttle (SPEC §13): an attempt is counted *before* its password is checked, per
//! key (normalised email, client IP), whether or not the account exists. After `free_failures`
//! failures the key waits `first_wait`, doubling with every further failure up to `max_wait`
//! (Keycloak's brute-force detection: 30 failures, 60 s to 15 min); while the key waits every
//! attempt is refused at once, and once the wait is over one attempt at a time is checked, so
//! the right password waits at most the current wait.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Failures before the first wait (attempts in flight count as failures until they end).
    pub free_failures: u32,
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// A key with no failure for this long starts afresh.
    pub forget_after: Duration,
    /// Whether a right password clears the key's failures (per account: yes; per IP: no, or
    /// one account of the attacker's would clear the IP's count).
    pub success_resets: bool,
}

impl LoginPolicy {
    /// Per account (normalised email): Keycloak's defaults.
    pub const ACCOUNT: LoginPolicy = LoginPolicy {
        free_failures: 30,
        first_wait: Duration::from_secs(60),
        max_wait: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(12 * 3600),
        success_resets: true,
    };
    /// Per client IP (or IPv6 /64), over all the accounts it tries.
    pub const CLIENT_IP: LoginPolicy = LoginPolicy {
        free_failures: 100,
        first_wait: Duration::from_secs(60),
        max_wait: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(3600),
        success_resets: false,
    };

    /// The wait after `failures` failures (zero while they are free).
    fn wait_after(&self, failures: u32) -> Duration {
        let Some(extra) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(extra.min(20)).unwrap_or(u32::MAX);
        self.first_wait
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }
}

/// Most keys remembered; beyond them (after forgetting the stale ones) new keys go uncounted.
const MAX_KEYS: usize = 262_144;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

struct Keys {
    map: HashMap<String, Entry>,
    /// The size at which stale keys are swept next (amortised: doubles with the live keys).
    sweep_at: usize,
}

/// Failed-login counts per key, in process.
pub struct LoginThrottle {
    policy: LoginPolicy,
    keys: Mutex<Keys>,
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: LoginPolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            keys: Mutex::new(Keys {
                map: HashMap::new(),
                sweep_at: 1024,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an attempt for `key`: counted as a failure until it ends, or the wait.
    pub fn begin(&self, key: &str) -> Result<LoginAttempt<'_>, Duration> {
        let now = Instant::now();
        let p = self.policy;
        let mut keys = self.lock();
        if keys.map.len() >= keys.sweep_at {
            keys.map
                .retain(|_, e| e.in_flight > 0 || now < e.last_failure + p.forget_after);
            keys.sweep_at = (keys.map.len() * 2).max(1024);
        }
        if keys.map.len() >= MAX_KEYS && !keys.map.contains_key(key) {
            // Full of keys with recent failures (a distributed attack): this key goes
            // uncounted rather than refusing every new account; the other throttle still holds.
            tracing::warn!(
                keys = keys.map.len(),
                "login throttle full; attempt not counted"
            );
            return Ok(LoginAttempt {
                throttle: self,
                key: None,
            });
        }
        let e = keys.map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            locked_until: None,
            last_failure: now,
        });
        if e.in_flight == 0 && now >= e.last_failure + p.forget_after {
            e.failures = 0;
            e.locked_until = None;
        }
        if let Some(until) = e.locked_until
            && now < until
        {
            return Err(until - now);
        }
        let allowed = p.free_failures.saturating_sub(e.failures).max(1);
        if e.in_flight >= allowed {
            // What follows if the attempts being checked fail.
            return Err(p.wait_after(e.failures.saturating_add(e.in_flight)));
        }
        e.in_flight += 1;
        Ok(LoginAttempt {
            throttle: self,
            key: Some(key.to_string()),
        })
    }

    /// Ends an attempt: `Some(true)` failed, `Some(false)` succeeded, `None` not checked.
    fn end(&self, key: &str, failed: Option<bool>) {
        let now = Instant::now();
        let p = self.policy;
        let mut keys = self.lock();
        let Some(e) = keys.map.get_mut(key) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if failed == Some(true) {
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            let wait = p.wait_after(e.failures);
            if !wait.is_zero() {
                e.locked_until = Some(now + wait);
            }
        } else if failed == Some(false) && p.success_resets {
            e.failures = 0;
            e.locked_until = None;
        }
        if e.failures == 0 && e.in_flight == 0 {
            keys.map.remove(key);
        }
    }
}

/// A reserved attempt; dropped without an outcome (not checked: shed, cancelled, an error) it
/// counts for nothing.
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    /// `None`: not counted (the throttle was full).
    key: Option<String>,
}

impl LoginAttempt<'_> {
    /// The password was wrong (or the account unknown).
    pub fn failed(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.end(&key, Some(true));
        }
    }

    /// The password was right.
    pub fn succeeded(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.end(&key, Some(false));
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.end(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LoginPolicy = LoginPolicy {
        free_failures: 3,
        ..LoginPolicy::ACCOUNT
    };

    #[test]
    fn waits_double_up_to_the_cap() {
        let w: Vec<u64> = (0..10).map(|f| P.wait_after(f).as_secs()).collect();
        assert_eq!(w, [0, 0, 0, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(P.wait_after(u32::MAX).as_secs(), 900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_counted_before_it_is_checked() {
        let t = LoginThrottle::new(P);
        let held: Vec<_> = (0..3).map(|_| t.begin("a").unwrap()).collect();
        // The fourth is refused while three are being checked.
        assert_eq!(t.begin("a").err(), Some(Duration::from_secs(60)));
        assert!(t.begin("b").is_ok(), "other keys are not affected");
        held.into_iter().for_each(LoginAttempt::failed);
        assert_eq!(t.begin("a").err(), Some(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_right_password_waits_at_most_the_current_wait() {
        let t = LoginThrottle::new(P);
        for _ in 0..3 {
            t.begin("a").unwrap().failed();
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(t.begin("a").err(), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        // One attempt at a time once the wait is over; a wrong one doubles the wait.
        let one = t.begin("a").unwrap();
        assert!(t.begin("a").is_err());
        one.failed();
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(t.begin("a").is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        t.begin("a").unwrap().succeeded();
        // Cleared: the free failures are back.
        let again: Vec<_> = (0..3).map(|_| t.begin("a").unwrap()).collect();
        drop(again);
    }

    #[tokio::test(start_paused = true)]
    async fn unchecked_attempts_count_for_nothing_and_old_failures_are_forgotten() {
        let t = LoginThrottle::new(P);
        for _ in 0..10 {
            drop(t.begin("a").unwrap());
        }
        t.begin("a").unwrap().failed();
        t.begin("a").unwrap().failed();
        tokio::time::advance(P.forget_after).await;
        for _ in 0..3 {
            t.begin("a").unwrap().failed();
        }
        assert!(t.begin("a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_does_not_clear_an_ip() {
        let t = LoginThrottle::new(LoginPolicy {
            free_failures: 2,
            ..LoginPolicy::CLIENT_IP
        });
        t.begin("ip").unwrap().failed();
        t.begin("ip").unwrap().succeeded();
        t.begin("ip").unwrap().failed();
        assert!(t.begin("ip").is_err());
    }
}
