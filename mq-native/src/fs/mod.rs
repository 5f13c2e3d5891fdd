//! The engine's file-operation seam: every byte the engine reads or
//! writes, every rename, removal, directory creation and directory sync
//! goes through [`FileSystem`] and [`FsFile`].
//!
//! Production uses [`RealFs`] (chosen once at open, one virtual call per
//! syscall). Tests can open the engine on [`sim::SimFs`], an in-memory file
//! system that keeps unsynced writes and directory changes apart from
//! durable ones and simulates a power loss, which a killed process cannot:
//! its writes stay in the page cache.

mod real;
pub mod sim;

use std::ffi::OsString;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use real::RealFs;

/// An open file: positional reads and writes, length, sync.
pub trait FsFile: Send + Sync + Debug {
    /// Reads at `offset`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Reads up to `len` bytes at `offset` into a new buffer (short at the
    /// end of the file).
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_at(buf, offset)? < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`.
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Bytes in the file.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the written data (and the length) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes data and metadata durable: `fsync`.
    fn sync_all(&self) -> io::Result<()>;

    /// Last modification time.
    fn modified(&self) -> io::Result<SystemTime>;
}

/// A shared open file.
pub type File = Arc<dyn FsFile>;

/// A held directory lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Debug + Send + Sync>;

/// Why the directory lock was not taken.
pub enum LockError {
    /// Another process (or another engine in this one) holds it.
    Held(String),
    /// The file could not be opened or locked.
    Io(io::Error),
}

/// The file-system operations the engine uses.
pub trait FileSystem: Send + Sync + Debug {
    /// Opens `path` for reading and writing, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<File>;

    /// Creates `path` empty (cutting it if it exists), for reading and writing.
    fn create(&self, path: &Path) -> io::Result<File>;

    /// A whole file's content.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Whether `path` names a directory (`NotFound` when nothing is there).
    fn is_dir(&self, path: &Path) -> io::Result<bool>;

    /// Whether something is at `path`.
    fn exists(&self, path: &Path) -> bool {
        self.is_dir(path).is_ok()
    }

    /// Creates `path` and missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Names in a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of directory `path` (creations, renames,
    /// removals in it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Takes the exclusive lock of data directory `dir`.
    fn lock_dir(&self, dir: &Path) -> Result<LockGuard, LockError>;
}

/// The file system the engine runs on.
pub type Fs = Arc<dyn FileSystem>;

/// The real file system.
pub fn real() -> Fs {
    Arc::new(RealFs)
}

/// Replaces `path` with `data`: write a temp file, fsync it, rename it over
/// `path`, fsync the directory. A crash leaves the old or the new content,
/// never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let file = fs.create(&tmp)?;
        file.write_all_at(data, 0)?;
        file.sync_all()?;
    }
    fs.rename(&tmp, path)?;
    fs.sync_dir(dir)
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(fs: &dyn FileSystem, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates directory `path` (and missing parents) and makes its name
/// durable: a directory whose entry a power loss can take back takes every
/// file in it along.
pub fn create_dir_durable(fs: &dyn FileSystem, path: &Path) -> io::Result<()> {
    if fs.is_dir(path).unwrap_or(false) {
        return Ok(());
    }
    // The missing ancestors, outermost first, each synced into its parent.
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if fs.exists(p) {
            break;
        }
        missing.push(p);
        at = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    fs.create_dir_all(path)?;
    for p in missing.into_iter().rev() {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)?;
        }
    }
    Ok(())
}
