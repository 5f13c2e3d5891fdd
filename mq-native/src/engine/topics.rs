//! Topics and partitions in memory (the durable table is
//! [`super::topic_table`]).
//!
//! Records name topics by a numeric id that is never reused: deleting a
//! topic drops its id from the table, so its records left in the log are
//! ignored, and a topic created again with the same name starts empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::driver::local_group::{GroupMembers, LocalTopic};
use mq_core::driver::offsets::Cursor;
use mq_core::driver::partition_for_key;
use mq_core::Result;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::topic_table::{TopicMeta, TopicTable};
use crate::error::io_error;
use crate::fs::Fs;
use crate::log::index::IndexFile;

/// One partition: its index, its ends and the groups' cursors over it.
#[derive(Debug)]
pub struct Partition {
    /// Batch positions by first offset.
    pub index: Mutex<IndexFile>,
    /// The next offset to assign; changed only under the writer lock.
    pub next: AtomicU64,
    /// Records below are written (and fsynced under `fsync=always`):
    /// consumers see up to here.
    pub visible: AtomicU64,
    /// The oldest offset still in the log (retention moves it).
    pub start: AtomicU64,
    /// Each group's position.
    pub cursors: Mutex<HashMap<Arc<str>, Cursor>>,
}

/// A topic.
#[derive(Debug)]
pub struct Topic {
    /// Numeric id used in records.
    pub id: u32,
    /// Name.
    pub name: Arc<str>,
    /// Where its index files live.
    pub dir: PathBuf,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Members per group, sharing the partitions.
    pub members: GroupMembers,
    /// Woken when records become visible or come back.
    pub changed: Notify,
    round_robin: AtomicU32,
    /// The topic's own retention by age in milliseconds (0: only the
    /// engine-wide retention applies).
    retention_ms: AtomicU64,
    /// Set when the topic was deleted.
    pub deleted: AtomicBool,
    /// Set while its index directory or files were created and their
    /// names not yet synced; the checkpoint syncs them before vouching
    /// for any index entry in them.
    pub unsynced_names: AtomicBool,
}

impl LocalTopic for Topic {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn members(&self) -> &GroupMembers {
        &self.members
    }

    fn give_back(&self, group: &str, member: u64, partitions: Option<&[u32]>) {
        let now = Instant::now();
        for (p, part) in self.partitions.iter().enumerate() {
            if partitions.is_some_and(|ps| !ps.contains(&(p as u32))) {
                continue;
            }
            if let Some(cursor) = part.cursors.lock().get_mut(group) {
                cursor.release_member(member, now);
            }
        }
    }

    fn wake(&self) {
        self.changed.notify_waiters();
    }
}

impl Topic {
    /// Opens (creating where missing) the index files of a topic of the table.
    pub fn open(
        fs: &Fs,
        meta: &TopicMeta,
        root: &Path,
        keep: &dyn Fn(u32) -> (u64, u64),
    ) -> Result<Self> {
        let (id, name, partitions) = (meta.id, meta.name.as_str(), meta.partitions.max(1));
        let dir = root.join(id.to_string());
        let mut unsynced = !fs.exists(&dir);
        fs.create_dir_all(&dir)
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let (entries, end) = keep(p);
            let path = dir.join(format!("{p}.idx"));
            let index = IndexFile::open(&**fs, &path, entries)
                .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
            unsynced |= index.created();
            parts.push(Partition {
                index: Mutex::new(index),
                next: AtomicU64::new(end),
                visible: AtomicU64::new(end),
                start: AtomicU64::new(0),
                cursors: Mutex::new(HashMap::new()),
            });
        }
        Ok(Topic {
            id,
            name: Arc::from(name),
            dir,
            partitions: parts,
            members: GroupMembers::default(),
            changed: Notify::new(),
            round_robin: AtomicU32::new(0),
            retention_ms: AtomicU64::new(meta.retention_ms.unwrap_or(0)),
            deleted: AtomicBool::new(false),
            unsynced_names: AtomicBool::new(unsynced),
        })
    }

    /// The topic's own retention by age, if it has one.
    pub fn retention(&self) -> Option<Duration> {
        match self.retention_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Sets the topic's own retention (the table holds it durably already).
    pub fn set_retention_ms(&self, ms: Option<u64>) {
        self.retention_ms.store(ms.unwrap_or(0), Ordering::Release);
    }

    /// The partition for a message: by key hash (the shared stable hash), else round robin.
    pub fn partition_of(&self, key: Option<&str>) -> u32 {
        let n = self.partitions.len() as u32;
        match key {
            Some(key) => partition_for_key(key, n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// Every topic, by name and by id: the in-memory view of the topic table.
#[derive(Debug)]
pub struct Topics {
    by_name: HashMap<Arc<str>, Arc<Topic>>,
    by_id: HashMap<u32, Arc<Topic>>,
}

impl Topics {
    /// Opens the topics of `table` with their indexes under `dir/index`;
    /// `keep(topic, partition)` gives the index entries and end offset the
    /// checkpoint vouches for. Index directories of topics the table no
    /// longer has (deleted just before a crash) are removed.
    pub fn open(
        fs: &Fs,
        dir: &Path,
        table: &TopicTable,
        keep: &dyn Fn(u32, u32) -> (u64, u64),
    ) -> Result<Self> {
        let root = index_root(dir);
        crate::fs::create_dir_durable(&**fs, &root)
            .map_err(|e| io_error(format!("creating {}", root.display()), e))?;
        let mut topics = Topics {
            by_name: HashMap::new(),
            by_id: HashMap::new(),
        };
        for meta in table.topics() {
            let topic = Topic::open(fs, meta, &root, &|p| keep(meta.id, p))?;
            topics.insert(Arc::new(topic));
        }
        let names = fs
            .read_dir(&root)
            .map_err(|e| io_error(format!("listing {}", root.display()), e))?;
        for name in names {
            let id = name.to_str().and_then(|n| n.parse::<u32>().ok());
            if id.is_some_and(|id| table.get(id).is_none()) {
                let _ = fs.remove_dir_all(&root.join(name));
            }
        }
        Ok(topics)
    }

    /// A topic by name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.by_name.get(name).cloned()
    }

    /// A topic by id.
    pub fn by_id(&self, id: u32) -> Option<Arc<Topic>> {
        self.by_id.get(&id).cloned()
    }

    /// Every topic.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.by_id.values().cloned().collect();
        all.sort_by_key(|t| t.id);
        all
    }

    /// Makes a topic the table holds durably visible.
    pub fn insert(&mut self, topic: Arc<Topic>) {
        self.by_name.insert(topic.name.clone(), topic.clone());
        self.by_id.insert(topic.id, topic);
    }

    /// Forgets a topic the table dropped durably.
    pub fn remove(&mut self, topic: &Topic) {
        self.by_name.remove(&topic.name);
        self.by_id.remove(&topic.id);
    }
}

/// Where the topics of data directory `dir` keep their index directories.
pub fn index_root(dir: &Path) -> PathBuf {
    dir.join("index")
}

/// A retention in whole milliseconds, at least 1 (none means only the
/// engine's in the table), saturating where a `Duration` holds more.
pub fn retention_ms(retention: Duration) -> u64 {
    u64::try_from(retention.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
