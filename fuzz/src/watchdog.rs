//! Hang detection: a case still running after the limit is a hang (a
//! decoder looping or allocating without end). Its input is saved and the
//! process aborts, since a stuck thread cannot be stopped from outside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Current {
    started: Option<Instant>,
    input: Vec<u8>,
}

struct Shared {
    current: Mutex<Current>,
    stop: AtomicBool,
}

/// Watches the cases of one target run.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The case running: it ends when this is dropped, also by a panic.
pub(crate) struct Case<'a>(&'a Shared);

impl Drop for Case<'_> {
    fn drop(&mut self) {
        lock(&self.0.current).started = None;
    }
}

fn lock(m: &Mutex<Current>) -> std::sync::MutexGuard<'_, Current> {
    // A case that panicked while the watchdog looked leaves the lock
    // poisoned; what it guards is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watchdog {
    pub(crate) fn start(target: &str, limit: Duration) -> Self {
        let shared = Arc::new(Shared {
            current: Mutex::new(Current::default()),
            stop: AtomicBool::new(false),
        });
        let watched = shared.clone();
        let target = target.to_owned();
        let thread = std::thread::spawn(move || {
            while !watched.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50).min(limit));
                let current = lock(&watched.current);
                if current.started.is_some_and(|at| at.elapsed() > limit) {
                    let saved = crate::corpus::save_crash(&target, &current.input);
                    eprintln!(
                        "fuzz {target}: a case ran over {limit:?} (a hang); input saved to {}",
                        saved.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog {
            shared,
            thread: Some(thread),
        }
    }

    /// Starts a case on `input`.
    pub(crate) fn enter(&self, input: Vec<u8>) -> Case<'_> {
        let mut current = lock(&self.shared.current);
        current.started = Some(Instant::now());
        current.input = input;
        Case(&self.shared)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
