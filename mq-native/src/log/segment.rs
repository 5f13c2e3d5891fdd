//! Commit-log segment files and the ordered set of them.
//!
//! The commit log is one contiguous byte space ("positions") cut into
//! segment files named by the position of their first byte
//! (`00000000000000000000.log`). A batch never spans two segments; when the
//! active segment would grow past the configured size the writer starts a
//! new one at the current position, so positions have no gaps.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::fs::{File, Fs};

/// The largest log position: file offsets are signed 64-bit, so no
/// segment the engine wrote starts past it, and positions from segment
/// names plus file lengths cannot overflow.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    /// Position of the segment's first byte.
    pub base: u64,
    /// Path of the file.
    pub path: PathBuf,
    file: File,
}

impl Segment {
    /// The file name of the segment starting at `base`.
    pub fn file_name(base: u64) -> String {
        format!("{base:020}.log")
    }

    /// Opens (or creates) the segment starting at `base` in `dir`.
    pub fn open(fs: &Fs, dir: &Path, base: u64, create: bool) -> io::Result<Self> {
        let path = dir.join(Self::file_name(base));
        let file = fs.open(&path, create)?;
        Ok(Segment { base, path, file })
    }

    /// Reads at a log position; returns the bytes read (short at the end of the file).
    pub fn read_at(&self, position: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, position.saturating_sub(self.base))
    }

    /// Reads up to `len` bytes at a log position into a new buffer (short at
    /// the end of the file).
    pub fn read_vec(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read_vec(position.saturating_sub(self.base), len)
    }

    /// Writes at a log position.
    pub fn write_at(&self, position: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, position - self.base)
    }

    /// Flushes written data to the device.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the file.
    pub fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Cuts the file at log position `position`.
    pub fn truncate(&self, position: u64) -> io::Result<()> {
        self.file.set_len(position.saturating_sub(self.base))?;
        self.file.sync_all()
    }

    /// Last modification time, used for retention by age.
    pub fn modified(&self) -> io::Result<std::time::SystemTime> {
        self.file.modified()
    }
}

/// The segments of the commit log, oldest first.
#[derive(Debug)]
pub struct SegmentSet {
    /// The log directory.
    pub dir: PathBuf,
    fs: Fs,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Bumped when a failed write is rolled back: positions past the cut
    /// will hold other bytes, so readers drop what they cached.
    generation: std::sync::atomic::AtomicU64,
}

impl SegmentSet {
    /// Changes each time written bytes are taken back (see [`SegmentSet::invalidate`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks every cached read of this log as stale; called after a rollback.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Opens every `*.log` file in `dir`, sorted by base position.
    pub fn open(fs: &Fs, dir: &Path) -> io::Result<Self> {
        let mut segments = Vec::new();
        for name in fs.read_dir(dir)? {
            let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push(Arc::new(Segment::open(fs, dir, base, false)?));
        }
        segments.sort_by_key(|s| s.base);
        Ok(SegmentSet {
            dir: dir.to_owned(),
            fs: fs.clone(),
            segments: RwLock::new(segments),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// All segments, oldest first.
    pub fn all(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// The segment holding `position` (binary search over bases).
    pub fn find(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let i = segments.partition_point(|s| s.base <= position);
        i.checked_sub(1).map(|i| segments[i].clone())
    }

    /// The newest segment.
    pub fn last(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }

    /// The oldest segment.
    pub fn first(&self) -> Option<Arc<Segment>> {
        self.segments.read().first().cloned()
    }

    /// Creates the segment starting at `base` and makes its name durable.
    pub fn create(&self, base: u64) -> io::Result<Arc<Segment>> {
        let segment = Arc::new(Segment::open(&self.fs, &self.dir, base, true)?);
        self.fs.sync_dir(&self.dir)?;
        let mut segments = self.segments.write();
        segments.retain(|s| s.base != base);
        segments.push(segment.clone());
        segments.sort_by_key(|s| s.base);
        Ok(segment)
    }

    /// Deletes a segment file (retention, or an unreachable segment at recovery).
    pub fn remove(&self, base: u64) -> io::Result<()> {
        let removed = {
            let mut segments = self.segments.write();
            let at = segments.iter().position(|s| s.base == base);
            at.map(|i| segments.remove(i))
        };
        if let Some(segment) = removed {
            self.fs.remove_file(&segment.path)?;
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
