//! The admin operations on the engine's files: a group reset is durable
//! the moment it returns (a crash image taken right after it keeps it),
//! browsing reads the same records after a restart, and browsing or
//! resetting by time finds the right record across log segments.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use mq_core::driver::{BrowseFrom, BrowseSpec, Driver, ResetTo, StartFrom};
use mq_core::{Error, Message, TopicSpec};
use mq_native::NativeDriver;
use support::{fresh_dir, open, sub};

async fn total_lag(driver: &NativeDriver, topic: &str, group: &str) -> u64 {
    let lag = driver.lag(topic, group).await.expect("lag");
    lag.iter().map(|p| p.lag).sum()
}

/// `(offset, payload)` of what browsing `partition` from `from` returns.
async fn browsed(
    driver: &NativeDriver,
    topic: &str,
    partition: u32,
    from: BrowseFrom,
) -> Vec<(u64, String)> {
    driver
        .browse(topic, &BrowseSpec::new(partition, from, 100))
        .await
        .expect("browse")
        .into_iter()
        .map(|m| {
            let offset = m.offset.expect("native records have offsets");
            (offset, m.message.payload_str().unwrap().to_owned())
        })
        .collect()
}

/// Copies the data directory as a crash would leave it: the files as they
/// are now, with no final checkpoint.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_image(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_and_browsing_survive_a_crash_and_a_restart() {
    let dir = fresh_dir("admin-restart");
    // No periodic checkpoint: only the reset itself can save the offsets.
    let options = "checkpoint_interval=1h";
    let driver = open(&dir, options).await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(2)).await.unwrap();
    let batch = (0..10)
        .map(|i| Message::new("t", i.to_string()).with_key(format!("k{i}")))
        .collect();
    driver.publish(batch).await.unwrap();
    driver
        .ensure_group("t", "g", StartFrom::Earliest)
        .await
        .unwrap();
    assert_eq!(driver.list_groups("t").await.unwrap(), ["g"]);

    // A member holding records keeps the group from being reset.
    let member = sub(&driver, "t", "g").await;
    let held = member.fetch(3).await.unwrap();
    assert!(!held.is_empty());
    let busy = driver.reset_group("t", "g", ResetTo::Latest).await;
    assert!(
        matches!(&busy, Err(Error::Invalid { value, .. }) if value == "g"),
        "{busy:?}"
    );
    member.close().await.unwrap();

    driver.reset_group("t", "g", ResetTo::Latest).await.unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 0);
    let before = (
        browsed(&driver, "t", 0, BrowseFrom::Offset(0)).await,
        browsed(&driver, "t", 1, BrowseFrom::Last(2)).await,
    );
    let p1 = browsed(&driver, "t", 1, BrowseFrom::Offset(0)).await;
    assert_eq!(before.0.len() + p1.len(), 10);
    assert_eq!(before.1, p1[p1.len().saturating_sub(2)..]);
    assert_eq!(
        total_lag(&driver, "t", "g").await,
        0,
        "browsing moved nothing"
    );

    let image = fresh_dir("admin-crash-image");
    crash_image(&dir, &image);
    let crashed = open(&image, options).await.unwrap();
    assert_eq!(total_lag(&crashed, "t", "g").await, 0, "the reset was lost");
    let after = (
        browsed(&crashed, "t", 0, BrowseFrom::Offset(0)).await,
        browsed(&crashed, "t", 1, BrowseFrom::Last(2)).await,
    );
    assert_eq!(after, before);
    crashed.close().await.unwrap();

    driver
        .reset_group("t", "g", ResetTo::Earliest)
        .await
        .unwrap();
    assert_eq!(total_lag(&driver, "t", "g").await, 10);
    driver.close().await.unwrap();
    let reopened = open(&dir, options).await.unwrap();
    assert_eq!(total_lag(&reopened, "t", "g").await, 10);
    assert_eq!(
        browsed(&reopened, "t", 0, BrowseFrom::Offset(0)).await,
        before.0
    );
    let unknown = reopened
        .browse("t", &BrowseSpec::new(2, BrowseFrom::Offset(0), 10))
        .await;
    assert!(
        matches!(&unknown, Err(Error::Invalid { value, .. }) if value == "2"),
        "{unknown:?}"
    );
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_and_resetting_by_time_cross_segments() {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 10;
    let dir = fresh_dir("admin-time");
    let options = "segment_bytes=4096&fsync=never";
    let driver = open(&dir, options).await.unwrap();
    driver.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
    let pad = "x".repeat(300);
    // marks[r]: a time after every record of round r - 1 and before every
    // record of round r; one send per record, so one batch each.
    let mut marks = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(5)).await;
        marks.push(SystemTime::now());
        for i in 0..PER_ROUND {
            let body = format!("{round}-{i}-{pad}");
            driver.publish(vec![Message::new("t", body)]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = SystemTime::now();
    let segments = std::fs::read_dir(dir.join("log")).unwrap().count();
    assert!(segments >= ROUNDS, "{segments} segments");

    let first_of = |got: Vec<(u64, String)>| got.first().map(|(o, b)| (*o, b[..3].to_owned()));
    for (round, mark) in marks.iter().enumerate() {
        let got = browsed(&driver, "t", 0, BrowseFrom::Time(*mark)).await;
        let offset = (round * PER_ROUND) as u64;
        assert_eq!(first_of(got), Some((offset, format!("{round}-0"))));
    }
    assert!(browsed(&driver, "t", 0, BrowseFrom::Time(later))
        .await
        .is_empty());

    driver
        .reset_group("t", "g", ResetTo::Time(marks[3]))
        .await
        .unwrap();
    assert_eq!(
        total_lag(&driver, "t", "g").await,
        ((ROUNDS - 3) * PER_ROUND) as u64
    );
    driver.close().await.unwrap();

    let reopened = open(&dir, options).await.unwrap();
    let got = browsed(&reopened, "t", 0, BrowseFrom::Time(marks[2])).await;
    assert_eq!(first_of(got), Some(((2 * PER_ROUND) as u64, "2-0".into())));
    assert_eq!(
        total_lag(&reopened, "t", "g").await,
        ((ROUNDS - 3) * PER_ROUND) as u64
    );
    reopened
        .reset_group("t", "g", ResetTo::Time(later))
        .await
        .unwrap();
    assert_eq!(total_lag(&reopened, "t", "g").await, 0);
    reopened.close().await.unwrap();
}
