//! Fixed-size index files: a per-partition offset index and the delay index.
//!
//! An index is a file of 16-byte entries `key:u64 position:u64` (little
//! endian) in append order, with keys and positions both non-decreasing, so
//! lookups are a binary search. In a partition index the key is the offset
//! of the partition's first record in the batch at `position` (one entry
//! per batch and partition); in the delay index entry `n` describes delayed
//! message `n` and the key is its due time.
//!
//! Entries are appended in memory and written to the file at checkpoints;
//! the checkpoint records how many entries are durable, and recovery
//! truncates the file to that count and rebuilds the rest from the log. The
//! newest entries stay cached in memory; older ones are read from the file,
//! so memory stays flat however long the log grows.
//!
//! A partition index sits behind a lock that appends take under the writer
//! lock: its readers go through [`get_shared`], [`range_shared`] and
//! [`find_shared`], which read only the in-memory tail under the lock and
//! the file (entries that never change while the engine runs) after
//! releasing it, so a read from disk never holds up a send.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::fs::{File, FileSystem};

/// Bytes per entry.
pub const ENTRY_LEN: u64 = 16;
/// Entries kept in memory after they are written.
const CACHED: usize = 16 * 1024;

/// One index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// First offset (partition index) or due time (delay index).
    pub key: u64,
    /// Log position of the batch.
    pub position: u64,
}

/// An index file plus its in-memory tail.
#[derive(Debug)]
pub struct IndexFile {
    path: PathBuf,
    file: File,
    /// Whether opening created the file: its name is not durable until
    /// its directory is synced.
    created: bool,
    /// Entries [0, flushed) are in the file.
    flushed: u64,
    /// Entry number of `tail[0]`.
    tail_base: u64,
    tail: VecDeque<Entry>,
}

impl IndexFile {
    /// Opens the index at `path`, keeping only its first `keep` entries.
    pub fn open(fs: &dyn FileSystem, path: &Path, keep: u64) -> io::Result<Self> {
        let created = !fs.exists(path);
        let file = fs.open(path, true)?;
        let len = file.len()?;
        let keep = keep.min(len / ENTRY_LEN);
        if len != keep * ENTRY_LEN {
            file.set_len(keep * ENTRY_LEN)?;
        }
        Ok(IndexFile {
            path: path.to_owned(),
            file,
            created,
            flushed: keep,
            tail_base: keep,
            tail: VecDeque::new(),
        })
    }

    /// Whether opening created the file.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.tail_base + self.tail.len() as u64
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: Entry) {
        self.tail.push_back(entry);
    }

    /// The last entry.
    pub fn last(&self) -> io::Result<Option<Entry>> {
        match self.len() {
            0 => Ok(None),
            n => self.get(n - 1),
        }
    }

    /// Entry number `n`.
    pub fn get(&self, n: u64) -> io::Result<Option<Entry>> {
        if n >= self.len() {
            return Ok(None);
        }
        if n >= self.tail_base {
            return Ok(self.tail.get((n - self.tail_base) as usize).copied());
        }
        let mut raw = [0u8; ENTRY_LEN as usize];
        self.file.read_exact_at(&mut raw, n * ENTRY_LEN)?;
        Ok(Some(decode_entry(&raw)))
    }

    /// Up to `max` entries starting at `n` (fewer at the end).
    pub fn range(&self, n: u64, max: usize) -> io::Result<Vec<Entry>> {
        let end = self.len().min(n.saturating_add(max as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(n) as usize);
        let mut at = n;
        if at < self.tail_base && at < end {
            let upto = end.min(self.tail_base);
            let mut raw = vec![0u8; ((upto - at) * ENTRY_LEN) as usize];
            self.file.read_exact_at(&mut raw, at * ENTRY_LEN)?;
            out.extend(raw.chunks_exact(ENTRY_LEN as usize).map(decode_entry));
            at = upto;
        }
        while at < end {
            out.push(self.tail[(at - self.tail_base) as usize]);
            at += 1;
        }
        Ok(out)
    }

    /// The number of the last entry whose key is at most `key`, searching
    /// entries `[from, len)`; `from` when every key there is larger.
    pub fn find(&self, key: u64, from: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (from, self.len());
        // Invariant: entries before `lo` (from `from` on) have key <= `key`;
        // entries at or after `hi` have key > `key`.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)? {
                Some(e) if e.key <= key => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo.saturating_sub(1).max(from))
    }

    /// Drops entries whose position is at or past `position` (entries not
    /// yet written to the file only: a failed append is undone).
    pub fn truncate_at_position(&mut self, position: u64) {
        while self.tail.back().is_some_and(|e| e.position >= position) && self.len() > self.flushed
        {
            self.tail.pop_back();
        }
    }

    /// Takes what a flush of the first `upto` entries must write: the file,
    /// the byte offset and the bytes. Done under the lock; the write itself
    /// happens outside it (see [`IndexFile::flushed_to`]).
    pub fn flush_job(&self, upto: u64) -> Option<(File, u64, Vec<u8>)> {
        let upto = upto.min(self.len());
        if upto <= self.flushed {
            return None;
        }
        let mut bytes = Vec::with_capacity(((upto - self.flushed) * ENTRY_LEN) as usize);
        for n in self.flushed..upto {
            let e = self.tail[(n - self.tail_base) as usize];
            bytes.extend_from_slice(&e.key.to_le_bytes());
            bytes.extend_from_slice(&e.position.to_le_bytes());
        }
        Some((self.file.clone(), self.flushed * ENTRY_LEN, bytes))
    }

    /// Records that the first `upto` entries are durable in the file and
    /// trims the memory cache.
    pub fn flushed_to(&mut self, upto: u64) {
        self.flushed = self.flushed.max(upto.min(self.len()));
        while self.tail_base < self.flushed && self.tail.len() > CACHED {
            self.tail.pop_front();
            self.tail_base += 1;
        }
    }

    /// Entries durable in the file.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }
}

/// The entries `[0, len)` of an index that are in its file: they never
/// change while the engine runs (only reopening truncates a file).
struct Cold {
    file: File,
    len: u64,
}

impl Cold {
    fn read(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        let mut raw = vec![0u8; ((to - from) * ENTRY_LEN) as usize];
        self.file.read_exact_at(&mut raw, from * ENTRY_LEN)?;
        Ok(raw
            .chunks_exact(ENTRY_LEN as usize)
            .map(decode_entry)
            .collect())
    }

    fn get(&self, n: u64) -> io::Result<Entry> {
        let mut raw = [0u8; ENTRY_LEN as usize];
        self.file.read_exact_at(&mut raw, n * ENTRY_LEN)?;
        Ok(decode_entry(&raw))
    }
}

impl IndexFile {
    fn cold(&self) -> Cold {
        Cold {
            file: self.file.clone(),
            len: self.tail_base,
        }
    }
}

/// [`IndexFile::get`] reading the file without holding the lock.
pub fn get_shared(index: &Mutex<IndexFile>, n: u64) -> io::Result<Option<Entry>> {
    let cold = {
        let index = index.lock();
        if n >= index.tail_base {
            return index.get(n);
        }
        index.cold()
    };
    cold.get(n).map(Some)
}

/// [`IndexFile::range`] reading the file without holding the lock.
pub fn range_shared(index: &Mutex<IndexFile>, n: u64, max: usize) -> io::Result<Vec<Entry>> {
    let (cold, cold_end, hot) = {
        let index = index.lock();
        let end = index.len().min(n.saturating_add(max as u64));
        let cold_end = end.min(index.tail_base).max(n);
        let hot: Vec<Entry> = (cold_end..end)
            .map(|k| index.tail[(k - index.tail_base) as usize])
            .collect();
        (index.cold(), cold_end, hot)
    };
    let mut out = if n < cold_end {
        cold.read(n, cold_end)?
    } else {
        Vec::new()
    };
    out.extend(hot);
    Ok(out)
}

/// [`IndexFile::find`] reading the file without holding the lock.
pub fn find_shared(index: &Mutex<IndexFile>, key: u64, from: u64) -> io::Result<u64> {
    let cold = {
        let index = index.lock();
        // Keys never decrease: when the tail's first is at most `key`, so
        // is every key in the file, and the answer is in the tail.
        if index.tail.front().is_some_and(|e| e.key <= key) {
            return index.find(key, from.max(index.tail_base));
        }
        if from >= index.tail_base {
            return index.find(key, from);
        }
        index.cold()
    };
    // Entries appended since have larger keys than any wanted offset.
    let (mut lo, mut hi) = (from, cold.len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if cold.get(mid)?.key <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.saturating_sub(1).max(from))
}

/// Writes a flush job and syncs the file.
pub fn run_flush_job((file, at, bytes): &(File, u64, Vec<u8>)) -> io::Result<()> {
    file.write_all_at(bytes, *at)?;
    file.sync_data()
}

fn decode_entry(raw: &[u8]) -> Entry {
    let mut k = [0u8; 8];
    let mut p = [0u8; 8];
    k.copy_from_slice(&raw[..8]);
    p.copy_from_slice(&raw[8..16]);
    Entry {
        key: u64::from_le_bytes(k),
        position: u64::from_le_bytes(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_flush_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.idx");
        let mut idx = IndexFile::open(&crate::fs::RealFs, &path, 0).unwrap();
        for i in 0..100u64 {
            idx.push(Entry {
                key: i * 10,
                position: i * 1000,
            });
        }
        assert_eq!(idx.find(0, 0).unwrap(), 0);
        assert_eq!(idx.find(15, 0).unwrap(), 1);
        assert_eq!(idx.find(990, 0).unwrap(), 99);
        assert_eq!(idx.find(5000, 0).unwrap(), 99);
        let job = idx.flush_job(60).unwrap();
        run_flush_job(&job).unwrap();
        idx.flushed_to(60);
        assert_eq!(
            idx.get(59).unwrap(),
            Some(Entry {
                key: 590,
                position: 59000
            })
        );
        assert_eq!(idx.range(58, 4).unwrap().len(), 4);
        drop(idx);
        let idx = IndexFile::open(&crate::fs::RealFs, &path, 50).unwrap();
        assert_eq!(idx.len(), 50);
        assert_eq!(idx.find(255, 0).unwrap(), 25);
        assert_eq!(idx.find(255, 30).unwrap(), 30);
    }

    #[test]
    fn shared_reads_match_locked_ones_across_file_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexFile::open(&crate::fs::RealFs, &dir.path().join("0.idx"), 0).unwrap();
        let n = CACHED as u64 + 4000;
        let entry = |i: u64| Entry {
            key: i * 10,
            position: i * 100,
        };
        for i in 0..n {
            idx.push(entry(i));
        }
        run_flush_job(&idx.flush_job(n).unwrap()).unwrap();
        idx.flushed_to(n);
        // Some entries only in the file, then flushed ones cached, then unflushed ones.
        for i in n..n + 10 {
            idx.push(entry(i));
        }
        let cold = idx.tail_base;
        assert!(cold > 0);
        let shared = Mutex::new(idx);
        let at = [
            0,
            1,
            cold - 1,
            cold,
            cold + 1,
            n - 1,
            n,
            n + 9,
            n + 10,
            n + 50,
        ];
        for &k in &at {
            for key in [k * 10, k * 10 + 5] {
                for &from in &at {
                    let want = shared.lock().find(key, from).unwrap();
                    assert_eq!(
                        find_shared(&shared, key, from).unwrap(),
                        want,
                        "{key} {from}"
                    );
                }
            }
            assert_eq!(
                get_shared(&shared, k).unwrap(),
                shared.lock().get(k).unwrap()
            );
            for max in [1, 4, 64] {
                let want = shared.lock().range(k, max).unwrap();
                assert_eq!(range_shared(&shared, k, max).unwrap(), want, "{k} {max}");
            }
        }
    }
}
