//! Finding the test broker: `MQ_TEST_KAFKA_URL` (default
//! `kafka://127.0.0.1:9092?assignment=roundrobin`; the CI broker,
//! noida-db, does not finish cooperative rebalances). Tests skip with a
//! printed reason without a broker, and fail under `MQ_REQUIRE_BROKERS=1`.

#![allow(dead_code)]

use mq_core::{Client, Config};

/// The default URL of the test broker.
pub const DEFAULT_URL: &str = "kafka://127.0.0.1:9092?assignment=roundrobin";

/// The test broker's URL.
pub fn url() -> String {
    std::env::var("MQ_TEST_KAFKA_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The broker's `host:port`s, for raw rdkafka clients.
pub fn bootstrap() -> String {
    Config::from_url(&url())
        .expect("MQ_TEST_KAFKA_URL")
        .hosts()
        .join(",")
}

/// A client of the test broker, or `None` (printed) when it is unreachable.
pub async fn client() -> Option<Client> {
    mq_testkit::connect_or_skip("MQ_TEST_KAFKA_URL", DEFAULT_URL, |config| async move {
        Ok(Client::new(mq_kafka::KafkaDriver::connect(&config).await?))
    })
    .await
}

/// The second test broker (`MQ_TEST_KAFKA_SECOND_URL`, in CI tansu on
/// 127.0.0.1:19092), for scenarios the first one cannot run.
pub const SECOND_DEFAULT_URL: &str = "kafka://127.0.0.1:19092";

/// A client of the second test broker, or `None` (printed) when it is
/// unreachable.
pub async fn second_client() -> Option<Client> {
    mq_testkit::connect_or_skip(
        "MQ_TEST_KAFKA_SECOND_URL",
        SECOND_DEFAULT_URL,
        |config| async move { Ok(Client::new(mq_kafka::KafkaDriver::connect(&config).await?)) },
    )
    .await
}

/// A client with `extra` options added to the URL's.
pub async fn client_with(extra: &str) -> Client {
    let base = url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let config = Config::from_url(&format!("{base}{sep}{extra}")).expect("url");
    Client::new(
        mq_kafka::KafkaDriver::connect(&config)
            .await
            .expect("connect"),
    )
}

/// A name unique to this run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Skips (or fails under `MQ_REQUIRE_BROKERS=1`) for a missing prerequisite.
pub fn skip(why: &str) {
    if mq_testkit::require_brokers() {
        panic!("MQ_REQUIRE_BROKERS=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
}
