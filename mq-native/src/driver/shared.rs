//! One engine per data directory per process, shared by every driver
//! opened on it and closed when the last of them closes.
//!
//! The directory lock (an `flock`) keeps other processes out; inside one
//! process, `mq::connect("native://./data")` called from two places gets
//! the same engine, and `close()` on one of them leaves the other working.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use mq_core::{Error, Result};
use parking_lot::Mutex;

use crate::engine::open::{path_error, prepare_dir};
use crate::engine::Engine;
use crate::options::Options;

/// A directory's engine while any driver has it open.
#[derive(Debug, Default)]
struct Slot {
    /// Held while the engine opens or shuts down, so an opener never races
    /// the last closer for the directory lock.
    open: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    engine: Arc<Engine>,
    sharers: usize,
}

/// Slots by canonical directory; a slot lives while a driver holds it.
fn slots() -> &'static Mutex<HashMap<PathBuf, Weak<Slot>>> {
    static SLOTS: OnceLock<Mutex<HashMap<PathBuf, Weak<Slot>>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// One driver's share of an engine; [`Share::release`] gives it up.
#[derive(Debug)]
pub(super) struct Share {
    slot: Arc<Slot>,
    /// The shared engine.
    pub(super) engine: Arc<Engine>,
}

/// Opens the directory of `options`, or joins the engine this process
/// already has on it (whose options must be the same). Blocks on I/O.
pub(super) fn open(options: Options) -> Result<Share> {
    prepare_dir(&crate::fs::RealFs, &options.path)?;
    let key = std::fs::canonicalize(&options.path).map_err(|e| path_error(&options.path, &e))?;
    let slot = {
        let mut slots = slots().lock();
        slots.retain(|_, slot| slot.strong_count() > 0);
        match slots.get(&key).and_then(Weak::upgrade) {
            Some(slot) => slot,
            None => {
                let slot = Arc::new(Slot::default());
                slots.insert(key, Arc::downgrade(&slot));
                slot
            }
        }
    };
    let mut open = slot.open.lock();
    let engine = match &mut *open {
        // An engine shut down behind its drivers' backs (through
        // `Engine::shutdown`) is replaced; their shares no longer count.
        Some(running) if !running.engine.is_closed() => {
            let differ = running.engine.options.differences(&options);
            if !differ.is_empty() {
                return Err(Error::Config(format!(
                    "native data directory {} is already open in this process with other \
                     settings for {}: one engine serves a directory, open it with the same options",
                    options.path.display(),
                    differ.join(", ")
                )));
            }
            running.sharers += 1;
            running.engine.clone()
        }
        _ => {
            let engine = Engine::open(options)?;
            *open = Some(Open {
                engine: engine.clone(),
                sharers: 1,
            });
            engine
        }
    };
    drop(open);
    Ok(Share { slot, engine })
}

/// A share of an engine opened outside the per-process table (on a
/// simulated file system), closed with its only share.
pub(super) fn private(engine: Arc<Engine>) -> Share {
    let slot = Arc::new(Slot {
        open: Mutex::new(Some(Open {
            engine: engine.clone(),
            sharers: 1,
        })),
    });
    Share { slot, engine }
}

impl Share {
    /// Gives this share up; the last one shuts the engine down (blocking
    /// until it has). Call once.
    pub(super) fn release(&self) {
        let mut open = self.slot.open.lock();
        let last = match &mut *open {
            Some(running) if Arc::ptr_eq(&running.engine, &self.engine) => {
                running.sharers -= 1;
                running.sharers == 0
            }
            _ => false,
        };
        if last {
            if let Some(running) = open.take() {
                running.engine.shutdown();
            }
        }
    }
}
