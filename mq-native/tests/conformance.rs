//! The whole mq conformance suite on the native engine, a fresh directory per test.

use mq_core::{Client, Config};
use mq_native::NativeDriver;

fn fresh_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("mq-native-conformance-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
        .keep()
}

// The half-message scenarios wait 1 s for a producer before checking and
// 300 ms between checks; the engine checks by itself, with these settings.
mq_testkit::conformance_suite!(|| async {
    let url = format!(
        "native://{}?half_check_after=1s&half_check_interval=300ms",
        fresh_dir().display()
    );
    let config = Config::from_url(&url).expect("url");
    Some(Client::new(
        NativeDriver::open(&config)
            .await
            .expect("open native engine"),
    ))
});
