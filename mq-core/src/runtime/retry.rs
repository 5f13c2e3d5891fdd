//! How failed messages are retried: [`RetryPolicy`].

use std::time::Duration;

use rand::Rng;

/// Attempts and exponential backoff with jitter.
///
/// Attempt `n` (1-based) that fails waits `initial_backoff * multiplier^(n-1)`,
/// capped at `max_backoff`, scaled by a random factor in `1 ± jitter`, before
/// attempt `n + 1`. After `max_attempts` failed attempts the message is
/// dead-lettered.
///
/// ```
/// use std::time::Duration;
/// use mq_core::RetryPolicy;
/// let policy = RetryPolicy::new(5)
///     .with_backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .with_jitter(0.0);
/// assert_eq!(policy.backoff(1), Duration::from_millis(100));
/// assert_eq!(policy.backoff(3), Duration::from_millis(400));
/// assert_eq!(policy.backoff(30), Duration::from_secs(10));
/// ```
///
/// The fields are private so its invariants hold: at least one attempt,
/// `initial <= max` backoff, a finite multiplier of at least 1, a jitter
/// within 0..=1.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 30 s, 20% jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The default backoff with `max_attempts` attempts (at least 1).
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..RetryPolicy::default()
        }
    }

    /// The same policy with `max_attempts` attempts (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Attempts in all, the first included; at least 1.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The pause after the first failure.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The longest pause.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The growth factor per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The relative random spread, 0.0 to 1.0.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Sets the first and the longest pause.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets the growth factor (at least 1.0).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the random spread (clamped to 0.0..=1.0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The pause after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let factor = if self.jitter > 0.0 {
            rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        // Saturates: a max_backoff near Duration::MAX times a jitter above 1
        // is out of range for `from_secs_f64`.
        Duration::try_from_secs_f64((capped * factor).max(0.0)).unwrap_or(Duration::MAX)
    }

    /// Whether attempt `attempt` was the last allowed.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// The internal topic holding a group's delayed retries of `topic`, used where
/// the backend cannot delay a redelivery to one group by itself.
pub(crate) fn retry_topic(names: &crate::driver::NameRules, group: &str, topic: &str) -> String {
    names.internal("retry", &[group, topic])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let policy =
            RetryPolicy::new(3).with_backoff(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..1000 {
            let b = policy.backoff(2);
            assert!(
                b >= Duration::from_millis(160) && b <= Duration::from_millis(240),
                "{b:?}"
            );
        }
    }

    #[test]
    fn extreme_settings_keep_the_invariants() {
        let policy = RetryPolicy::new(3)
            .with_backoff(Duration::MAX, Duration::from_secs(1))
            .with_multiplier(f64::INFINITY)
            .with_jitter(f64::INFINITY);
        assert_eq!(policy.max_backoff(), Duration::MAX);
        assert_eq!((policy.multiplier(), policy.jitter()), (1.0, 0.0));
        assert_eq!(policy.backoff(2), Duration::MAX);
        let spread = RetryPolicy::new(3)
            .with_backoff(Duration::MAX, Duration::MAX)
            .with_jitter(1.0);
        assert!(spread.backoff(1) <= Duration::MAX);
        assert_eq!(RetryPolicy::new(3).with_max_attempts(0).max_attempts(), 1);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let policy = RetryPolicy::new(u32::MAX).with_jitter(0.0);
        assert_eq!(policy.backoff(u32::MAX), policy.max_backoff);
        assert!(policy.exhausted(u32::MAX));
        assert_eq!(RetryPolicy::new(0).max_attempts(), 1);
    }
}
