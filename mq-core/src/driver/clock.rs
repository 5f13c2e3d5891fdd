//! Wall-clock times as integers since the Unix epoch, for brokers that
//! store them: now rounded down, due times rounded up.
//!
//! The rounding matters: a due time rounded down could let a message be
//! promoted up to one unit early, and "never early" is the contract. A due
//! time compared with `score <= now` is on time when the due side rounds up
//! and the now side rounds down.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn ceil(t: SystemTime, unit_nanos: u32) -> u64 {
    let exact = since_epoch(t);
    let whole = exact.as_nanos() / u128::from(unit_nanos);
    let up = u128::from(!exact.subsec_nanos().is_multiple_of(unit_nanos));
    u64::try_from(whole + up).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch, rounded down (0 before it).
pub fn epoch_millis(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the epoch, rounded down (0 before it).
pub fn epoch_micros(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_micros()).unwrap_or(u64::MAX)
}

/// A due time in milliseconds since the epoch, rounded up.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use mq_core::driver::clock::due_millis;
/// assert_eq!(due_millis(UNIX_EPOCH + Duration::from_micros(1_000_001)), 1_001);
/// assert_eq!(due_millis(UNIX_EPOCH + Duration::from_millis(7)), 7);
/// ```
pub fn due_millis(t: SystemTime) -> u64 {
    ceil(t, 1_000_000)
}

/// A due time in microseconds since the epoch, rounded up.
pub fn due_micros(t: SystemTime) -> u64 {
    ceil(t, 1_000)
}

/// The instant `ms` milliseconds after the epoch.
pub fn from_epoch_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The instant `wait` from now, saturating a century ahead where
/// `Instant + wait` would overflow (as `Duration::MAX` does): for timers and
/// due times built from user input.
///
/// ```
/// use std::time::{Duration, Instant};
/// let far = mq_core::driver::clock::deadline_after(Duration::MAX);
/// assert!(far > Instant::now() + Duration::from_secs(3_000_000_000));
/// ```
pub fn deadline_after(wait: Duration) -> std::time::Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = std::time::Instant::now();
    now.checked_add(wait).unwrap_or(now + CENTURY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_rounds_up_now_rounds_down() {
        let t = UNIX_EPOCH + Duration::new(1, 1);
        assert_eq!(epoch_millis(t), 1_000);
        assert_eq!(due_millis(t), 1_001);
        assert_eq!(epoch_micros(t), 1_000_000);
        assert_eq!(due_micros(t), 1_000_001);
        assert_eq!(due_micros(UNIX_EPOCH + Duration::from_micros(5)), 5);
        assert_eq!(epoch_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
