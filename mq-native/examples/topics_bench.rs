//! Topic metadata cost: creating, reopening with and deleting many topics.
//!
//! ```text
//! cargo run --release -p mq-native --example topics_bench -- 2000
//! ```
//!
//! Creating a topic makes it durable before it is acknowledged; this shows
//! how that cost grows with the number of topics (it should grow linearly:
//! twice the topics, twice the time). `MQ_BENCH_DIR` picks where data goes.
//! Prints a table; every number is measured by this run.

mod support;

use std::time::Instant;

use mq_core::driver::Driver;
use mq_core::{Config, TopicSpec};
use mq_native::NativeDriver;
use support::{rss_mib, scratch};

async fn open(dir: &std::path::Path) -> NativeDriver {
    let url = format!("native://{}", dir.display());
    NativeDriver::open(&Config::from_url(&url).expect("url"))
        .await
        .expect("open")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!(
        "| topics | create all | per topic | table bytes / topic | fsyncs / topic | RSS after | reopen | delete all |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for count in [n / 4, n / 2, n] {
        let dir = scratch(&format!("topics-{count}"));
        let driver = open(&dir).await;
        let started = Instant::now();
        for i in 0..count {
            driver
                .ensure_topic(&format!("topic-{i}"), &TopicSpec::new(1))
                .await
                .expect("create");
        }
        let create = started.elapsed();
        let rss = rss_mib();
        let writes = driver.engine().table_writes();
        let per = |n: u64| n as f64 / count.max(1) as f64;
        driver.close().await.expect("close");
        let started = Instant::now();
        let driver = open(&dir).await;
        let reopen = started.elapsed();
        let started = Instant::now();
        for i in 0..count {
            driver
                .delete_topic(&format!("topic-{i}"))
                .await
                .expect("delete");
        }
        let delete = started.elapsed();
        driver.close().await.expect("close");
        println!(
            "| {count} | {:.2} s | {:.0} µs | {:.0} | {:.2} | {rss:.0} MiB | {:.0} ms | {:.2} s |",
            create.as_secs_f64(),
            create.as_secs_f64() * 1e6 / count.max(1) as f64,
            per(writes.bytes),
            per(writes.syncs),
            reopen.as_secs_f64() * 1e3,
            delete.as_secs_f64(),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
