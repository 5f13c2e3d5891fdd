//! Fuzzing a data directory through the public API: every file the engine
//! keeps (log segments, partition and delay indexes, the checkpoint, the
//! topic journal and snapshot, group offsets, the dedup journal) damaged,
//! cut short, swapped or removed, then the directory opened, read,
//! written and closed. Opening must refuse with a typed error or recover;
//! nothing may panic or hang, and a directory the engine opened and closed
//! must open again.
//!
//! An input is a whole directory packed as `path_len:u16 path data_len:u32
//! data` per file (little endian), on an in-memory file system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mq_core::driver::{
    BrowseFrom, BrowseSpec, Driver, HalfOutcome, StartFrom, SubscribeSpec, TopicSpec,
};
use mq_core::{Message, MessageId};
use mq_fuzz::proptest::sample::select;
use mq_fuzz::proptest::strategy::Strategy;
use mq_fuzz::{explore, mutated, Outcome, Target};
use mq_native::fs::sim::{Faults, SimFs};
use mq_native::fs::FileSystem;
use mq_native::{NativeDriver, Options};

const DIR: &str = "/data";

type Files = Vec<(String, Vec<u8>)>;

fn options() -> Options {
    let mut options = Options::new(DIR);
    // Checkpoints only where the workload takes them, so the log has a
    // tail past the last one for recovery to replay.
    options.checkpoint_interval = Duration::from_secs(3600);
    options.half_check_after = Duration::from_secs(3600);
    options
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn order(n: u32) -> Message {
    Message::new("orders", format!("order {n}"))
        .with_id(MessageId::new())
        .with_key(format!("customer-{}", n % 3))
        .with_header("tenant", "acme")
}

/// A directory with every kind of file and record in it, left as a power
/// loss leaves it: a checkpoint, then more records that only the log has.
async fn workload() -> Files {
    let sim = SimFs::new(7, Faults { pages_percent: 0 });
    let driver = NativeDriver::open_on(options(), Arc::new(sim.clone()), false)
        .await
        .expect("open");
    driver
        .ensure_topic("orders", &TopicSpec::new(2))
        .await
        .expect("topic");
    driver
        .ensure_topic("audit", &TopicSpec::new(1))
        .await
        .expect("topic");
    driver
        .ensure_group("orders", "billing", StartFrom::Earliest)
        .await
        .expect("group");
    driver
        .publish((0..6).map(order).collect())
        .await
        .expect("publish");
    driver
        .publish(vec![
            order(6).with_idempotency_key("pay-6"),
            Message::new("audit", "login")
                .with_id(MessageId::new())
                .with_idempotency_key("login-1"),
            order(7).with_deliver_at(SystemTime::now() + Duration::from_millis(5)),
            order(8).with_deliver_at(SystemTime::now() + Duration::from_secs(3600)),
        ])
        .await
        .expect("publish");
    let (_, commit) = driver.publish_half("shop", order(9)).await.expect("half");
    driver.publish_half("shop", order(10)).await.expect("half");
    driver
        .resolve_half("shop", commit, HalfOutcome::Commit)
        .await
        .expect("commit");
    let sub = driver
        .subscribe(
            SubscribeSpec::new(vec!["orders".into()], "billing")
                .with_start(StartFrom::Earliest)
                .with_prefetch(100),
        )
        .await
        .expect("subscribe");
    let got = sub.fetch(100).await.expect("fetch");
    let acked = got.iter().step_by(2).map(|d| d.token.clone()).collect();
    sub.ack(acked).await.expect("ack");
    sub.close().await.expect("unsubscribe");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let engine = driver.engine().clone();
    tokio::task::spawn_blocking(move || {
        engine.promote_due_now().expect("promote");
        engine.checkpoint().expect("checkpoint");
    })
    .await
    .expect("promote and checkpoint");
    driver
        .publish(vec![
            order(11),
            order(12).with_idempotency_key("pay-12"),
            order(13).with_deliver_at(SystemTime::now() + Duration::from_secs(7200)),
        ])
        .await
        .expect("publish");
    driver.publish_half("shop", order(14)).await.expect("half");
    let after = sim.reboot();
    // Its shutdown finds the power gone; what it tries changes nothing.
    let _ = driver.close().await;
    let mut files = Vec::new();
    dump(&after, Path::new(DIR), &mut files);
    files
}

fn dump(fs: &SimFs, dir: &Path, out: &mut Files) {
    let mut names = fs.read_dir(dir).expect("list");
    names.sort();
    for name in names {
        let path = dir.join(name);
        if fs.is_dir(&path).expect("stat") {
            dump(fs, &path, out);
        } else {
            let relative = path.strip_prefix(DIR).expect("inside");
            out.push((
                relative.to_string_lossy().into_owned(),
                fs.read(&path).expect("read"),
            ));
        }
    }
}

fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in files {
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The files of a packed directory; damage to the packing itself ends the
/// list early (a file cut short, the rest missing).
fn unpack(mut bytes: &[u8]) -> Files {
    fn take(n: usize, bytes: &mut &[u8]) -> Vec<u8> {
        let (head, rest) = bytes.split_at(n.min(bytes.len()));
        *bytes = rest;
        head.to_vec()
    }
    let mut files = Vec::new();
    while bytes.len() >= 2 {
        let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        bytes = &bytes[2..];
        let path = String::from_utf8_lossy(&take(len, &mut bytes)).into_owned();
        let Some(raw) = bytes.get(..4) else {
            break;
        };
        let len = u32::from_le_bytes(raw.try_into().expect("4 bytes")) as usize;
        bytes = &bytes[4..];
        let data = take(len, &mut bytes);
        // Only paths inside the directory: the harness's framing, not
        // something the engine is asked to handle.
        if !path.is_empty()
            && Path::new(&path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            files.push((path, data));
        }
    }
    files
}

/// Lays `files` out on a fresh in-memory file system.
fn lay_out(files: &[(String, Vec<u8>)]) -> SimFs {
    let fs = SimFs::new(1, Faults { pages_percent: 0 });
    fs.create_dir_all(Path::new(DIR)).expect("mkdir");
    for (path, data) in files {
        let path = PathBuf::from(DIR).join(path);
        let parent = path.parent().expect("a parent");
        // A name used as both a file and a directory: the later one loses.
        if fs.create_dir_all(parent).is_err() || fs.is_dir(&path).unwrap_or(false) {
            continue;
        }
        let file = fs.create(&path).expect("create");
        file.write_all_at(data, 0).expect("write");
        file.sync_all().expect("sync");
    }
    fs
}

/// Reads, writes and consumes what an opened directory holds; typed
/// errors are fine (a corrupt batch below the checkpoint is found when read).
async fn exercise(driver: &NativeDriver) {
    let topics = driver.list_topics().await.unwrap_or_default();
    for topic in &topics {
        for p in 0..topic.partitions {
            let _ = driver
                .browse(
                    &topic.name,
                    &BrowseSpec::new(p, BrowseFrom::Offset(0), 1000),
                )
                .await;
        }
        for group in driver.list_groups(&topic.name).await.unwrap_or_default() {
            let _ = driver.lag(&topic.name, &group).await;
        }
        let _ = driver
            .publish(vec![Message::new(topic.name.as_str(), "after")])
            .await;
    }
    let engine = driver.engine().clone();
    // Sync engine calls that wait for the flusher: off the runtime.
    let _ = tokio::task::spawn_blocking(move || engine.promote_due_now()).await;
    if let Some(first) = topics.first() {
        let spec = SubscribeSpec::new(vec![first.name.clone()], "billing").with_prefetch(100);
        if let Ok(sub) = driver.subscribe(spec).await {
            if let Ok(Ok(got)) =
                tokio::time::timeout(Duration::from_millis(10), sub.fetch(100)).await
            {
                let _ = sub.ack(got.into_iter().map(|d| d.token).collect()).await;
            }
            let _ = sub.close().await;
        }
    }
    let engine = driver.engine().clone();
    let _ = tokio::task::spawn_blocking(move || engine.checkpoint()).await;
}

fn open_dir(rt: &tokio::runtime::Runtime, files: &[(String, Vec<u8>)]) -> Result<Outcome, String> {
    let fs = lay_out(files);
    rt.block_on(async {
        let driver = match NativeDriver::open_on(options(), Arc::new(fs.clone()), false).await {
            Ok(driver) => driver,
            Err(e) if e.to_string().is_empty() => return Err("an error saying nothing".into()),
            Err(_) => return Ok(Outcome::Rejected),
        };
        exercise(&driver).await;
        driver
            .close()
            .await
            .map_err(|e| format!("closing an open directory: {e}"))?;
        let again = NativeDriver::open_on(options(), Arc::new(fs), false)
            .await
            .map_err(|e| format!("a directory opened and closed does not open again: {e}"))?;
        again
            .close()
            .await
            .map_err(|e| format!("closing it again: {e}"))?;
        Ok(Outcome::Decoded)
    })
}

/// The workload's topic table as a snapshot instead of a journal (the
/// engine folds the journal into one once it outgrows it).
fn with_snapshot(files: &[(String, Vec<u8>)]) -> Files {
    let snapshot = br#"{"next_id":3,"topics":[{"id":1,"name":"orders","partitions":2},{"id":2,"name":"audit","partitions":1}],"journal_seq":2}"#;
    files
        .iter()
        .filter(|(path, _)| path != "topics.journal")
        .cloned()
        .chain([("topics.json".to_owned(), snapshot.to_vec())])
        .collect()
}

#[test]
fn fuzz_open_packed_directories() {
    let rt = runtime();
    let files = rt.block_on(workload());
    Target::new("native-open")
        .seed("workload", pack(&files))
        .seed("snapshot", pack(&with_snapshot(&files)))
        .run(|bytes| open_dir(&rt, &unpack(bytes)));
}

/// One file of a valid directory mutated (or removed), the others intact:
/// mutations of the whole packing mostly land in the log, the biggest file.
#[test]
fn fuzz_open_one_file_damaged() {
    let rt = runtime();
    let files = rt.block_on(workload());
    let strategy = select(files.clone()).prop_flat_map(|(path, data)| {
        (
            mq_fuzz::proptest::strategy::Just(path),
            mutated(vec![data]),
            mq_fuzz::proptest::bool::weighted(0.05),
        )
    });
    explore(
        "native-open-one-file",
        strategy,
        |value| format!("{value:?}").into_bytes(),
        |(path, data, removed)| {
            let mut damaged = files.clone();
            match damaged.iter().position(|(p, _)| *p == path) {
                Some(at) if removed => {
                    damaged.remove(at);
                }
                Some(at) => damaged[at].1 = data,
                None => return Err(format!("no file {path}")),
            }
            open_dir(&rt, &damaged).map(|_| ())
        },
    );
}
