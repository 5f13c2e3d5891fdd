//! A simulated file system for power-loss tests.
//!
//! It keeps in memory what was written apart from what was synced (file
//! data by `sync_data`/`sync_all`, directory entries by a directory sync)
//! and, at a crash point, freezes what a power loss would leave: the
//! durable state plus, chosen by a seeded generator, none, a prefix (the
//! last write possibly torn) or a random subset of pages of the unsynced
//! writes, and a prefix of each directory's unsynced creations, renames
//! and removals. Every operation after the crash fails, as on a machine
//! that lost power; [`SimFs::reboot`] gives a file system holding only
//! what survived.
//!
//! The crash point is the n-th mutating operation (write, length change,
//! sync, create, rename, removal, directory creation or sync), counted
//! across threads; a sequential workload makes that order, and so a seed's
//! crash, reproducible.

mod rng;
mod tree;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use super::{File, FileSystem, FsFile, LockError, LockGuard};
pub use rng::Rng;
use tree::{not_found, Chooser, DataOp, DirNode, FileNode, Ino, Node, Tree};

/// How a power loss treats unsynced data.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Percent of crashes whose files may keep a random subset of unsynced
    /// 4 KiB pages (reordered write-back) instead of a prefix of writes.
    pub pages_percent: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { pages_percent: 30 }
    }
}

#[derive(Debug)]
struct State {
    tree: Tree,
    rng: Rng,
    faults: Faults,
    /// Mutating operations so far.
    ops: u64,
    /// The operation that loses power.
    crash_at: Option<u64>,
    /// What survived, once power was lost.
    image: Option<Tree>,
    /// When power was lost.
    crashed_at: Option<Instant>,
    locked: Vec<PathBuf>,
}

/// The simulated file system; clones share it.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn lost() -> io::Error {
    io::Error::other("simulated power loss")
}

struct Choose<'a> {
    rng: &'a mut Rng,
    pages: bool,
}

impl Chooser for Choose<'_> {
    fn dir_ops_kept(&mut self, n: usize) -> usize {
        match self.rng.below(3) {
            0 => 0,
            1 => n,
            _ => self.rng.below(n as u64 + 1) as usize,
        }
    }

    fn file_kept(&mut self, f: &FileNode) -> Vec<u8> {
        if f.unsynced.is_empty() {
            return f.durable.clone();
        }
        if self.pages && self.rng.chance(50) {
            return pages_kept(self.rng, f);
        }
        let keep = self.rng.below(f.unsynced.len() as u64 + 1) as usize;
        let mut data = tree::replay(f.durable.clone(), &f.unsynced[..keep]);
        if let Some(DataOp::Write(at, bytes)) = f.unsynced.get(keep) {
            if self.rng.chance(50) {
                // The next write torn: only a prefix of it reached the disk.
                let cut = self.rng.below(bytes.len() as u64) as usize;
                data = tree::replay(data, &[DataOp::Write(*at, bytes[..cut].to_vec())]);
            }
        }
        data
    }
}

/// The old or the new length, each 4 KiB page from the old or the new
/// content (zeros where the chosen side has none): write-back in any order.
fn pages_kept(rng: &mut Rng, f: &FileNode) -> Vec<u8> {
    const PAGE: usize = 4096;
    let len = if rng.chance(50) {
        f.data.len()
    } else {
        f.durable.len()
    };
    let mut out = vec![0u8; len];
    for start in (0..len).step_by(PAGE) {
        let end = (start + PAGE).min(len);
        let src = if rng.chance(50) { &f.data } else { &f.durable };
        if start < src.len() {
            let upto = end.min(src.len());
            out[start..upto].copy_from_slice(&src[start..upto]);
        }
    }
    out
}

impl SimFs {
    /// An empty file system (only `/`) whose crash decisions follow `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        SimFs::from_tree(Tree::default(), Rng::new(seed), faults)
    }

    fn from_tree(tree: Tree, rng: Rng, faults: Faults) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(State {
                tree,
                rng,
                faults,
                ops: 0,
                crash_at: None,
                image: None,
                crashed_at: None,
                locked: Vec::new(),
            })),
        }
    }

    /// Loses power at the `n`-th mutating operation from now (0: the next).
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some(s.ops + n);
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// When power was lost.
    pub fn crashed_at(&self) -> Option<Instant> {
        self.state.lock().crashed_at
    }

    /// Whether power was lost.
    pub fn crashed(&self) -> bool {
        self.state.lock().image.is_some()
    }

    /// Loses power now, if it was not lost yet.
    pub fn crash(&self) {
        let mut s = self.state.lock();
        if s.image.is_none() {
            freeze(&mut s);
        }
    }

    /// A file system holding what survived the power loss (losing power
    /// now if it was not lost yet); its generator continues this one's.
    pub fn reboot(&self) -> SimFs {
        self.crash();
        let mut s = self.state.lock();
        let tree = s.image.clone().unwrap_or_default();
        let rng = Rng::new(s.rng.next_u64());
        SimFs::from_tree(tree, rng, s.faults)
    }

    /// Runs a mutating operation: counts it, and loses power instead of
    /// running it at the crash point. `torn` is what of a write reaches
    /// the disk when power goes during it.
    fn mutate<T>(
        &self,
        torn: Option<(Ino, u64, &[u8])>,
        op: impl FnOnce(&mut Tree) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.image.is_some() {
            return Err(lost());
        }
        s.ops += 1;
        if s.crash_at.is_some_and(|at| s.ops > at) {
            if let Some((ino, at, bytes)) = torn {
                if s.rng.chance(50) {
                    let cut = s.rng.below(bytes.len() as u64) as usize;
                    let _ = s.tree.change(ino, DataOp::Write(at, bytes[..cut].to_vec()));
                }
            }
            freeze(&mut s);
            return Err(lost());
        }
        op(&mut s.tree)
    }

    /// Runs a read: fails once power was lost.
    fn look<T>(&self, op: impl FnOnce(&Tree) -> io::Result<T>) -> io::Result<T> {
        let s = self.state.lock();
        if s.image.is_some() {
            return Err(lost());
        }
        op(&s.tree)
    }

    fn handle(&self, ino: Ino) -> File {
        Arc::new(SimFile {
            fs: self.clone(),
            ino,
        })
    }
}

fn freeze(s: &mut State) {
    s.crashed_at = Some(Instant::now());
    let pages = s.rng.chance(s.faults.pages_percent);
    let mut choose = Choose {
        rng: &mut s.rng,
        pages,
    };
    s.image = Some(s.tree.after_power_loss(&mut choose));
}

/// An open simulated file.
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: Ino,
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fs.look(|t| {
            let data = &t.file(self.ino)?.data;
            let at = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - at);
            buf[..n].copy_from_slice(&data[at..at + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.fs.mutate(Some((self.ino, offset, data)), |t| {
            t.change(self.ino, DataOp::Write(offset, data.to_vec()))
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.fs.look(|t| Ok(t.file(self.ino)?.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs
            .mutate(None, |t| t.change(self.ino, DataOp::SetLen(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.mutate(None, |t| t.sync_file(self.ino))
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.fs
            .look(|t| Ok(t.file(self.ino)?.modified.unwrap_or(SystemTime::UNIX_EPOCH)))
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<File> {
        let found = self.look(|t| Ok(t.lookup(path).ok()))?;
        match found {
            Some(ino) => {
                self.look(|t| t.file(ino).map(drop))?;
                Ok(self.handle(ino))
            }
            None if create => {
                let ino = self.mutate(None, |t| {
                    let (dir, name) = t.parent_of(path)?;
                    let ino = t.new_node(Node::File(FileNode::default()));
                    t.link(dir, name, ino);
                    Ok(ino)
                })?;
                Ok(self.handle(ino))
            }
            None => Err(not_found(path)),
        }
    }

    fn create(&self, path: &Path) -> io::Result<File> {
        let file = self.open(path, true)?;
        file.set_len(0)?;
        Ok(file)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.look(|t| Ok(t.file(t.lookup(path)?)?.data.clone()))
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        self.look(|t| Ok(t.is_dir(t.lookup(path)?)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(p) = at {
            match self.look(|t| Ok(t.lookup(p).ok().map(|ino| t.is_dir(ino))))? {
                Some(true) => break,
                Some(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", p.display()),
                    ))
                }
                None => missing.push(p),
            }
            at = p.parent();
        }
        for p in missing.into_iter().rev() {
            self.mutate(None, |t| {
                let (dir, name) = t.parent_of(p)?;
                let ino = t.new_node(Node::Dir(DirNode::default()));
                t.link(dir, name, ino);
                Ok(())
            })?;
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.look(|t| t.names(t.lookup(path)?).ok_or_else(|| not_found(path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(None, |t| {
            let (src, name) = t.parent_of(from)?;
            let (dst, new_name) = t.parent_of(to)?;
            let ino = t.unlink(src, name).ok_or_else(|| not_found(from))?;
            t.link(dst, new_name, ino);
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.mutate(None, |t| {
            let (dir, name) = t.parent_of(path)?;
            t.unlink(dir, name).map(drop).ok_or_else(|| not_found(path))
        })
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // Only the directory's own entry goes: what it held becomes
        // unreachable with it, as on a disk.
        self.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.mutate(None, |t| {
            let ino = t.lookup(path)?;
            t.sync_dir(ino);
            Ok(())
        })
    }

    fn lock_dir(&self, dir: &Path) -> Result<LockGuard, LockError> {
        let mut s = self.state.lock();
        if s.locked.iter().any(|p| p == dir) {
            return Err(LockError::Held("another simulated engine".into()));
        }
        s.locked.push(dir.to_owned());
        Ok(Box::new(SimLock {
            fs: self.clone(),
            dir: dir.to_owned(),
        }))
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.state.lock().locked.retain(|p| *p != self.dir);
    }
}
