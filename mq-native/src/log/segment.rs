//! Commit-log segment files and the ordered set of them.
//!
//! The commit log is one contiguous byte space ("positions") cut into
//! segment files named by the position of their first byte
//! (`00000000000000000000.log`). A batch never spans two segments; when the
//! active segment would grow past the configured size the writer starts a
//! new one at the current position, so positions have no gaps.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

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
    pub fn open(dir: &Path, base: u64, create: bool) -> io::Result<Self> {
        let path = dir.join(Self::file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)?;
        Ok(Segment { base, path, file })
    }

    /// Reads at a log position; returns the bytes read (short at the end of the file).
    pub fn read_at(&self, position: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut at = position.saturating_sub(self.base);
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read_at(&mut buf[filled..], at) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    /// Reads up to `len` bytes at a log position into a new buffer (short at
    /// the end of the file). The buffer is not zeroed first: the kernel
    /// fills it, and zeroing it cost as much as the copy.
    pub fn read_vec(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let mut at = position.saturating_sub(self.base);
        while buf.len() < len {
            let want = len - buf.len();
            let spare = &mut buf.spare_capacity_mut()[..want];
            // SAFETY: pread writes at most `spare.len()` bytes into memory
            // the vector owns, and returns how many it wrote.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    at as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            // SAFETY: the `n` bytes after the length were just written.
            unsafe { buf.set_len(buf.len() + n as usize) };
            at += n as u64;
        }
        Ok(buf)
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
        Ok(self.file.metadata()?.len())
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
        self.file.metadata()?.modified()
    }
}

/// The segments of the commit log, oldest first.
#[derive(Debug)]
pub struct SegmentSet {
    /// The log directory.
    pub dir: PathBuf,
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
    pub fn open(dir: &Path) -> io::Result<Self> {
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push(Arc::new(Segment::open(dir, base, false)?));
        }
        segments.sort_by_key(|s| s.base);
        Ok(SegmentSet {
            dir: dir.to_owned(),
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
        let segment = Arc::new(Segment::open(&self.dir, base, true)?);
        crate::fsutil::sync_dir(&self.dir)?;
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
            std::fs::remove_file(&segment.path)?;
            crate::fsutil::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
