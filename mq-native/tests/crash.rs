//! Crash safety: kill -9 loops, torn tails and flipped bytes.
//!
//! `kill_nine_loses_no_acked_message` re-runs this test binary as a child
//! (`child_writer`, which does nothing unless `MQ_NATIVE_CRASH_DIR` is set)
//! that appends sequence-numbered messages with `fsync=always` and prints
//! each acknowledged sequence number. The parent SIGKILLs it at a random
//! moment, reopens the directory and checks that every acknowledged message
//! is there, in order, exactly once, with no gaps; then repeats.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_core::driver::{Driver, SubscribeSpec};
use mq_core::{Message, TopicSpec};
use mq_native::NativeDriver;
use rand::Rng;
use support::{check_sequence, fresh_dir, open};

const TOPIC: &str = "seq";

/// Every payload of `topic`, in offset order, read by a fresh group.
async fn read_all(driver: &NativeDriver, topic: &str) -> mq_core::Result<Vec<String>> {
    read_group(
        driver,
        topic,
        &format!("verify-{}", uuid::Uuid::now_v7().simple()),
    )
    .await
}

/// Payloads `group` has not acked yet, in offset order; acks them.
async fn read_group(
    driver: &NativeDriver,
    topic: &str,
    group: &str,
) -> mq_core::Result<Vec<String>> {
    let lag: u64 = driver.lag(topic, group).await?.iter().map(|p| p.lag).sum();
    let sub = driver
        .subscribe(SubscribeSpec::new(vec![topic.to_owned()], group).with_prefetch(1000))
        .await?;
    let mut got = Vec::new();
    while (got.len() as u64) < lag {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.fetch(1000))
            .await
            .map_err(|_| mq_core::Error::Timeout(Duration::from_secs(10)))??;
        let mut tokens = Vec::new();
        for d in batch {
            got.push((
                d.offset.unwrap_or(0),
                d.message.payload_str().unwrap_or("?").to_owned(),
            ));
            tokens.push(d.token);
        }
        sub.ack(tokens).await?;
    }
    sub.close().await?;
    got.sort_by_key(|(o, _)| *o);
    Ok(got.into_iter().map(|(_, p)| p).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(dir) = std::env::var("MQ_NATIVE_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("MQ_NATIVE_CRASH_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let driver = open(
        Path::new(&dir),
        "fsync=always&segment_bytes=65536&checkpoint_interval=50ms",
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
    let mut seq = start;
    let mut rng = rand::rng();
    loop {
        let n = rng.random_range(1..40u64);
        let batch = (seq..seq + n)
            .map(|i| Message::new(TOPIC, format!("{i:012}")).with_id(mq_core::MessageId::new()))
            .collect();
        driver.publish(batch).await.expect("publish");
        seq += n;
        writeln!(out, "ACK {}", seq - 1).ok();
        out.flush().ok();
        // Keep the log small enough to verify quickly in a debug build.
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_no_acked_message() {
    let dir = fresh_dir("kill9");
    let exe = std::env::current_exe().expect("test binary");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let mut rng = rand::rng();
    let mut next_seq = 0u64;
    let mut rounds = 0;
    while Instant::now() < deadline || rounds < 3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env("MQ_NATIVE_CRASH_DIR", &dir)
            .env("MQ_NATIVE_CRASH_START", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let acked = Arc::new(Mutex::new(None::<u64>));
        let ready = Arc::new(Mutex::new(false));
        let stdout = child.stdout.take().expect("stdout");
        let reader = {
            let (acked, ready) = (acked.clone(), ready.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may print "test child_writer ... " before the first line.
                    if line.ends_with("READY") {
                        *ready.lock().unwrap() = true;
                    } else if let Some(n) = line
                        .strip_prefix("ACK ")
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        *acked.lock().unwrap() = Some(n);
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
        let acked = *acked.lock().unwrap();

        // The "verify" group's checkpointed offset makes each round read
        // only what the last child appended; a fresh group rereads it all
        // at the end.
        let driver = open(&dir, "fsync=always&segment_bytes=65536")
            .await
            .expect("reopen after kill -9");
        let seen = read_group(&driver, TOPIC, "verify")
            .await
            .expect("read back");
        driver.close().await.expect("close");
        next_seq = check_sequence(seen.iter().map(String::as_str), next_seq, rounds);
        if let Some(acked) = acked {
            assert!(
                next_seq > acked,
                "round {rounds}: acked up to {acked} but only {next_seq} survived"
            );
        }
        rounds += 1;
        eprintln!(
            "round {rounds}: acked {acked:?}, {next_seq} in the log, {:?} elapsed",
            started.elapsed()
        );
    }
    let driver = open(&dir, "").await.expect("final reopen");
    let all = read_all(&driver, TOPIC).await.expect("read everything");
    driver.close().await.expect("close");
    assert_eq!(all.len() as u64, next_seq);
    for (i, payload) in all.iter().enumerate() {
        assert_eq!(
            payload,
            &format!("{i:012}"),
            "gap, duplicate or reorder at {i}"
        );
    }
    eprintln!("{rounds} kill -9 rounds, {next_seq} messages survived in order");
    assert!(next_seq > 0, "the child never appended anything");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn write_some(dir: &Path, n: usize) {
    let driver = open(dir, "fsync=always&segment_bytes=1048576")
        .await
        .expect("open");
    driver
        .ensure_topic(TOPIC, &TopicSpec::new(1))
        .await
        .expect("topic");
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let batch = chunk
            .iter()
            .map(|i| Message::new(TOPIC, format!("{i:012}")).with_id(mq_core::MessageId::new()))
            .collect();
        driver.publish(batch).await.expect("publish");
    }
    driver.close().await.expect("close");
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated() {
    let dir = fresh_dir("torn");
    write_some(&dir, 100).await;
    let seg = only_segment(&dir);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A crash in the middle of writing a batch: its first half, then nothing.
    let data = std::fs::read(&seg).unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&data[..data.len().min(200) / 2]).unwrap();
    drop(file);
    // And a checkpoint that does not cover the tail.
    std::fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let driver = open(&dir, "").await.expect("reopen truncates the tail");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        good_len,
        "torn bytes are cut"
    );
    let seen = read_all(&driver, TOPIC).await.unwrap();
    assert_eq!(seen.len(), 100);
    driver
        .publish(vec![
            Message::new(TOPIC, format!("{:012}", 100)).with_id(mq_core::MessageId::new())
        ])
        .await
        .unwrap();
    let seen = read_all(&driver, TOPIC).await.unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("000000000100"));
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_reported_never_served() {
    // In a length prefix (batches are equal-sized: the middle starts one) and in a body.
    for shift in [0, 37] {
        flipped_byte_case(shift).await;
    }
}

async fn flipped_byte_case(shift: usize) {
    let dir = fresh_dir("flip");
    write_some(&dir, 100).await;
    let seg = only_segment(&dir);
    let mut data = std::fs::read(&seg).unwrap();
    let at = data.len() / 2 + shift;
    data[at] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();

    // Covered by the checkpoint: opening works, reading the batch fails
    // with the file and offset; nothing corrupt is delivered.
    let driver = open(&dir, "").await.expect("open");
    let err = read_all(&driver, TOPIC)
        .await
        .expect_err("corruption must surface");
    let text = err.to_string();
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("at byte"),
        "{text}"
    );
    driver.close().await.unwrap();

    // Not covered by a checkpoint: recovery scans it and refuses to open.
    std::fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let err = open(&dir, "")
        .await
        .expect_err("corruption in the middle of the log");
    let text = err.to_string();
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("at byte"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_disk_filler() {
    let Ok(dir) = std::env::var("MQ_NATIVE_FULL_DIR") else {
        return;
    };
    let driver = open(Path::new(&dir), "fsync=always&segment_bytes=67108864")
        .await
        .expect("open");
    driver
        .ensure_topic(TOPIC, &TopicSpec::new(1))
        .await
        .expect("topic");
    // From here on no file may grow past 256 KiB: the disk is "full".
    // SAFETY: plain libc calls on this process's own limits and signal mask.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 256 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
    }
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    let mut failures = 0;
    while failures < 3 {
        let batch = (seq..seq + 10)
            .map(|i| Message::new(TOPIC, format!("{i:012}")).with_id(mq_core::MessageId::new()))
            .collect();
        match driver.publish(batch).await {
            Ok(_) => {
                seq += 10;
                writeln!(out, "ACK {}", seq - 1).ok();
            }
            Err(e) => {
                failures += 1;
                writeln!(out, "FULL {e}").ok();
            }
        }
        out.flush().ok();
    }
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_the_send_and_keeps_what_was_acked() {
    let dir = fresh_dir("full");
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(&exe)
        .args([
            "--exact",
            "child_disk_filler",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MQ_NATIVE_FULL_DIR", &dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let acked = stdout
        .lines()
        .filter_map(|l| {
            l.rsplit("ACK ")
                .next()
                .filter(|_| l.contains("ACK "))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .max();
    let full: Vec<&str> = stdout.lines().filter(|l| l.contains("FULL ")).collect();
    assert!(!full.is_empty(), "the send never failed: {stdout}");
    assert!(
        full[0].contains("appending to the log failed"),
        "{}",
        full[0]
    );
    let acked = acked.expect("some sends succeeded before the disk filled");
    let driver = open(&dir, "").await.expect("reopen after a full disk");
    let seen = read_all(&driver, TOPIC).await.expect("read back");
    assert_eq!(
        seen.len() as u64,
        acked + 1,
        "exactly the acknowledged messages survive"
    );
    for (i, payload) in seen.iter().enumerate() {
        assert_eq!(payload, &format!("{i:012}"));
    }
    // Space again: appends work.
    driver
        .publish(vec![
            Message::new(TOPIC, format!("{:012}", acked + 1)).with_id(mq_core::MessageId::new())
        ])
        .await
        .expect("publish");
    driver.close().await.expect("close");
}
