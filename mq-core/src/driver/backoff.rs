//! Exponential backoff: the pause before the next try after some failures
//! in a row. One rule for the runtime's retries and fetches and for the
//! drivers' reconnects and polls.

use std::time::Duration;

/// Doubling pauses from `initial`, capped at `max`.
///
/// ```
/// use std::time::Duration;
/// use mq_core::driver::Backoff;
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(b.after(1), Duration::from_millis(100));
/// assert_eq!(b.after(3), Duration::from_millis(400));
/// assert_eq!(b.after(u32::MAX), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses of `initial`, `2 * initial`, ... up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The pause after `failures` failures in a row (the first is 1);
    /// never more than `max`, never a panic.
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The pause after `failures` failures, or `None` when waiting it
    /// would pass `deadline`: for loops that try until a deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mq_core::driver::Backoff;
    /// use tokio::time::Instant;
    /// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    /// let soon = Instant::now() + Duration::from_secs(10);
    /// assert_eq!(b.within(2, soon), Some(Duration::from_millis(200)));
    /// assert_eq!(b.within(2, Instant::now()), None);
    /// ```
    pub fn within(&self, failures: u32, deadline: tokio::time::Instant) -> Option<Duration> {
        let pause = self.after(failures);
        (tokio::time::Instant::now() + pause <= deadline).then_some(pause)
    }

    /// The longest pause.
    pub fn max(&self) -> Duration {
        self.max
    }
}
