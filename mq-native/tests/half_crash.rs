//! Crash safety of half messages: kill -9 around prepares and commits.
//!
//! `half_kill_nine_never_duplicates_nor_loses` re-runs this test binary as
//! a child (`child_half_producer`, which does nothing unless
//! `MQ_NATIVE_HALF_CRASH_DIR` is set) that prepares numbered half
//! messages one after another and resolves each (every third rolled back,
//! the rest committed), printing each number once prepared. The parent
//! SIGKILLs it at a random moment, reopens the directory, resolves what the
//! child left unresolved through the check stream (by the same rule), and
//! checks that every committed number was delivered exactly once, in
//! order, and no rolled-back one ever; then repeats.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_core::driver::{Driver, HalfOutcome, StartFrom};
use mq_core::{Message, MessageId, TopicSpec};
use mq_native::NativeDriver;
use rand::Rng;
use support::{fresh_dir, open, sub};

const TOPIC: &str = "paid";
const GROUP: &str = "shop";

/// The rule both the child and the parent's checker decide by.
fn outcome_of(n: u64) -> HalfOutcome {
    if n.is_multiple_of(3) {
        HalfOutcome::Rollback
    } else {
        HalfOutcome::Commit
    }
}

fn number(message: &Message) -> u64 {
    message
        .payload_str()
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("a numbered payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_half_producer() {
    let Ok(dir) = std::env::var("MQ_NATIVE_HALF_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("MQ_NATIVE_HALF_CRASH_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let driver = open(
        Path::new(&dir),
        "fsync=always&segment_bytes=65536&checkpoint_interval=50ms&half_check_after=1h",
    )
    .await
    .expect("open");
    driver
        .ensure_topic(TOPIC, &TopicSpec::new(1))
        .await
        .expect("topic");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").ok();
    out.flush().ok();
    for n in start.. {
        let message = Message::new(TOPIC, n.to_string()).with_id(MessageId::new());
        let (_, token) = driver.publish_half(GROUP, message).await.expect("prepare");
        writeln!(out, "PREPARED {n}").ok();
        out.flush().ok();
        driver
            .resolve_half(GROUP, token, outcome_of(n))
            .await
            .expect("resolve");
    }
}

/// Resolves everything the child left unresolved, as its checker would.
async fn check_back(driver: &NativeDriver) -> usize {
    let checks = driver.half_checks(GROUP).await.expect("checks");
    let mut resolved = 0;
    while driver.engine().half_pending() > 0 {
        let check = tokio::time::timeout(Duration::from_secs(10), checks.next())
            .await
            .expect("an unresolved message is offered in time")
            .expect("the stream is open");
        let n = number(&check.message);
        driver
            .resolve_half(GROUP, check.token, outcome_of(n))
            .await
            .expect("resolve");
        resolved += 1;
    }
    checks.close().await.expect("close checks");
    resolved
}

/// The numbers `group` has not acked yet, in offset order; acks them.
async fn read_new(driver: &NativeDriver, group: &str) -> Vec<u64> {
    driver
        .ensure_group(TOPIC, group, StartFrom::Earliest)
        .await
        .expect("group");
    let lag: u64 = driver
        .lag(TOPIC, group)
        .await
        .expect("lag")
        .iter()
        .map(|p| p.lag)
        .sum();
    if lag == 0 {
        return Vec::new();
    }
    let mut got: Vec<(u64, u64)> = Vec::new();
    let sub = sub(driver, TOPIC, group).await;
    while (got.len() as u64) < lag {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.fetch(100))
            .await
            .expect("fetch in time")
            .expect("fetch");
        let tokens = batch.iter().map(|d| d.token.clone()).collect();
        got.extend(
            batch
                .iter()
                .map(|d| (d.offset.unwrap_or(0), number(&d.message))),
        );
        sub.ack(tokens).await.expect("ack");
    }
    sub.close().await.expect("close");
    got.sort_by_key(|(offset, _)| *offset);
    got.into_iter().map(|(_, n)| n).collect()
}

/// Runs the child from `start` until SIGKILLed at a random moment;
/// returns the last number it reported prepared.
fn run_child(exe: &Path, dir: &Path, start: u64, rng: &mut impl Rng) -> Option<u64> {
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_half_producer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MQ_NATIVE_HALF_CRASH_DIR", dir)
        .env("MQ_NATIVE_HALF_CRASH_START", start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let prepared = Arc::new(Mutex::new(None::<u64>));
    let ready = Arc::new(Mutex::new(false));
    let stdout = child.stdout.take().expect("stdout");
    let reader = {
        let (prepared, ready) = (prepared.clone(), ready.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test child_half_producer ... " first.
                if line.ends_with("READY") {
                    *ready.lock().unwrap() = true;
                } else if let Some(n) = line
                    .rsplit("PREPARED ")
                    .next()
                    .filter(|_| line.contains("PREPARED "))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    *prepared.lock().unwrap() = Some(n);
                }
            }
        })
    };
    let wait_ready = Instant::now();
    while !*ready.lock().unwrap() && wait_ready.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader");
    let last = *prepared.lock().unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_kill_nine_never_duplicates_nor_loses() {
    let dir = fresh_dir("half-kill9");
    let exe = std::env::current_exe().expect("test binary");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rng = rand::rng();
    let (mut start, mut rounds, mut delivered, mut by_checker) = (0u64, 0, 0usize, 0);
    while Instant::now() < deadline || rounds < 3 {
        let last = run_child(&exe, &dir, start, &mut rng);
        let driver = open(&dir, "half_check_after=0s&half_check_interval=200ms")
            .await
            .expect("reopen after kill -9");
        by_checker += check_back(&driver).await;
        let seen = read_new(&driver, "verify").await;
        driver.close().await.expect("close");
        // Everything reported prepared was resolved (by the child or the
        // checker); the one the kill interrupted may have been prepared
        // too, unreported.
        let sure = last.map_or(start, |n| n + 1);
        let end = sure + 1;
        let committed = |range: std::ops::Range<u64>| {
            range
                .filter(|n| outcome_of(*n) == HalfOutcome::Commit)
                .collect::<Vec<_>>()
        };
        let (least, most) = (committed(start..sure), committed(start..end));
        assert!(
            seen == least || seen == most,
            "round {rounds}: delivered {seen:?}, expected the committed of {start}..{sure} \
             (or ..{end}): a duplicate, a loss, a rollback delivered or a reorder"
        );
        delivered += seen.len();
        // The interrupted number is never used again, decided or not.
        start = end;
        rounds += 1;
    }
    let driver = open(&dir, "").await.expect("final reopen");
    assert_eq!(driver.engine().half_pending(), 0);
    let all = read_new(&driver, "everything").await;
    driver.close().await.expect("close");
    assert_eq!(all.len(), delivered);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "a duplicate or reorder"
    );
    assert!(all.iter().all(|n| outcome_of(*n) == HalfOutcome::Commit));
    eprintln!(
        "{rounds} kill -9 rounds: {delivered} committed half messages delivered once, \
         {by_checker} resolved by the checker after a kill"
    );
    assert!(delivered > 0, "the child never committed anything");
    let _ = std::fs::remove_dir_all(&dir);
}
