//! kill -9 of the engine in the middle of everything at once, with no
//! clean close between rounds: a child process (`child_mixed`, idle unless
//! `MQ_NATIVE_MIXED_DIR` is set) publishes numbered messages with
//! idempotency keys, runs transactions (every third aborted), consumes and
//! acks in a group, and sends delayed messages, printing what each call
//! confirmed. The parent SIGKILLs it at a random moment, reopens the
//! directory and checks after every round:
//! - every confirmed publish is there once, in order, and its idempotency
//!   key is still remembered (sending it again is a duplicate);
//! - every committed transaction is there whole, no aborted or partial one;
//! - the group's committed position never moves back and never passes a
//!   record the child had not fetched (at-least-once: acks since the last
//!   checkpoint may be forgotten, never invented);
//! - no delayed message is visible before its due time; at the end every
//!   confirmed one arrives exactly once.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mq_core::driver::{Driver, StartFrom, SubscribeSpec};
use mq_core::{Message, TopicSpec};
use mq_native::NativeDriver;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{check_sequence, fresh_dir, open};

const SEQ: &str = "seq";
const TX: &str = "tx";
const LATER: &str = "later";
/// The child's consuming group.
const GROUP: &str = "g";
/// The parent's groups: each round reads only what is new.
const VERIFY: &str = "verify";
const LATER_GROUP: &str = "later-readers";
const OPTIONS: &str = "fsync=always&segment_bytes=65536&checkpoint_interval=50ms";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn start_at(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Prints one confirmation line at once (the parent may kill us next).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").ok();
    out.flush().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_mixed() {
    let Ok(dir) = std::env::var("MQ_NATIVE_MIXED_DIR") else {
        return;
    };
    let (seq0, tx0, round) = (
        start_at("MQ_NATIVE_MIXED_SEQ"),
        start_at("MQ_NATIVE_MIXED_TX"),
        start_at("MQ_NATIVE_MIXED_ROUND"),
    );
    let driver = Arc::new(open(Path::new(&dir), OPTIONS).await.expect("open"));
    say("READY".into());

    let publisher = {
        let driver = driver.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            let mut seq = seq0;
            loop {
                let n = rng.random_range(1..20u64);
                let batch = (seq..seq + n)
                    .map(|i| {
                        Message::new(SEQ, format!("{i:012}")).with_idempotency_key(format!("s{i}"))
                    })
                    .collect();
                driver.publish(batch).await.expect("publish");
                seq += n;
                say(format!("PUB {}", seq - 1));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let transactions = {
        let driver = driver.clone();
        tokio::spawn(async move {
            for t in tx0.. {
                let mut tx = driver.begin().await.expect("begin");
                let parts = (0..3)
                    .map(|i| Message::new(TX, format!("{t}/{i}")))
                    .collect();
                tx.publish(parts).await.expect("publish in transaction");
                if t % 3 == 2 {
                    tx.abort().await.expect("abort");
                } else {
                    tx.commit().await.expect("commit");
                    say(format!("TXC {t}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let consumer = {
        let driver = driver.clone();
        tokio::spawn(async move {
            let sub = driver
                .subscribe(SubscribeSpec::new(vec![SEQ.into()], GROUP).with_prefetch(64))
                .await
                .expect("subscribe");
            loop {
                let batch = sub.fetch(64).await.expect("fetch");
                let Some(last) = batch.iter().filter_map(|d| d.offset).max() else {
                    continue;
                };
                say(format!("FETCHED {last}"));
                sub.ack(batch.into_iter().map(|d| d.token).collect())
                    .await
                    .expect("ack");
            }
        })
    };
    let delays = {
        let driver = driver.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            for i in 0u64.. {
                let due = now_ms() + rng.random_range(100..2000u64);
                let name = format!("{round}-{i}");
                let message = Message::new(LATER, name.clone())
                    .with_deliver_at(UNIX_EPOCH + Duration::from_millis(due));
                driver
                    .publish(vec![message])
                    .await
                    .expect("publish delayed");
                say(format!("DEL {name} {due}"));
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
        })
    };
    let _ = tokio::join!(publisher, transactions, consumer, delays);
}

/// What a child confirmed before it was killed.
#[derive(Default)]
struct Confirmed {
    ready: bool,
    published: Option<u64>,
    committed: Vec<u64>,
    fetched: Option<u64>,
    delayed: Vec<(String, u64)>,
}

fn note(confirmed: &Mutex<Confirmed>, line: &str) {
    let mut c = confirmed.lock().unwrap();
    // libtest may print "test child_mixed ... " before the first line.
    if line.ends_with("READY") {
        c.ready = true;
        return;
    }
    let mut words = line.split(' ');
    let (Some(kind), Some(value)) = (words.next(), words.next()) else {
        return;
    };
    match (kind, value.parse::<u64>().ok()) {
        ("PUB", Some(n)) => c.published = Some(n),
        ("TXC", Some(t)) => c.committed.push(t),
        ("FETCHED", Some(o)) => c.fetched = Some(c.fetched.map_or(o, |f| f.max(o))),
        ("DEL", _) => {
            if let Some(due) = words.next().and_then(|d| d.parse().ok()) {
                c.delayed.push((value.to_owned(), due));
            }
        }
        _ => {}
    }
}

/// Payloads of `topic` not yet acked by `group`, waiting `limit` for
/// more once the backlog is read; acks them.
async fn read_new(
    driver: &NativeDriver,
    topic: &str,
    group: &str,
    limit: Duration,
) -> Vec<(Option<u64>, String)> {
    let sub = driver
        .subscribe(SubscribeSpec::new(vec![topic.to_owned()], group).with_prefetch(1000))
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    while let Ok(batch) = tokio::time::timeout(limit, sub.fetch(1000)).await {
        let batch = batch.expect("fetch");
        let tokens = batch.iter().map(|d| d.token.clone()).collect();
        for d in batch {
            got.push((d.offset, d.message.payload_str().unwrap_or("?").to_owned()));
        }
        sub.ack(tokens).await.expect("ack");
    }
    sub.close().await.expect("close");
    got.sort_by_key(|(offset, _)| *offset);
    got
}

async fn committed_position(driver: &NativeDriver) -> u64 {
    driver
        .lag(SEQ, GROUP)
        .await
        .expect("lag")
        .iter()
        .map(|p| p.committed_offset.unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_mid_everything_keeps_every_promise() {
    let dir = fresh_dir("mixed-kill");
    {
        let driver = open(&dir, OPTIONS).await.expect("open");
        for topic in [SEQ, TX, LATER] {
            driver
                .ensure_topic(topic, &TopicSpec::new(1))
                .await
                .expect("topic");
        }
        for (topic, group) in [
            (SEQ, GROUP),
            (SEQ, VERIFY),
            (TX, VERIFY),
            (LATER, LATER_GROUP),
        ] {
            driver
                .ensure_group(topic, group, StartFrom::Earliest)
                .await
                .expect("group");
        }
        driver.close().await.expect("close");
    }
    let exe = std::env::current_exe().expect("test binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rng = rand::rng();
    let (mut next_seq, mut next_tx) = (0u64, 0u64);
    let mut committed_txs: HashSet<u64> = HashSet::new();
    let mut seen_txs: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut position = 0u64;
    let mut delayed: HashMap<String, u64> = HashMap::new();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut rounds = 0u64;
    while Instant::now() < deadline || rounds < 3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_mixed", "--nocapture", "--test-threads=1"])
            .env("MQ_NATIVE_MIXED_DIR", &dir)
            .env("MQ_NATIVE_MIXED_SEQ", next_seq.to_string())
            .env("MQ_NATIVE_MIXED_TX", next_tx.to_string())
            .env("MQ_NATIVE_MIXED_ROUND", rounds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let confirmed = Arc::new(Mutex::new(Confirmed::default()));
        let stdout = child.stdout.take().expect("stdout");
        let reader = {
            let confirmed = confirmed.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    note(&confirmed, &line);
                }
            })
        };
        let waiting = Instant::now();
        while !confirmed.lock().unwrap().ready && waiting.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(100..700)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let confirmed = std::mem::take(&mut *confirmed.lock().unwrap());
        assert!(confirmed.ready, "round {rounds}: the child never opened");

        let driver = open(&dir, OPTIONS).await.expect("reopen after kill -9");
        // Delays first, right after the reopen: nothing due later may be
        // visible yet.
        delayed.extend(confirmed.delayed.iter().cloned());
        for (_, name) in read_new(&driver, LATER, LATER_GROUP, Duration::from_millis(50)).await {
            let now = now_ms();
            if let Some(&due) = delayed.get(&name) {
                assert!(
                    due <= now,
                    "round {rounds}: {name} visible {} ms early",
                    due - now
                );
            }
            assert!(
                delivered.insert(name.clone()),
                "round {rounds}: {name} delivered twice"
            );
        }

        let seqs = read_new(&driver, SEQ, VERIFY, Duration::from_millis(50)).await;
        next_seq = check_sequence(seqs.iter().map(|(_, p)| p.as_str()), next_seq, rounds);
        if let Some(published) = confirmed.published {
            assert!(
                next_seq > published,
                "round {rounds}: {published} was confirmed but only {next_seq} survived"
            );
            let again = driver
                .publish(vec![Message::new(SEQ, format!("{published:012}"))
                    .with_idempotency_key(format!("s{published}"))])
                .await
                .expect("publish a key again");
            assert!(
                again[0].duplicate,
                "round {rounds}: the idempotency key of {published} was forgotten"
            );
        }

        for (_, payload) in read_new(&driver, TX, VERIFY, Duration::from_millis(50)).await {
            let (t, part) = payload.split_once('/').expect("t/part");
            let (t, part): (u64, u32) = (t.parse().unwrap(), part.parse().unwrap());
            assert_ne!(
                t % 3,
                2,
                "round {rounds}: aborted transaction {t} is visible"
            );
            seen_txs.entry(t).or_default().push(part);
        }
        committed_txs.extend(confirmed.committed.iter().copied());
        for (t, parts) in &seen_txs {
            assert_eq!(
                parts,
                &[0, 1, 2],
                "round {rounds}: transaction {t} is partial"
            );
        }
        for t in &committed_txs {
            assert!(
                seen_txs.contains_key(t),
                "round {rounds}: committed transaction {t} is lost"
            );
        }
        // Numbers past the last visible one may be reused: a transaction
        // the child had not committed never becomes visible.
        next_tx = seen_txs
            .keys()
            .chain(&committed_txs)
            .max()
            .map_or(next_tx, |t| t + 1);

        let now_at = committed_position(&driver).await;
        assert!(
            now_at >= position,
            "round {rounds}: the group's position went back from {position} to {now_at}"
        );
        let fetched_end = confirmed.fetched.map_or(position, |f| f + 1).max(position);
        assert!(
            now_at <= fetched_end,
            "round {rounds}: the group's position {now_at} passed what was fetched ({fetched_end})"
        );
        position = now_at;
        driver.close().await.expect("close");
        rounds += 1;
        eprintln!(
            "round {rounds}: {next_seq} published, {} transactions, position {position}, {} of {} delays delivered",
            committed_txs.len(),
            delivered.len(),
            delayed.len()
        );
    }

    // Every confirmed delay arrives, once, once it is due.
    let driver = open(&dir, OPTIONS).await.expect("final reopen");
    let last_due = delayed.values().copied().max().unwrap_or(0);
    let until = Instant::now()
        + Duration::from_millis(last_due.saturating_sub(now_ms()))
        + Duration::from_secs(10);
    while delayed.keys().any(|name| !delivered.contains(name)) && Instant::now() < until {
        for (_, name) in read_new(&driver, LATER, LATER_GROUP, Duration::from_millis(200)).await {
            if let Some(&due) = delayed.get(&name) {
                assert!(due <= now_ms(), "{name} visible early");
            }
            assert!(delivered.insert(name.clone()), "{name} delivered twice");
        }
    }
    driver.close().await.expect("close");
    let missing: Vec<_> = delayed.keys().filter(|n| !delivered.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "confirmed delays never delivered: {missing:?}"
    );
    eprintln!(
        "{rounds} kill -9 rounds: {next_seq} messages, {} transactions, {} delays, all kept",
        committed_txs.len(),
        delayed.len()
    );
    assert!(next_seq > 0 && !committed_txs.is_empty() && !delayed.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
