//! The reopen-after-kill -9 rows: a child process fills a log and is
//! killed, then the engine is opened over what it left.

use std::path::Path;
use std::time::{Duration, Instant};

use mq_core::driver::Driver;
use mq_core::{Message, MessageId, TopicSpec};

use crate::{open, support::scratch, Row};

/// The child's side: fills `dir` with about `gib` GiB, says `WRITTEN`, and
/// waits to be killed.
pub(crate) fn recovery_child(dir: &str, gib: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let driver = open(Path::new(dir), "fsync=never").await;
        driver
            .ensure_topic("big", &TopicSpec::new(8))
            .await
            .expect("topic");
        let payload = bytes::Bytes::from(vec![b'y'; 1000]);
        let target = gib * 1024 * 1024 * 1024;
        let mut written = 0u64;
        while written < target {
            let batch: Vec<Message> = (0..1000)
                .map(|i| {
                    Message::new("big", payload.clone())
                        .with_key(format!("k{i}"))
                        .with_id(MessageId::new())
                })
                .collect();
            driver.publish(batch).await.expect("publish");
            written += 1000 * 1100;
        }
        println!("WRITTEN");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

/// Reopen times over a log of about `gib` GiB left by a killed writer:
/// with the writer's last checkpoint, then with none.
pub(crate) async fn recovery_rows(gib: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let dir = scratch("recovery");
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .args([
            "--recovery-child",
            &dir.display().to_string(),
            &gib.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let start = Instant::now();
    let driver = open(&dir, "").await;
    let took = start.elapsed();
    let log_bytes: u64 = std::fs::read_dir(dir.join("log"))
        .expect("log")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    driver.close().await.expect("close");
    rows.push(Row {
        what: format!(
            "reopen after kill -9, {:.2} GiB of log",
            log_bytes as f64 / (1u64 << 30) as f64
        ),
        value: format!("{took:?}"),
        note: "writer killed right after its last append; rescans past the last checkpoint".into(),
    });
    // Worst case: no checkpoint at all, every byte rescanned and re-indexed.
    let _ = std::fs::remove_file(dir.join("checkpoint.json"));
    let start = Instant::now();
    let driver = open(&dir, "").await;
    let took = start.elapsed();
    driver.close().await.expect("close");
    rows.push(Row {
        what: format!(
            "reopen with no checkpoint (full rescan), {:.2} GiB of log",
            log_bytes as f64 / (1u64 << 30) as f64
        ),
        value: format!("{took:?}"),
        note: "checkpoint.json deleted: CRC check and re-index of the whole log".into(),
    });
    let _ = std::fs::remove_dir_all(&dir);
    rows
}
