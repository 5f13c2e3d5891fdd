//! The idempotency-key index: key to first receipt, over the dedup window.
//!
//! Keys are checked and inserted under the writer lock, atomically with the
//! append. The index is made durable by an append-only journal
//! (`dedup-<generation>.journal`) written at checkpoints; keys appended
//! after the last checkpoint are found again by the recovery scan of the
//! log, whose records carry their idempotency keys.
//!
//! Journal record: `len:u32 crc:u32 body`, body = `at_ms:u64 position:u64
//! id:[16] partition:u32 offset:u64 (u64::MAX: none) topic_len:u16 topic
//! key_len:u32 key`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mq_core::{MessageId, Receipt};

use crate::fs::{File, Fs};

#[cfg(test)]
mod fuzz;

/// What a key maps to.
#[derive(Clone, Debug)]
pub struct DedupEntry {
    /// The first message's id.
    pub id: MessageId,
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: u32,
    /// Its offset (none for delayed messages).
    pub offset: Option<u64>,
    /// When it was appended, ms since the epoch.
    pub at_ms: u64,
    /// Log position of its batch.
    pub position: u64,
}

impl DedupEntry {
    /// The receipt a duplicate send gets.
    pub fn receipt(&self) -> Receipt {
        let mut r = Receipt::new(self.id, self.topic.clone(), self.partition, self.offset);
        r.duplicate = true;
        r
    }
}

/// The index and its journal.
#[derive(Debug)]
pub struct DedupIndex {
    window_ms: u64,
    map: HashMap<Arc<str>, DedupEntry>,
    /// Keys in insertion order, for expiry.
    order: VecDeque<(u64, Arc<str>)>,
    /// Keys not yet in the journal.
    unjournaled: VecDeque<Arc<str>>,
    dir: PathBuf,
    /// Current journal generation and length.
    pub generation: u64,
    /// Bytes of the journal that are durable.
    pub journal_len: u64,
    journal: Option<File>,
    fs: Fs,
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("dedup-{generation}.journal"))
}

impl DedupIndex {
    /// Loads the journal `generation` up to `len` bytes, dropping expired keys.
    pub fn load(
        fs: &Fs,
        dir: &Path,
        window_ms: u64,
        generation: u64,
        len: u64,
        now_ms: u64,
    ) -> io::Result<Self> {
        let path = journal_path(dir, generation);
        let mut index = DedupIndex {
            window_ms,
            map: HashMap::new(),
            order: VecDeque::new(),
            unjournaled: VecDeque::new(),
            dir: dir.to_owned(),
            generation,
            journal_len: 0,
            journal: None,
            fs: fs.clone(),
        };
        let data = crate::fs::read_optional(&**fs, &path)?.unwrap_or_default();
        let data = &data[..data.len().min(len as usize)];
        let mut at = 0;
        while let Some((key, entry, used)) = decode_record(&data[at..]) {
            at += used;
            if entry.at_ms.saturating_add(window_ms) > now_ms {
                index.order.push_back((entry.at_ms, key.clone()));
                index.map.insert(key, entry);
            }
        }
        index.journal_len = at as u64;
        let file = fs.open(&path, true)?;
        file.set_len(index.journal_len)?;
        index.journal = Some(file);
        // Journals of other generations are left over from a compaction.
        if let Ok(names) = fs.read_dir(dir) {
            for name in names {
                let other = dir.join(&name);
                let name = name.to_string_lossy();
                if name.starts_with("dedup-") && name.ends_with(".journal") && other != path {
                    let _ = fs.remove_file(&other);
                }
            }
        }
        Ok(index)
    }

    /// The entry for `key` if it is inside the window.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<&DedupEntry> {
        self.expire(now_ms);
        self.map.get(key)
    }

    /// Records the first send of `key`.
    pub fn insert(&mut self, key: Arc<str>, entry: DedupEntry) {
        self.order.push_back((entry.at_ms, key.clone()));
        self.unjournaled.push_back(key.clone());
        self.map.insert(key, entry);
    }

    /// Forgets keys appended at or after `position` (a failed write).
    pub fn rollback(&mut self, position: u64) {
        self.map.retain(|_, e| e.position < position);
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, key)) = self.order.front() {
            if at.saturating_add(self.window_ms) > now_ms {
                break;
            }
            if self.map.get(key).is_some_and(|e| e.at_ms == *at) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }

    /// Encodes keys appended before `position` that are not journaled yet.
    pub fn journal_job(&mut self, position: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(key) = self.unjournaled.front() {
            match self.map.get(key) {
                Some(e) if e.position >= position => break,
                Some(e) => encode_record(&mut out, key, e),
                None => {}
            }
            self.unjournaled.pop_front();
        }
        out
    }

    /// Where the next journal bytes go: the file and the byte offset. The
    /// checkpoint, the journal's only writer, writes and fsyncs them
    /// without holding this index's lock, which appends take.
    pub fn journal_end(&self) -> Option<(File, u64)> {
        self.journal.clone().map(|file| (file, self.journal_len))
    }

    /// Records that `len` more journal bytes are durable.
    pub fn journaled(&mut self, len: u64) {
        self.journal_len += len;
    }

    /// Rewrites the journal with only live keys when it is mostly expired
    /// ones; returns true if the generation changed.
    pub fn maybe_compact(&mut self, position: u64) -> io::Result<bool> {
        let live = self.map.len() as u64;
        if !self.unjournaled.is_empty()
            || self.journal_len < 64 * 1024 * 1024
            || self.journal_len < live * 400
        {
            return Ok(false);
        }
        let mut bytes = Vec::new();
        for (_, key) in &self.order {
            if let Some(e) = self.map.get(key) {
                if e.position < position {
                    encode_record(&mut bytes, key, e);
                }
            }
        }
        let next = self.generation + 1;
        let path = journal_path(&self.dir, next);
        let file = self.fs.create(&path)?;
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
        self.fs.sync_dir(&self.dir)?;
        self.generation = next;
        self.journal_len = bytes.len() as u64;
        self.journal = Some(file);
        Ok(true)
    }

    /// Removes journals other than the current generation (after a checkpoint names it).
    pub fn remove_old_journals(&self) {
        if self.generation > 0 {
            let _ = self
                .fs
                .remove_file(&journal_path(&self.dir, self.generation - 1));
        }
    }
}

fn encode_record(out: &mut Vec<u8>, key: &str, e: &DedupEntry) {
    let mut body = Vec::with_capacity(48 + key.len() + e.topic.len());
    body.extend_from_slice(&e.at_ms.to_le_bytes());
    body.extend_from_slice(&e.position.to_le_bytes());
    body.extend_from_slice(e.id.as_uuid().as_bytes());
    body.extend_from_slice(&e.partition.to_le_bytes());
    body.extend_from_slice(&e.offset.unwrap_or(u64::MAX).to_le_bytes());
    body.extend_from_slice(&(e.topic.len() as u16).to_le_bytes());
    body.extend_from_slice(e.topic.as_bytes());
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

fn decode_record(buf: &[u8]) -> Option<(Arc<str>, DedupEntry, usize)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(8..8usize.checked_add(len)?)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let at_ms = u64_at(0)?;
    let position = u64_at(8)?;
    let id = uuid::Uuid::from_bytes(body.get(16..32)?.try_into().ok()?);
    let partition = u32::from_le_bytes(body.get(32..36)?.try_into().ok()?);
    let offset = u64_at(36)?;
    let tlen = u16::from_le_bytes(body.get(44..46)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(46..46 + tlen)?).ok()?;
    let kat = 46 + tlen;
    let klen = u32::from_le_bytes(body.get(kat..kat + 4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(body.get(kat + 4..kat + 4 + klen)?).ok()?;
    let entry = DedupEntry {
        id: MessageId::from_uuid(id),
        topic: Arc::from(topic),
        partition,
        offset: (offset != u64::MAX).then_some(offset),
        at_ms,
        position,
    };
    Some((Arc::from(key), entry, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::real();
        let mut d = DedupIndex::load(&fs, dir.path(), 1000, 0, 0, 0).unwrap();
        let entry = |at_ms, position| DedupEntry {
            id: MessageId::new(),
            topic: "t".into(),
            partition: 1,
            offset: Some(7),
            at_ms,
            position,
        };
        d.insert("a".into(), entry(100, 10));
        d.insert("b".into(), entry(900, 20));
        d.insert("c".into(), entry(950, 30));
        let job = d.journal_job(25);
        let (file, at) = d.journal_end().unwrap();
        file.write_all_at(&job, at).unwrap();
        d.journaled(job.len() as u64);
        let len = d.journal_len;
        assert!(d.get("a", 500).is_some());
        let mut again = DedupIndex::load(&fs, dir.path(), 1000, 0, len, 1200).unwrap();
        assert!(again.get("a", 1200).is_none(), "expired");
        assert_eq!(again.get("b", 1200).unwrap().offset, Some(7));
        assert!(again.get("c", 1200).is_none(), "not journaled before 25");
    }
}
