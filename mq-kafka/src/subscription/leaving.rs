//! Members on their way out of a group when the process exits.
//!
//! A member that disappears without a LeaveGroup keeps its partitions
//! until the broker expires its session, and some Kafka-protocol brokers
//! never do, which stalls its group for good. A process that exits right
//! after dropping or closing a subscription (the end of `main`, a test
//! binary's last test) therefore waits, at exit and for [`EXIT_LIMIT`] at
//! most, for the poll threads already leaving to finish.

use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

/// Longest wait at process exit.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

static LEAVING: Mutex<usize> = Mutex::new(0);
static LEFT: Condvar = Condvar::new();
static HOOK: Once = Once::new();

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// One member leaving; dropping it says it has left.
pub(super) struct Leaving(());

impl Leaving {
    /// Counts a member that starts leaving.
    pub(super) fn begin() -> Leaving {
        HOOK.call_once(|| {
            // SAFETY: `atexit` only stores the function pointer; the
            // callback touches nothing but statics.
            unsafe {
                atexit(wait_at_exit);
            }
        });
        *LEAVING.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Leaving(())
    }
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let mut n = LEAVING.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        LEFT.notify_all();
    }
}

extern "C" fn wait_at_exit() {
    let deadline = Instant::now() + EXIT_LIMIT;
    let mut n = LEAVING.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        n = match LEFT.wait_timeout(n, left) {
            Ok((n, _)) => n,
            Err(e) => e.into_inner().0,
        };
    }
}
