//! The topic table: creating many topics costs each the same, and a topic
//! created (or deleted) and acknowledged survives a kill -9.
//!
//! `kill_nine_keeps_acked_topic_changes` re-runs this test binary as a
//! child (`child_topic_changer`, which does nothing unless
//! `MQ_NATIVE_TOPICS_DIR` is set) that creates topics, sends one message
//! to each, deletes the topic five before, and prints each step it got
//! acknowledged. The parent SIGKILLs it at a random moment and checks the
//! reopened directory against what was acknowledged.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_core::driver::Driver;
use mq_core::{Message, MessageId, TopicSpec};
use rand::Rng;
use support::{fresh_dir, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_many_topics_costs_each_the_same() {
    let dir = fresh_dir("many-topics");
    let driver = open(&dir, "").await.unwrap();
    let n: u64 = 2000;
    let before = driver.engine().table_writes();
    for i in 0..n {
        driver
            .ensure_topic(&format!("topic-{i}"), &TopicSpec::new(1))
            .await
            .unwrap();
    }
    let w = driver.engine().table_writes();
    let (bytes, syncs) = (w.bytes - before.bytes, w.syncs - before.syncs);
    // One ~100-byte record and one fsync per topic, plus folds into the
    // snapshot that at most double that. Rewriting the whole table per
    // topic (as topics.json once was) wrote ~n/2 entries per topic:
    // about 80 KB per topic at n = 2000.
    assert!(bytes < n * 400, "{bytes} metadata bytes for {n} topics");
    assert!(syncs < n * 2, "{syncs} fsyncs for {n} topics");
    driver.close().await.unwrap();
    let driver = open(&dir, "").await.unwrap();
    for i in 0..n {
        assert!(
            driver.engine().topic(&format!("topic-{i}")).is_some(),
            "topic-{i}"
        );
    }
    driver.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_topic_changer() {
    let Ok(dir) = std::env::var("MQ_NATIVE_TOPICS_DIR") else {
        return;
    };
    let prefix = std::env::var("MQ_NATIVE_TOPICS_PREFIX").expect("prefix");
    let driver = open(Path::new(&dir), "fsync=always&checkpoint_interval=50ms")
        .await
        .expect("open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").ok();
    out.flush().ok();
    for i in 0u64.. {
        let topic = format!("{prefix}-{i}");
        driver
            .ensure_topic(&topic, &TopicSpec::new(1))
            .await
            .expect("create");
        driver
            .publish(vec![Message::new(topic, "x").with_id(MessageId::new())])
            .await
            .expect("publish");
        if let Some(old) = i.checked_sub(5) {
            driver
                .delete_topic(&format!("{prefix}-{old}"))
                .await
                .expect("delete");
        }
        writeln!(out, "ACK {i}").ok();
        out.flush().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_keeps_acked_topic_changes() {
    let dir = fresh_dir("topics-kill9");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    for round in 0..6 {
        let prefix = format!("r{round}");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_topic_changer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MQ_NATIVE_TOPICS_DIR", &dir)
            .env("MQ_NATIVE_TOPICS_PREFIX", &prefix)
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
                    // libtest may print "test child_topic_changer ... " first.
                    if line.ends_with("READY") {
                        *ready.lock().unwrap() = true;
                    } else if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                        *acked.lock().unwrap() = Some(n);
                    }
                }
            })
        };
        let wait_ready = Instant::now();
        while !*ready.lock().unwrap() && wait_ready.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(50..500)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let Some(acked) = *acked.lock().unwrap() else {
            continue;
        };

        let driver = open(&dir, "").await.expect("reopen after kill -9");
        let lag = |i: u64| {
            let driver = driver.clone();
            let topic = format!("{prefix}-{i}");
            async move { driver.lag(&topic, "verify").await.unwrap() }
        };
        for i in 0..=acked {
            let lag = lag(i).await;
            let present = !lag.is_empty();
            // The step after the last acked one may have deleted this one.
            let may_be_gone = i + 5 == acked + 1;
            if i + 5 <= acked {
                assert!(!present, "round {round}: {prefix}-{i} was deleted, acked");
            } else if present || !may_be_gone {
                assert_eq!(
                    lag.iter().map(|p| p.lag).sum::<u64>(),
                    1,
                    "round {round}: {prefix}-{i} and its message were acked (up to {acked}): {lag:?}"
                );
            }
        }
        driver.close().await.unwrap();
        eprintln!("round {round}: {} topic steps acked and kept", acked + 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
