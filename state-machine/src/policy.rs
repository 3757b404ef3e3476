//! Retry policy: exponential backoff with full jitter, a cap, max attempts and max elapsed.

use std::time::Duration;

/// When and how often a transiently failed transition is retried.
///
/// The delay before retry `n` (1-based) is drawn uniformly from
/// `0..=min(cap, base * 2^(n-1))` ("full jitter"), unless the error carries a server-given
/// `retry_after`, which is used as it is. A transition is given up (the unit becomes a dead
/// letter) after `max_attempts` attempts, or when the next retry would start later than
/// `max_elapsed` after its first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
    /// Attempts per transition, the first one included (at least 1).
    pub max_attempts: u32,
    /// How long after its first failure a transition may still be retried.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 50 ms base, 10 s cap, 8 attempts, no elapsed limit.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(10),
            max_attempts: 8,
            max_elapsed: None,
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before retry number `retry` (1-based): `min(cap, base * 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << shift)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A full-jitter delay before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(70),
            max_attempts: 5,
            max_elapsed: None,
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(10));
        assert_eq!(p.ceiling(2), Duration::from_millis(20));
        assert_eq!(p.ceiling(3), Duration::from_millis(40));
        assert_eq!(p.ceiling(4), Duration::from_millis(70));
        assert_eq!(p.ceiling(100), Duration::from_millis(70));
        for retry in 1..10 {
            assert!(p.backoff(retry) <= p.ceiling(retry));
        }
    }
}
