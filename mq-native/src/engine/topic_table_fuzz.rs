//! Fuzzing the topic journal (`topics.journal`): len/crc-framed JSON
//! changes replayed at every open, a torn tail cut off, damage before
//! good records refused.

use std::path::Path;
use std::sync::Arc;

use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};

use super::{Change, TopicMeta, TopicTable};
use crate::fs::sim::{Faults, SimFs};
use crate::fs::{FileSystem, Fs};

fn fs() -> Fs {
    let fs = SimFs::new(0, Faults { pages_percent: 0 });
    fs.create_dir_all(Path::new("/d")).expect("mkdir");
    Arc::new(fs)
}

fn meta(id: u32, name: &str, retention_ms: Option<u64>) -> TopicMeta {
    TopicMeta {
        id,
        name: name.to_owned(),
        partitions: 1 + id % 4,
        retention_ms,
    }
}

/// The journal after `changes`, as the engine writes it.
fn journal_of(changes: &[Change]) -> Vec<u8> {
    let fs = fs();
    let mut table = TopicTable::load(&fs, Path::new("/d")).expect("load");
    for change in changes {
        table.commit(change.clone()).expect("commit");
    }
    fs.read(Path::new("/d/topics.journal")).expect("journal")
}

fn topics(table: &TopicTable) -> Vec<TopicMeta> {
    table.topics().cloned().collect()
}

/// Loads a directory whose journal is `bytes`; a table that loads must
/// load the same again (the torn tail is gone, nothing applied twice).
fn load(bytes: &[u8]) -> Result<Outcome, String> {
    let fs = fs();
    let file = fs.create(Path::new("/d/topics.journal")).expect("create");
    file.write_all_at(bytes, 0).expect("write");
    let Ok(table) = TopicTable::load(&fs, Path::new("/d")) else {
        return Ok(Outcome::Rejected);
    };
    let first = (topics(&table), table.next_id());
    drop(table);
    let again = TopicTable::load(&fs, Path::new("/d"))
        .map_err(|e| format!("a journal that loaded once does not load again: {e}"))?;
    if (topics(&again), again.next_id()) != first {
        return Err("loading twice gave two tables".into());
    }
    let kept = fs.read(Path::new("/d/topics.journal")).expect("journal");
    Ok(if kept.len() == bytes.len() {
        Outcome::Decoded
    } else {
        Outcome::Rejected
    })
}

#[test]
fn fuzz_topic_journal() {
    let changes = [
        Change::Create(meta(1, "orders", None)),
        Change::Create(meta(2, "audit.log", Some(60_000))),
        Change::Retention {
            id: 1,
            retention_ms: Some(5),
        },
        Change::Delete { id: 2 },
        Change::Create(meta(3, "__mq.delay", None)),
    ];
    Target::new("native-topic-journal")
        .seed("changes", journal_of(&changes))
        .seed("one", journal_of(&changes[..1]))
        .run(load);
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (1u32..8, "[a-z0-9._-]{1,20}", any::<Option<u64>>())
            .prop_map(|(id, name, ms)| Change::Create(meta(id, &name, ms))),
        (1u32..8).prop_map(|id| Change::Delete { id }),
        (1u32..8, any::<Option<u64>>())
            .prop_map(|(id, retention_ms)| Change::Retention { id, retention_ms }),
    ]
}

#[test]
fn fuzz_topic_journal_round_trip() {
    explore(
        "native-topic-journal-round-trip",
        vec(change(), 0..12),
        |value| format!("{value:?}").into_bytes(),
        |changes| {
            let fs = fs();
            let mut table = TopicTable::load(&fs, Path::new("/d")).map_err(|e| e.to_string())?;
            for change in changes {
                table.commit(change).map_err(|e| e.to_string())?;
            }
            let want = (topics(&table), table.next_id());
            drop(table);
            let back = TopicTable::load(&fs, Path::new("/d")).map_err(|e| e.to_string())?;
            if (topics(&back), back.next_id()) != want {
                return Err(format!("reloaded {:?}, wrote {want:?}", topics(&back)));
            }
            Ok(())
        },
    );
}
