//! Topics and partitions, and the topic table `topics.json`.
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
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::io_error;
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
    fn open(meta: &TopicMeta, root: &Path, keep: &dyn Fn(u32) -> (u64, u64)) -> Result<Self> {
        let (id, name, partitions) = (meta.id, meta.name.as_str(), meta.partitions.max(1));
        let dir = root.join(id.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let (entries, end) = keep(p);
            let path = dir.join(format!("{p}.idx"));
            let index = IndexFile::open(&path, entries)
                .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
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
        })
    }

    /// The topic's own retention by age, if it has one.
    pub fn retention(&self) -> Option<Duration> {
        match self.retention_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn meta(&self) -> TopicMeta {
        TopicMeta {
            id: self.id,
            name: self.name.to_string(),
            partitions: self.partitions.len() as u32,
            retention_ms: self.retention().map(|r| r.as_millis() as u64),
        }
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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TopicMeta {
    id: u32,
    name: String,
    partitions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    next_id: u32,
    topics: Vec<TopicMeta>,
}

/// Every topic, by name and by id.
#[derive(Debug)]
pub struct Topics {
    root: PathBuf,
    file: PathBuf,
    by_name: HashMap<Arc<str>, Arc<Topic>>,
    by_id: HashMap<u32, Arc<Topic>>,
    next_id: u32,
}

impl Topics {
    /// Loads the table in `dir`; `keep(topic, partition)` gives the index
    /// entries and end offset the checkpoint vouches for.
    pub fn load(dir: &Path, keep: &dyn Fn(u32, u32) -> (u64, u64)) -> Result<Self> {
        let root = dir.join("index");
        std::fs::create_dir_all(&root)
            .map_err(|e| io_error(format!("creating {}", root.display()), e))?;
        let file = dir.join("topics.json");
        let table: TopicsFile = match crate::fsutil::read_optional(&file)
            .map_err(|e| io_error(format!("reading {}", file.display()), e))?
        {
            None => TopicsFile {
                next_id: 1,
                topics: Vec::new(),
            },
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| crate::error::corrupt(&file, 0, format!("not a topic table: {e}")))?,
        };
        let mut topics = Topics {
            root,
            file,
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            next_id: table.next_id.max(1),
        };
        for meta in table.topics {
            let topic = Arc::new(Topic::open(&meta, &topics.root, &|p| keep(meta.id, p))?);
            topics.by_name.insert(topic.name.clone(), topic.clone());
            topics.by_id.insert(meta.id, topic);
            topics.next_id = topics.next_id.max(meta.id + 1);
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

    /// Creates a topic and makes the table durable before returning.
    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        retention: Option<Duration>,
    ) -> Result<Arc<Topic>> {
        let id = self.next_id;
        let meta = TopicMeta {
            id,
            name: name.to_owned(),
            partitions,
            retention_ms: retention.map(retention_ms),
        };
        let topic = Arc::new(Topic::open(&meta, &self.root, &|_| (0, 0))?);
        self.next_id += 1;
        self.by_name.insert(topic.name.clone(), topic.clone());
        self.by_id.insert(id, topic.clone());
        if let Err(e) = self.save() {
            self.by_name.remove(name);
            self.by_id.remove(&id);
            return Err(e);
        }
        Ok(topic)
    }

    /// Changes a topic's own retention and makes the table durable.
    pub fn set_retention(&mut self, topic: &Topic, retention: Duration) -> Result<()> {
        let before = topic.retention_ms.load(Ordering::Acquire);
        let after = retention_ms(retention);
        if before == after {
            return Ok(());
        }
        topic.retention_ms.store(after, Ordering::Release);
        self.save().inspect_err(|_| {
            topic.retention_ms.store(before, Ordering::Release);
        })
    }

    /// Deletes a topic: drops it from the table and removes its indexes.
    pub fn delete(&mut self, name: &str) -> Result<Option<Arc<Topic>>> {
        let Some(topic) = self.by_name.remove(name) else {
            return Ok(None);
        };
        self.by_id.remove(&topic.id);
        self.save()?;
        topic.deleted.store(true, Ordering::Release);
        let _ = std::fs::remove_dir_all(&topic.dir);
        topic.changed.notify_waiters();
        Ok(Some(topic))
    }

    fn save(&self) -> Result<()> {
        let table = TopicsFile {
            next_id: self.next_id,
            topics: self.all().iter().map(|t| t.meta()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&table)
            .map_err(|e| crate::error::backend(format!("encoding the topic table: {e}")))?;
        crate::fsutil::write_atomic(&self.file, &bytes)
            .map_err(|e| io_error(format!("writing {}", self.file.display()), e))
    }
}

/// A retention in whole milliseconds, at least 1 (0 means none in the table).
fn retention_ms(retention: Duration) -> u64 {
    (retention.as_millis() as u64).max(1)
}
