//! A hashed timing wheel over the delays due soon.
//!
//! Slots of `TICK_US` cover the next `SLOTS * TICK_US` (about 41 s). Only
//! delays due up to the wheel's horizon are held in memory; later ones stay
//! in the durable delay index and are loaded as the horizon moves, so
//! memory is bounded by what is due within the span, however many delays
//! are pending.

/// Width of one slot: the wheel's precision.
pub const TICK_US: u64 = 5_000;
/// Number of slots.
pub const SLOTS: u64 = 8192;

/// The wheel.
#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<u64>>,
    /// Every tick up to here has been moved to `ready`.
    cursor: u64,
    /// Every pending delay due at or before this tick is in the wheel.
    horizon: u64,
    len: usize,
    /// Delays after the horizon (only counted here; they live on disk).
    spilled: u64,
    spill_min: u64,
    ready: Vec<u64>,
}

/// The tick at or after `due_us` (never before: a delay is never early).
pub fn tick_of(due_us: u64) -> u64 {
    due_us.div_ceil(TICK_US)
}

impl Wheel {
    /// An empty wheel whose clock starts at `now_us`.
    pub fn new(now_us: u64) -> Self {
        let cursor = now_us / TICK_US;
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor,
            horizon: cursor + SLOTS - 1,
            len: 0,
            spilled: 0,
            spill_min: u64::MAX,
            ready: Vec::new(),
        }
    }

    /// Delays held in memory.
    pub fn len(&self) -> usize {
        self.len + self.ready.len()
    }

    /// Whether no delay is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds delay `seq` due at `due_us`.
    pub fn insert(&mut self, due_us: u64, seq: u64) {
        let tick = tick_of(due_us);
        if tick <= self.cursor {
            self.ready.push(seq);
        } else if tick <= self.horizon {
            self.slots[(tick % SLOTS) as usize].push(seq);
            self.len += 1;
        } else {
            self.spilled += 1;
            self.spill_min = self.spill_min.min(tick);
        }
    }

    /// Moves the clock to `now_us` and returns the delays now due.
    pub fn advance(&mut self, now_us: u64) -> Vec<u64> {
        let now = now_us / TICK_US;
        if now > self.cursor {
            let steps = (now - self.cursor).min(SLOTS);
            for t in 0..steps {
                let tick = now - t;
                let slot = &mut self.slots[(tick % SLOTS) as usize];
                self.len -= slot.len();
                self.ready.append(slot);
            }
            self.cursor = now;
            if self.spilled == 0 {
                self.horizon = self.cursor + SLOTS - 1;
            }
        }
        std::mem::take(&mut self.ready)
    }

    /// When the next held delay is due, in microseconds.
    pub fn next_due_us(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            return Some(self.cursor * TICK_US);
        }
        if self.len == 0 {
            return None;
        }
        (self.cursor + 1..=self.horizon.min(self.cursor + SLOTS))
            .find(|t| !self.slots[(*t % SLOTS) as usize].is_empty())
            .map(|t| t * TICK_US)
    }

    /// Whether delays beyond the horizon must be loaded: the clock is within
    /// half a span of the horizon and something was spilled.
    pub fn needs_refill(&self) -> bool {
        self.spilled > 0 && self.cursor + SLOTS / 2 >= self.horizon.min(self.spill_min)
    }

    /// Starts a refill: returns the window `(old_horizon, new_horizon]` of
    /// ticks to load, and forgets the spill count (the refill recounts).
    pub fn begin_refill(&mut self) -> (u64, u64) {
        let old = self.horizon;
        self.horizon = self.cursor + SLOTS - 1;
        self.spilled = 0;
        self.spill_min = u64::MAX;
        (old, self.horizon)
    }

    /// During a refill: adds a delay in the window, or counts it as spilled.
    pub fn refill(&mut self, due_us: u64, seq: u64, window: (u64, u64)) {
        let tick = tick_of(due_us);
        if tick > window.0 {
            self.insert(due_us, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_early_and_in_order() {
        let start = 1_000_000_000;
        let mut w = Wheel::new(start);
        w.insert(start + 12_345, 1);
        w.insert(start + 1, 2);
        w.insert(start - 5, 3);
        assert_eq!(w.advance(start), vec![3]);
        assert_eq!(w.next_due_us(), Some(tick_of(start + 1) * TICK_US));
        assert_eq!(w.advance(start + 4_000), Vec::<u64>::new());
        assert_eq!(w.advance(start + 5_000), vec![2]);
        assert!(w.advance(start + 12_000).is_empty());
        assert_eq!(w.advance(start + 15_000), vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_delays_spill_and_refill() {
        let start = 0;
        let mut w = Wheel::new(start);
        let far = (SLOTS + 100) * TICK_US;
        w.insert(far, 9);
        assert!(w.is_empty());
        assert!(!w.needs_refill());
        w.advance(far - SLOTS / 2 * TICK_US);
        assert!(w.needs_refill());
        let window = w.begin_refill();
        w.refill(far, 9, window);
        assert_eq!(w.len(), 1);
        assert_eq!(w.advance(far), vec![9]);
    }
}
