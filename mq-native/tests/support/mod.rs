//! What the native engine's test files share: scratch directories,
//! opening a driver on one, joining a group.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mq_core::driver::{Driver, DriverSubscription, SubscribeSpec};
use mq_core::Config;
use mq_native::NativeDriver;

/// A new directory under the target's temp dir, kept after the test for
/// inspection.
pub fn fresh_dir(name: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("mq-native-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
        .keep()
}

/// Opens `dir` with URL query `options`.
pub async fn open(dir: &Path, options: &str) -> mq_core::Result<NativeDriver> {
    NativeDriver::open(&Config::from_url(&format!(
        "native://{}?{options}",
        dir.display()
    ))?)
    .await
}

/// Joins `group` on `topic` from the earliest record, holding at most 100
/// unacked.
pub async fn sub(driver: &NativeDriver, topic: &str, group: &str) -> Box<dyn DriverSubscription> {
    driver
        .subscribe(SubscribeSpec::new(vec![topic.to_owned()], group).with_prefetch(100))
        .await
        .expect("subscribe")
}

/// Checks that `payloads` are the sequence numbers from `first` on, each
/// once and in order (as the kill -9 loops' children write them); returns
/// the number after the last.
pub fn check_sequence<'a>(
    payloads: impl IntoIterator<Item = &'a str>,
    first: u64,
    round: u64,
) -> u64 {
    let mut next = first;
    for payload in payloads {
        assert_eq!(
            payload,
            format!("{next:012}"),
            "round {round}: gap, duplicate or reorder at {next}"
        );
        next += 1;
    }
    next
}
