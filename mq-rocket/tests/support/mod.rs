//! Finding the test broker: `MQ_TEST_ROCKETMQ_URL` (default
//! `rocketmq://127.0.0.1:9876`). Tests skip with a printed reason without
//! a broker, and fail under `MQ_REQUIRE_BROKERS=1`.

#![allow(dead_code)]

use mq_core::{Client, Config};

/// The default URL of the test broker's name server.
pub const DEFAULT_URL: &str = "rocketmq://127.0.0.1:9876";

/// The test broker's URL.
pub fn url() -> String {
    std::env::var("MQ_TEST_ROCKETMQ_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A client of the test broker, or `None` (printed) when it is unreachable.
pub async fn client() -> Option<Client> {
    mq_testkit::connect_or_skip("MQ_TEST_ROCKETMQ_URL", DEFAULT_URL, |config| async move {
        Ok(Client::new(
            mq_rocket::RocketDriver::connect(&config).await?,
        ))
    })
    .await
}

/// A client with `extra` options added to the URL's.
pub async fn client_with(extra: &str) -> Client {
    let base = url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let config = Config::from_url(&format!("{base}{sep}{extra}")).expect("url");
    Client::new(
        mq_rocket::RocketDriver::connect(&config)
            .await
            .expect("connect"),
    )
}

/// A name unique to this run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}
