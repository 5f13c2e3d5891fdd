//! Processes killed with SIGKILL. A consumer in the middle of its handlers:
//! what it did not finish comes to the next member of its group. A sender
//! of delayed messages while they wait: all arrive, none early. A producer
//! killed between a half message and its commit: the checker
//! of the next process to open the directory commits it.

/// The engine checks half messages by itself, with the timing of its URL:
/// the scenario's (1 s, then every 300 ms) in the parent; in the child,
/// which must never decide, longer than it lives.
async fn connect(url: String) -> mq_core::Result<mq_core::Client> {
    let timing = if std::env::var_os(mq_testkit::half_kill::CHILD_ENV).is_some() {
        "half_check_after=1h"
    } else {
        "half_check_after=1s&half_check_interval=300ms"
    };
    let config = mq_core::Config::from_url(&format!("{url}?{timing}"))?;
    Ok(mq_core::Client::new(
        mq_native::NativeDriver::open(&config).await?,
    ))
}

fn fresh_url() -> String {
    let dir = tempfile::Builder::new()
        .prefix("mq-native-kill-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
        .keep();
    format!("native://{}", dir.display())
}

mq_testkit::half_kill_suite!(url: fresh_url(), connect: connect);

mq_testkit::consumer_kill_suite!(url: fresh_url(), connect: connect);

mq_testkit::delay_kill_suite!(url: fresh_url(), connect: connect);
