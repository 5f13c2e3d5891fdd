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

mq_testkit::conformance_suite!(|| async {
    let url = format!("native://{}", fresh_dir().display());
    let config = Config::from_url(&url).expect("url");
    Some(Client::new(
        NativeDriver::open(&config)
            .await
            .expect("open native engine"),
    ))
});
