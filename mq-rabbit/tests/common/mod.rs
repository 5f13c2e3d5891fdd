//! What the broker tests of this crate share: finding the broker, unique
//! names, and running `rabbitmqctl`.

#![allow(dead_code)]

use std::time::Duration;

use mq_core::{Client, Config};

/// The broker URL (`MQ_TEST_AMQP_URL`, default the local broker).
pub fn url() -> String {
    std::env::var("MQ_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A client on the test broker with `options` (URL query syntax, without
/// `?`), deleting what it declared on close; `None` (the test skips,
/// printing why) when no broker is reachable, unless `MQ_REQUIRE_BROKERS=1`.
pub async fn client(options: &str) -> Option<Client> {
    let mut url = url();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("delete_on_close=true");
    if !options.is_empty() {
        url.push('&');
        url.push_str(options);
    }
    mq_testkit::connect_or_skip(
        "MQ_TEST_AMQP_URL_UNUSED",
        &url,
        |config: Config| async move {
            Ok(Client::new(
                mq_rabbit::RabbitDriver::connect(&config).await?,
            ))
        },
    )
    .await
}

/// A name unique to this run.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}-{}", &id[id.len() - 12..])
}

/// Runs `rabbitmqctl` with `args`; returns its output, or why it failed.
pub async fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let run = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| format!("rabbitmqctl {args:?} timed out"))?
        .map_err(|e| format!("rabbitmqctl {args:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
