//! A set of settled sequence numbers: a bitmap above the lowest unsettled
//! one, so memory is one bit per number in the unsettled window. Used per
//! group cursor for acked offsets, and by the native engine for delivered
//! delays.

use std::collections::VecDeque;

/// Settled sequence numbers (acked offsets, delivered delays).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoneSet {
    /// Every seq below is done; a multiple of 64.
    base: u64,
    /// Bit `i` of word `w` is seq `base + 64 w + i`.
    words: VecDeque<u64>,
}

impl DoneSet {
    /// From a checkpoint.
    pub fn from_words(base: u64, words: Vec<u64>) -> Self {
        let mut set = DoneSet {
            base: base & !63,
            words: words.into(),
        };
        if base & 63 != 0 && set.words.is_empty() {
            set.words.push_back((1u64 << (base & 63)) - 1);
        }
        set.compact();
        set
    }

    /// For a checkpoint: `(base, words)`.
    pub fn to_words(&self) -> (u64, Vec<u64>) {
        (self.base, self.words.iter().copied().collect())
    }

    /// The lowest seq not done.
    pub fn committed(&self) -> u64 {
        self.base
            + self
                .words
                .front()
                .map_or(0, |w| u64::from(w.trailing_ones()))
    }

    /// Whether `seq` is done.
    // Inline: drivers instantiate `Cursor::ack_all` in their own crate,
    // and a call per acked record would cost more than the lookup.
    #[inline]
    pub fn contains(&self, seq: u64) -> bool {
        if seq < self.base {
            return true;
        }
        let i = seq - self.base;
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks `seq` done.
    #[inline]
    pub fn insert(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        let i = seq - self.base;
        let w = (i / 64) as usize;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (i % 64);
        self.compact();
    }

    /// Marks every seq below `seq` done.
    pub fn insert_below(&mut self, seq: u64) {
        while self.base + 64 <= seq && !self.words.is_empty() {
            self.words.pop_front();
            self.base += 64;
        }
        if self.words.is_empty() {
            self.base = self.base.max(seq & !63);
        }
        if seq > self.base {
            if self.words.is_empty() {
                self.words.push_back(0);
            }
            self.words[0] |= (1u64 << (seq - self.base)) - 1;
        }
        self.compact();
    }

    /// How many seqs in `from..to` are done.
    pub fn count(&self, from: u64, to: u64) -> u64 {
        let below = self.base.min(to).saturating_sub(from);
        let (from, to) = (from.max(self.base), to.max(self.base));
        let mut n = below;
        let mut at = from;
        while at < to {
            let (w, bit) = (((at - self.base) / 64) as usize, (at - self.base) % 64);
            let Some(word) = self.words.get(w) else { break };
            let span = (64 - bit).min(to - at);
            let mask = if span == 64 {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << bit
            };
            n += u64::from((word & mask).count_ones());
            at += span;
        }
        n
    }

    /// The done seqs at or above `from` and above [`committed`](Self::committed), in order.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        let from = from.max(self.committed());
        let first = ((from - self.base) / 64) as usize;
        self.words
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(w, bits)| {
                let at = self.base + 64 * w as u64;
                (0..64u64)
                    .filter(move |i| bits & (1 << i) != 0)
                    .map(move |i| at + i)
            })
            .filter(move |s| *s >= from)
    }

    /// Marks `seq` not done again (undoing a failed append).
    pub fn remove(&mut self, seq: u64) {
        while seq < self.base {
            self.words.push_front(u64::MAX);
            self.base -= 64;
        }
        let i = seq - self.base;
        if let Some(w) = self.words.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }

    #[inline]
    fn compact(&mut self) {
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_moves_over_done_prefix() {
        let mut d = DoneSet::default();
        for s in [1, 2, 70] {
            d.insert(s);
        }
        assert_eq!(d.committed(), 0);
        d.insert(0);
        assert_eq!(d.committed(), 3);
        for s in 3..70 {
            d.insert(s);
        }
        assert_eq!(d.committed(), 71);
        assert!(d.contains(5) && !d.contains(71));
        d.remove(5);
        assert!(!d.contains(5));
        assert_eq!(d.committed(), 5);
        let (b, w) = d.to_words();
        assert_eq!(DoneSet::from_words(b, w), d);
        assert_eq!(d.count(0, 80), 70);
        assert_eq!(
            d.iter_from(60).take(3).collect::<Vec<_>>(),
            vec![60, 61, 62]
        );
        d.insert_below(200);
        assert_eq!(d.committed(), 200);
        d.insert(203);
        assert_eq!(d.iter_from(0).collect::<Vec<_>>(), vec![203]);
        assert_eq!(d.count(150, 210), 51);
    }
}
