//! Opening a data directory: lock, load the checkpoint, rescan the log past
//! it (truncating a torn tail), restore cursors and pending delays.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mq_core::driver::clock::epoch_micros;
use mq_core::driver::offsets::{Cursor, DoneSet};
use mq_core::{Error, MessageId, Result};
use parking_lot::{Condvar, Mutex, RwLock};

use super::checkpoint::Checkpoint;
use super::topic_table::TopicTable;
use super::topics::Topics;
use super::writer::{Pending, WriterState};
use super::Engine;
use crate::dedup::{DedupEntry, DedupIndex};
use crate::delay::wheel::Wheel;
use crate::delay::DelayStore;
use crate::error::{corrupt, io_error};
use crate::fs::{FileSystem, Fs, LockError};
use crate::group::offsets::OffsetsFile;
use crate::half::store::HalfStore;
use crate::log::batch::{self, Record};
use crate::log::index::{get_shared, Entry, IndexFile};
use crate::log::recovery::{scan, Tail};
use crate::log::segment::{SegmentSet, MAX_POSITION};
use crate::options::Options;

pub(crate) fn path_error(path: &Path, e: &io::Error) -> Error {
    let why = match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    Error::Config(format!(
        "cannot use {} as a native data directory: {why}",
        path.display()
    ))
}

/// Makes sure `path` is a usable directory.
pub(crate) fn prepare_dir(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.is_dir(path) {
        Ok(false) => Err(Error::Config(format!(
            "native data path {} is a file, not a directory",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Synced into its parent: a power loss must not take the
            // directory, and every acknowledged send in it, back.
            crate::fs::create_dir_durable(fs, path).map_err(|e| path_error(path, &e))
        }
        Err(e) => Err(path_error(path, &e)),
    }
}

impl Engine {
    /// Opens (or creates) the data directory of `options`.
    pub fn open(options: Options) -> Result<Arc<Engine>> {
        Self::open_on(options, crate::fs::real(), true)
    }

    /// Opens the data directory of `options` on `fs`; without
    /// `housekeeper` no thread promotes delays, checkpoints or applies
    /// retention by itself (a simulation calls them, so that runs repeat).
    #[doc(hidden)]
    pub fn open_on(options: Options, fs: Fs, housekeeper: bool) -> Result<Arc<Engine>> {
        // Options may be built by hand, not only parsed from a URL.
        options.validate()?;
        let dir = options.path.clone();
        prepare_dir(&*fs, &dir)?;
        let lock = match fs.lock_dir(&dir) {
            Ok(lock) => lock,
            Err(LockError::Held(holder)) => {
                return Err(Error::Connection {
                    message: format!(
                        "native data directory {} is in use by another engine ({holder})",
                        dir.display()
                    ),
                    source: None,
                })
            }
            Err(LockError::Io(e)) => return Err(path_error(&dir, &e)),
        };
        let log_dir = dir.join("log");
        crate::fs::create_dir_durable(&*fs, &log_dir).map_err(|e| path_error(&log_dir, &e))?;

        let ckpt = Checkpoint::load(&*fs, &dir)?;
        let keep: HashMap<(u32, u32), (u64, u64)> = ckpt
            .partitions
            .iter()
            .map(|p| ((p.topic, p.partition), (p.entries, p.end)))
            .collect();
        let table = TopicTable::load(&fs, &dir)?;
        let topics = Topics::open(&fs, &dir, &table, &|t, p| {
            keep.get(&(t, p)).copied().unwrap_or((0, 0))
        })?;
        let delay_path = dir.join("delay.idx");
        let delay_index = IndexFile::open(&*fs, &delay_path, ckpt.delay.entries)
            .map_err(|e| io_error(format!("opening {}", delay_path.display()), e))?;
        let now = epoch_micros(SystemTime::now());
        let mut delay = DelayStore {
            index: delay_index,
            done: DoneSet::from_words(ckpt.delay.done_base, ckpt.delay.done_words.clone()),
            wheel: Wheel::new(now),
            unwritten_done: Default::default(),
        };
        let checkpoint_path = dir.join("checkpoint.json");
        let mut half = HalfStore::restore(&ckpt.half, crate::half::timing(&options))
            .map_err(|why| corrupt(&checkpoint_path, 0, why))?;
        // Saturating: a window too long for u64 milliseconds is forever.
        let window_ms = u64::try_from(options.dedup_window.as_millis()).unwrap_or(u64::MAX);
        let mut dedup = DedupIndex::load(
            &fs,
            &dir,
            window_ms,
            ckpt.dedup_generation,
            ckpt.dedup_len,
            now / 1000,
        )
        .map_err(|e| io_error("loading the dedup journal", e))?;

        let log = SegmentSet::open(&fs, &log_dir).map_err(|e| path_error(&log_dir, &e))?;
        if let Some(bad) = log.all().into_iter().find(|s| s.base > MAX_POSITION) {
            return Err(corrupt(
                &bad.path,
                0,
                "the file name puts the segment past the largest log position",
            ));
        }
        if log.last().is_none() {
            if ckpt.position > 0 {
                return Err(corrupt(&log_dir, 0, "the log segments are missing"));
            }
            log.create(0)
                .map_err(|e| io_error("creating the first log segment", e))?;
        }

        // Replay what the checkpoint does not cover.
        let (end, tail) = scan(&log, ckpt.position, |position, bytes| {
            replay(
                &topics,
                &mut delay,
                &mut half,
                &mut dedup,
                window_ms,
                now / 1000,
                position,
                bytes,
            )
        })?;
        if let Tail::Torn { segment, position } = &tail {
            tracing::warn!(file = %segment.path.display(), at = position - segment.base, "native engine: truncating a torn log tail");
            segment
                .truncate(*position)
                .map_err(|e| io_error(format!("truncating {}", segment.path.display()), e))?;
            for later in log.all().into_iter().filter(|s| s.base > *position) {
                log.remove(later.base)
                    .map_err(|e| io_error(format!("removing {}", later.path.display()), e))?;
            }
        }
        let segment_base = log.last().map_or(0, |s| s.base);
        let log_start = log.first().map_or(0, |s| s.base);

        // Partition ends and starts.
        for t in topics.all() {
            for part in &t.partitions {
                let next = part.next.load(Ordering::Acquire);
                part.visible.store(next, Ordering::Release);
                let start = first_offset_at(&part.index, log_start)
                    .map_err(|e| io_error("reading an index", e))?
                    .unwrap_or(next);
                part.start.store(start, Ordering::Release);
            }
        }
        load_offsets(&*fs, &dir, &topics)?;
        delay
            .load_wheel(None)
            .map_err(|e| io_error("loading pending delays", e))?;

        let engine = Arc::new(Engine {
            options,
            dir,
            fs,
            lock: Mutex::new(Some(lock)),
            log,
            writer: Mutex::new(WriterState {
                pending: Pending::new(end),
                position: end,
                segment_base,
                written: end,
                synced: end,
                failed: None,
                shutdown: false,
                shutdown_done: false,
                spare: Vec::new(),
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            topics: RwLock::new(topics),
            table: Mutex::new(table),
            dedup: Mutex::new(dedup),
            delay: Mutex::new(delay),
            half: Mutex::new(half),
            house: Mutex::new(false),
            house_cv: Condvar::new(),
            checkpointing: Mutex::new(()),
            saving_offsets: Mutex::new(()),
            retaining: Mutex::new(()),
            checkpoint_position: AtomicU64::new(ckpt.position),
            offsets_dirty: AtomicBool::new(false),
            next_member: AtomicU64::new(1),
            rotation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let flusher = {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("mq-native-flush".into())
                .spawn(move || engine.run_flusher())
                .map_err(|e| io_error("starting the flusher thread", e))?
        };
        engine.threads.lock().push(flusher);
        if housekeeper {
            let house = {
                let engine = engine.clone();
                std::thread::Builder::new()
                    .name("mq-native-house".into())
                    .spawn(move || engine.run_housekeeper())
                    .map_err(|e| io_error("starting the housekeeping thread", e))?
            };
            engine.threads.lock().push(house);
        }
        engine.checkpoint()?;
        Ok(engine)
    }
}

/// The first offset of a partition whose batch is at or after
/// `log_start` (reading the index file without holding its lock).
pub(super) fn first_offset_at(index: &Mutex<IndexFile>, log_start: u64) -> io::Result<Option<u64>> {
    let (mut lo, mut hi) = (0, index.lock().len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match get_shared(index, mid)? {
            Some(e) if e.position < log_start => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(get_shared(index, lo)?.map(|e| e.key))
}

/// Applies one batch found past the checkpoint to the in-memory state.
#[allow(clippy::too_many_arguments)]
fn replay(
    topics: &Topics,
    delay: &mut DelayStore,
    half: &mut HalfStore,
    dedup: &mut DedupIndex,
    window_ms: u64,
    now_ms: u64,
    position: u64,
    bytes: &Bytes,
) -> Result<()> {
    let batch = batch::parse_checked(bytes).map_err(|e| corrupt(Path::new("log"), position, e))?;
    let at_ms = batch.timestamp_us / 1000;
    let mut touched: Vec<(u32, u32)> = Vec::new();
    for record in batch.records() {
        let record = record.map_err(|e| corrupt(Path::new("log"), position, e))?;
        match record {
            Record::DelayDone(seq) => delay.done.insert(seq),
            Record::Half(h) => half.replay_half(h.seq, h.group, h.id(), position, h.prepared_us),
            Record::HalfDone { seq, .. } => half.replay_done(seq),
            Record::Message(m) => {
                // Numbered before the topic is looked up: a delay whose
                // topic was deleted since still holds its sequence number
                // (its promotion only marks it done), and skipping it
                // made every later delay look out of order.
                if let Some(due) = m.deliver_at_us {
                    let seq = delay.index.len();
                    if m.offset < seq {
                        continue;
                    }
                    if m.offset > seq {
                        return Err(corrupt(
                            Path::new("log"),
                            position,
                            format!("delay {} follows {}", m.offset, seq),
                        ));
                    }
                    delay.add(due, position);
                }
                let Some(topic) = topics.by_id(m.topic) else {
                    continue;
                };
                let Some(part) = topic.partitions.get(m.partition as usize) else {
                    continue;
                };
                let offset = match m.deliver_at_us {
                    Some(_) => None,
                    None => {
                        let next = part.next.load(Ordering::Acquire);
                        if m.offset < next {
                            continue;
                        }
                        if m.offset > next {
                            return Err(corrupt(
                                Path::new("log"),
                                position,
                                format!(
                                    "offset {} of {} partition {} follows {next}",
                                    m.offset, topic.name, m.partition
                                ),
                            ));
                        }
                        if !touched.contains(&(m.topic, m.partition)) {
                            touched.push((m.topic, m.partition));
                            part.index.lock().push(Entry {
                                key: m.offset,
                                position,
                            });
                        }
                        part.next.store(m.offset + 1, Ordering::Release);
                        Some(m.offset)
                    }
                };
                if let Some(key) = m.idempotency_key {
                    if at_ms.saturating_add(window_ms) > now_ms {
                        let key =
                            batch::utf8(key).map_err(|e| corrupt(Path::new("log"), position, e))?;
                        dedup.insert(
                            Arc::from(key),
                            DedupEntry {
                                id: MessageId::from_uuid(uuid::Uuid::from_bytes(m.id)),
                                topic: topic.name.clone(),
                                partition: m.partition,
                                offset,
                                at_ms,
                                position,
                            },
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Restores group cursors from `offsets.json`.
fn load_offsets(fs: &dyn FileSystem, dir: &Path, topics: &Topics) -> Result<()> {
    let path = dir.join("offsets.json");
    let Some(bytes) = crate::fs::read_optional(fs, &path)
        .map_err(|e| io_error(format!("reading {}", path.display()), e))?
    else {
        return Ok(());
    };
    let file: OffsetsFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(&path, 0, format!("not an offsets file: {e}")))?;
    for saved in file.cursors {
        let Some(topic) = topics.by_id(saved.topic) else {
            continue;
        };
        let Some(part) = topic.partitions.get(saved.partition as usize) else {
            continue;
        };
        let end = part.next.load(Ordering::Acquire);
        let committed = saved.committed.min(end);
        let delivered = saved.delivered.min(end);
        // Only delivered records can have been acked: acks of others (of
        // records a power loss took back after the file was saved, or
        // damage) are dropped, and so is the span a bitmap of them would
        // have to cover (an ack far past the end allocated without bound).
        let acked = saved
            .acked
            .into_iter()
            .filter(|offset| (committed..delivered).contains(offset));
        let mut cursor = Cursor::restored(committed, delivered, acked);
        cursor.skip_to(part.start.load(Ordering::Acquire));
        part.cursors
            .lock()
            .insert(Arc::from(saved.group.as_str()), cursor);
    }
    Ok(())
}
