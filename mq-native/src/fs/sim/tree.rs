//! The simulated file system's state: inodes whose data keeps what was
//! written apart from what was synced, and directories whose entries keep
//! what changed apart from what a directory sync made durable.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path};
use std::time::SystemTime;

/// An inode number.
pub type Ino = u64;

/// The root directory, durable from the start.
pub const ROOT: Ino = 0;

/// A change to a file's data since its last sync.
#[derive(Debug, Clone)]
pub enum DataOp {
    /// Bytes written at an offset.
    Write(u64, Vec<u8>),
    /// The length set.
    SetLen(u64),
}

/// A change to a directory's entries since its last sync.
#[derive(Debug, Clone)]
pub enum DirOp {
    /// A name now points at an inode (created, or renamed here).
    Link(OsString, Ino),
    /// A name is gone (removed, or renamed away).
    Unlink(OsString),
}

/// A regular file.
#[derive(Debug, Clone, Default)]
pub struct FileNode {
    /// What reads see.
    pub data: Vec<u8>,
    /// What a power loss keeps for sure.
    pub durable: Vec<u8>,
    /// Changes from `durable` to `data`, in order.
    pub unsynced: Vec<DataOp>,
    /// Last write.
    pub modified: Option<SystemTime>,
}

/// A directory.
#[derive(Debug, Clone, Default)]
pub struct DirNode {
    /// What lookups see.
    pub entries: BTreeMap<OsString, Ino>,
    /// What a power loss keeps for sure.
    pub durable: BTreeMap<OsString, Ino>,
    /// Changes from `durable` to `entries`, in order.
    pub unsynced: Vec<DirOp>,
}

/// A file or a directory.
#[derive(Debug, Clone)]
pub enum Node {
    /// A regular file.
    File(FileNode),
    /// A directory.
    Dir(DirNode),
}

/// Every inode, by number.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The inodes; unlinked ones stay while handles may use them.
    pub nodes: HashMap<Ino, Node>,
    next: Ino,
}

pub fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn apply_data(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write(at, bytes) => {
            let at = *at as usize;
            if data.len() < at + bytes.len() {
                data.resize(at + bytes.len(), 0);
            }
            data[at..at + bytes.len()].copy_from_slice(bytes);
        }
        DataOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

fn apply_dir(entries: &mut BTreeMap<OsString, Ino>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
    }
}

impl Default for Tree {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        Tree { nodes, next: 1 }
    }
}

impl Tree {
    fn dir(&self, ino: Ino) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    /// The file of inode `ino`.
    pub fn file(&self, ino: Ino) -> io::Result<&FileNode> {
        match self.nodes.get(&ino) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(io::Error::other("not a file")),
        }
    }

    /// The file of inode `ino`, to change.
    pub fn file_mut(&mut self, ino: Ino) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(io::Error::other("not a file")),
        }
    }

    /// The inode `path` names.
    pub fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut at = ROOT;
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => {
                    at = *self
                        .dir(at)
                        .and_then(|d| d.entries.get(name))
                        .ok_or_else(|| not_found(path))?;
                }
                _ => return Err(io::Error::other("unsupported path component")),
            }
        }
        Ok(at)
    }

    /// The directory holding `path` and the last component's name.
    pub fn parent_of<'p>(&self, path: &'p Path) -> io::Result<(Ino, &'p OsStr)> {
        let name = path.file_name().ok_or_else(|| not_found(path))?;
        let parent = path.parent().ok_or_else(|| not_found(path))?;
        let dir = self.lookup(parent)?;
        self.dir(dir).ok_or_else(|| not_found(parent))?;
        Ok((dir, name))
    }

    /// Whether inode `ino` is a directory.
    pub fn is_dir(&self, ino: Ino) -> bool {
        self.dir(ino).is_some()
    }

    /// Names in directory `ino`.
    pub fn names(&self, ino: Ino) -> Option<Vec<OsString>> {
        self.dir(ino).map(|d| d.entries.keys().cloned().collect())
    }

    /// A new inode, not yet linked anywhere.
    pub fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// Points `name` in `dir` at `ino` (not durable until `dir` is synced).
    pub fn link(&mut self, dir: Ino, name: &OsStr, ino: Ino) {
        if let Some(d) = self.dir_mut(dir) {
            d.entries.insert(name.to_owned(), ino);
            d.unsynced.push(DirOp::Link(name.to_owned(), ino));
        }
    }

    /// Removes `name` from `dir` (not durable until `dir` is synced).
    pub fn unlink(&mut self, dir: Ino, name: &OsStr) -> Option<Ino> {
        let d = self.dir_mut(dir)?;
        let ino = d.entries.remove(name)?;
        d.unsynced.push(DirOp::Unlink(name.to_owned()));
        Some(ino)
    }

    /// Makes directory `ino`'s entries durable.
    pub fn sync_dir(&mut self, ino: Ino) {
        if let Some(d) = self.dir_mut(ino) {
            d.durable = d.entries.clone();
            d.unsynced.clear();
        }
    }

    /// Records a change to file `ino`'s data.
    pub fn change(&mut self, ino: Ino, op: DataOp) -> io::Result<()> {
        let f = self.file_mut(ino)?;
        apply_data(&mut f.data, &op);
        f.unsynced.push(op);
        f.modified = Some(SystemTime::now());
        Ok(())
    }

    /// Makes file `ino`'s data durable.
    pub fn sync_file(&mut self, ino: Ino) -> io::Result<()> {
        let f = self.file_mut(ino)?;
        for op in std::mem::take(&mut f.unsynced) {
            apply_data(&mut f.durable, &op);
        }
        Ok(())
    }

    /// What a power loss now leaves: every durable entry and byte, plus
    /// what `chooser` keeps of the changes not synced yet. Inodes no
    /// durable name reaches are gone.
    pub fn after_power_loss(&self, chooser: &mut dyn Chooser) -> Tree {
        let mut out = Tree {
            nodes: HashMap::new(),
            next: self.next,
        };
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if out.nodes.contains_key(&ino) {
                continue;
            }
            let node = match self.nodes.get(&ino) {
                Some(Node::Dir(d)) => {
                    let mut entries = d.durable.clone();
                    let keep = chooser.dir_ops_kept(d.unsynced.len());
                    for op in &d.unsynced[..keep] {
                        apply_dir(&mut entries, op);
                    }
                    stack.extend(entries.values().copied());
                    Node::Dir(DirNode {
                        durable: entries.clone(),
                        entries,
                        unsynced: Vec::new(),
                    })
                }
                Some(Node::File(f)) => {
                    let data = chooser.file_kept(f);
                    Node::File(FileNode {
                        durable: data.clone(),
                        data,
                        unsynced: Vec::new(),
                        modified: f.modified,
                    })
                }
                None => continue,
            };
            out.nodes.insert(ino, node);
        }
        out
    }
}

/// Decides what of the unsynced state a power loss keeps.
pub trait Chooser {
    /// How many of a directory's `n` unsynced changes (a prefix) survive.
    fn dir_ops_kept(&mut self, n: usize) -> usize;
    /// What a file holds after the power loss.
    fn file_kept(&mut self, file: &FileNode) -> Vec<u8>;
}

/// Applies `ops` to `data`.
pub fn replay(mut data: Vec<u8>, ops: &[DataOp]) -> Vec<u8> {
    for op in ops {
        apply_data(&mut data, op);
    }
    data
}
