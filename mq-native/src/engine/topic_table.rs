//! The durable topic table: a snapshot (`topics.json`) plus an append-only
//! journal (`topics.journal`) of the changes made since.
//!
//! Creating, deleting or changing a topic appends one small record and
//! fsyncs it before the change is acknowledged, so the cost of a change
//! does not grow with the number of topics (rewriting the whole table for
//! each one made creating N topics O(N²)). When the journal has grown past
//! the snapshot it is folded into a new snapshot, written atomically, and
//! emptied: every journaled byte is rewritten a bounded number of times,
//! so N changes cost O(N) bytes and fsyncs overall.
//!
//! Journal record: `len:u32 crc32c:u32 body`, body the JSON of
//! `{"seq": n, "change": {...}}`. The snapshot names the last `seq` it
//! holds; replay skips records at or below it, so a crash between writing
//! a snapshot and emptying the journal applies nothing twice. A torn last
//! record (a crash mid-append, never acknowledged) is cut off; a bad record
//! followed by a good one is corruption and opening fails naming the byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mq_core::Result;
use serde::{Deserialize, Serialize};

use crate::error::{backend, corrupt, io_error};
use crate::fs::{File, Fs};

#[cfg(test)]
#[path = "topic_table_fuzz.rs"]
mod fuzz;

/// Journal bytes below which it is never folded into the snapshot.
const FOLD_MIN: u64 = 64 * 1024;

/// A topic as the table stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Numeric id, never reused.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// The topic's own retention by age (milliseconds, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

/// One change to the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A new topic.
    Create(TopicMeta),
    /// A topic is gone.
    Delete {
        /// Its id.
        id: u32,
    },
    /// A topic's own retention changed.
    Retention {
        /// Its id.
        id: u32,
        /// The new retention in milliseconds (none: only the engine's).
        retention_ms: Option<u64>,
    },
}

#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    change: Change,
}

#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    next_id: u32,
    topics: Vec<TopicMeta>,
    /// The last journal record the snapshot holds (absent in tables
    /// written before the journal existed).
    #[serde(default)]
    journal_seq: u64,
}

/// What keeping the table durable has cost since the engine opened: the
/// engine's tests count it to show a change costs the same however many
/// topics exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableWrites {
    /// Bytes written to the journal and snapshots.
    pub bytes: u64,
    /// Fsyncs of their files and directory.
    pub syncs: u64,
}

/// The table and the files that keep it.
#[derive(Debug)]
pub struct TopicTable {
    fs: Fs,
    snapshot_path: PathBuf,
    journal_path: PathBuf,
    journal: File,
    journal_len: u64,
    snapshot_len: u64,
    /// The last record written.
    seq: u64,
    next_id: u32,
    topics: BTreeMap<u32, TopicMeta>,
    writes: TableWrites,
}

impl TopicTable {
    /// Loads the table of `dir`: its snapshot, then the journal past it.
    pub fn load(fs: &Fs, dir: &Path) -> Result<Self> {
        let snapshot_path = dir.join("topics.json");
        let journal_path = dir.join("topics.journal");
        let (snapshot, snapshot_len) = match crate::fs::read_optional(&**fs, &snapshot_path)
            .map_err(|e| io_error(format!("reading {}", snapshot_path.display()), e))?
        {
            None => (Snapshot::default(), 0),
            Some(bytes) => (
                serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&snapshot_path, 0, format!("not a topic table: {e}")))?,
                bytes.len() as u64,
            ),
        };
        let mut table = TopicTable {
            journal: open_journal(fs, &journal_path)?,
            fs: fs.clone(),
            snapshot_path,
            journal_path,
            journal_len: 0,
            snapshot_len,
            seq: snapshot.journal_seq,
            next_id: snapshot.next_id.max(1),
            topics: BTreeMap::new(),
            writes: TableWrites::default(),
        };
        for meta in snapshot.topics {
            table.apply(Change::Create(meta));
        }
        table.replay()?;
        Ok(table)
    }

    fn replay(&mut self) -> Result<()> {
        let path = self.journal_path.clone();
        let data = crate::fs::read_optional(&*self.fs, &path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?
            .unwrap_or_default();
        let mut at = 0;
        while at < data.len() {
            let Some((record, used)) = decode(&data[at..]) else {
                let next = frame_len(&data[at..]).map(|len| at + len);
                if next.is_some_and(|next| next < data.len() && decode(&data[next..]).is_some()) {
                    return Err(corrupt(
                        &path,
                        at as u64,
                        "a bad topic record before good ones",
                    ));
                }
                tracing::warn!(file = %path.display(), at, "native engine: truncating a torn topic journal tail");
                break;
            };
            // A record at or below the seq reached is one the snapshot
            // holds already (a crash came between writing it and
            // emptying the journal).
            if record.seq > self.seq {
                self.seq = record.seq;
                self.apply(record.change);
            }
            at += used;
        }
        self.journal_len = at as u64;
        if self.journal_len < data.len() as u64 {
            self.journal
                .set_len(self.journal_len)
                .and_then(|()| self.journal.sync_all())
                .map_err(|e| io_error(format!("truncating {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Every topic, by id.
    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// The id the next topic gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// A topic by id.
    pub fn get(&self, id: u32) -> Option<&TopicMeta> {
        self.topics.get(&id)
    }

    /// What keeping the table has written so far.
    pub fn writes(&self) -> TableWrites {
        self.writes
    }

    /// Makes `change` durable (appended and fsynced), then applies it.
    pub fn commit(&mut self, change: Change) -> Result<()> {
        let record = Record {
            seq: self.seq + 1,
            change,
        };
        let body = serde_json::to_vec(&record)
            .map_err(|e| backend(format!("encoding a topic change: {e}")))?;
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        // On failure nothing advances: the next record overwrites these bytes.
        self.journal
            .write_all_at(&frame, self.journal_len)
            .and_then(|()| self.journal.sync_data())
            .map_err(|e| io_error(format!("writing {}", self.journal_path.display()), e))?;
        self.writes.bytes += frame.len() as u64;
        self.writes.syncs += 1;
        self.journal_len += frame.len() as u64;
        self.seq = record.seq;
        self.apply(record.change);
        if self.journal_len > FOLD_MIN.max(self.snapshot_len) {
            // The change is durable already; a fold that fails is retried
            // with the next change.
            if let Err(e) = self.fold() {
                tracing::warn!(error = %e, "native engine: folding the topic journal failed");
            }
        }
        Ok(())
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Create(meta) => {
                self.next_id = self.next_id.max(meta.id.saturating_add(1));
                self.topics.insert(meta.id, meta);
            }
            Change::Delete { id } => {
                self.topics.remove(&id);
            }
            Change::Retention { id, retention_ms } => {
                if let Some(meta) = self.topics.get_mut(&id) {
                    meta.retention_ms = retention_ms;
                }
            }
        }
    }

    /// Writes the whole table as the new snapshot, then empties the journal.
    fn fold(&mut self) -> Result<()> {
        let snapshot = Snapshot {
            next_id: self.next_id,
            topics: self.topics.values().cloned().collect(),
            journal_seq: self.seq,
        };
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| backend(format!("encoding the topic table: {e}")))?;
        crate::fs::write_atomic(&*self.fs, &self.snapshot_path, &bytes)
            .map_err(|e| io_error(format!("writing {}", self.snapshot_path.display()), e))?;
        self.writes.bytes += bytes.len() as u64;
        self.writes.syncs += 2;
        self.snapshot_len = bytes.len() as u64;
        self.journal
            .set_len(0)
            .and_then(|()| self.journal.sync_all())
            .map_err(|e| io_error(format!("emptying {}", self.journal_path.display()), e))?;
        self.writes.syncs += 1;
        self.journal_len = 0;
        Ok(())
    }
}

fn open_journal(fs: &Fs, path: &Path) -> Result<File> {
    let existed = fs.exists(path);
    let file = fs
        .open(path, true)
        .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
    if !existed {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs.sync_dir(dir)
            .map_err(|e| io_error(format!("syncing {}", dir.display()), e))?;
    }
    Ok(file)
}

/// The total length of the frame at the start of `buf`, when its prefix is there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    len.checked_add(8)
}

fn decode(buf: &[u8]) -> Option<(Record, usize)> {
    let total = frame_len(buf)?;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(8..total)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    Some((serde_json::from_slice(body).ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u32) -> TopicMeta {
        TopicMeta {
            id,
            name: format!("t{id}"),
            partitions: 2,
            retention_ms: None,
        }
    }

    fn names(table: &TopicTable) -> Vec<String> {
        table.topics().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn changes_survive_reopen_and_folds() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        // Enough to fold the journal into the snapshot a few times.
        for id in 1..=3000 {
            table.commit(Change::Create(meta(id))).unwrap();
        }
        table.commit(Change::Delete { id: 2 }).unwrap();
        table
            .commit(Change::Retention {
                id: 3,
                retention_ms: Some(5),
            })
            .unwrap();
        assert!(
            dir.path().join("topics.json").exists(),
            "folded at least once"
        );
        drop(table);
        let table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        assert_eq!(table.topics().count(), 2999);
        assert!(table.get(2).is_none());
        assert_eq!(table.get(3).unwrap().retention_ms, Some(5));
        assert_eq!(table.next_id(), 3001);
    }

    #[test]
    fn a_change_costs_the_same_however_many_topics_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        let n = 4000;
        for id in 1..=n {
            table.commit(Change::Create(meta(id))).unwrap();
        }
        let w = table.writes();
        // A record is ~80 bytes; folding at most doubles what is written
        // (plus the last snapshot). Rewriting the table per change would
        // be ~n/2 records per change.
        assert!(w.bytes < u64::from(n) * 400, "{w:?}");
        assert!(w.syncs < u64::from(n) * 2, "{w:?}");
    }

    #[test]
    fn a_crash_between_snapshot_and_emptying_applies_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        table.commit(Change::Create(meta(1))).unwrap();
        table.commit(Change::Create(meta(2))).unwrap();
        let journal = std::fs::read(dir.path().join("topics.journal")).unwrap();
        table.commit(Change::Delete { id: 1 }).unwrap();
        table.fold().unwrap();
        drop(table);
        // The journal as it was before the fold: its creates are older
        // than the snapshot, so topic 1 stays deleted.
        std::fs::write(dir.path().join("topics.journal"), &journal).unwrap();
        let mut table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        assert_eq!(names(&table), ["t2"]);
        table.commit(Change::Create(meta(3))).unwrap();
        drop(table);
        assert_eq!(
            names(&TopicTable::load(&crate::fs::real(), dir.path()).unwrap()),
            ["t2", "t3"]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_corruption_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.journal");
        let mut table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        for id in 1..=3 {
            table.commit(Change::Create(meta(id))).unwrap();
        }
        drop(table);
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(&good[..good.len() / 3 / 2]);
        std::fs::write(&path, &torn).unwrap();
        let table = TopicTable::load(&crate::fs::real(), dir.path()).unwrap();
        assert_eq!(names(&table), ["t1", "t2", "t3"]);
        drop(table);
        assert_eq!(std::fs::read(&path).unwrap(), good, "torn bytes are cut");

        let mut flipped = good;
        flipped[12] ^= 0x20;
        std::fs::write(&path, &flipped).unwrap();
        let err = TopicTable::load(&crate::fs::real(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("topics.journal") && err.contains("at byte 0"),
            "{err}"
        );
    }
}
