//! A long delay survives the broker's `consumer_timeout`.
//!
//! The core's delay emulation holds the head of each delay level unacked
//! until it is due (up to 24 h on the longest level); RabbitMQ closes a
//! channel whose delivery stays unacked past `consumer_timeout` (30 min by
//! default) and requeues the delivery, counting it against the queue's
//! delivery limit. Here the timeout is 2 s and the limit 1, so a message
//! held 20 s on the 20 s level is returned several times: it must still be
//! delivered, on time. In a virtual host of its own, so the delay level
//! queues are new.

mod common;

use std::time::{Duration, SystemTime};

use mq_core::{Config, Message, StartFrom};

/// Sets a RabbitMQ application setting for the test and restores it on drop
/// (also when the test fails). Channels read these settings when they open.
struct Setting {
    name: &'static str,
    before: String,
}

impl Setting {
    async fn set(name: &'static str, value: u64) -> Setting {
        let before =
            common::rabbitmqctl(&["eval", &format!("application:get_env(rabbit, {name}).")])
                .await
                .expect("read the setting");
        let before = before
            .trim()
            .strip_prefix("{ok,")
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name} is not set: {before}"))
            .to_owned();
        common::rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, {name}, {value})."),
        ])
        .await
        .expect("change the setting");
        Setting { name, before }
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        let restore = format!(
            "application:set_env(rabbit, {}, {}).",
            self.name, self.before
        );
        let restored = std::process::Command::new("rabbitmqctl")
            .args(["eval", &restore])
            .output();
        if !restored.is_ok_and(|out| out.status.success()) {
            eprintln!(
                "could not restore {}: run rabbitmqctl eval '{restore}'",
                self.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delay_survives_the_consumer_timeout() {
    if common::client("").await.is_none() {
        return;
    }
    let vhost = common::unique("mq-test-delay");
    common::rabbitmqctl(&["add_vhost", &vhost])
        .await
        .expect("add_vhost");
    common::rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"])
        .await
        .expect("set_permissions");
    let settings = (
        Setting::set("consumer_timeout", 2_000).await,
        // How often channels look for timed-out deliveries (1 min by default).
        Setting::set("channel_tick_interval", 500).await,
    );
    let mut url = url::Url::parse(&common::url()).expect("url");
    url.set_path(&format!("/{vhost}"));
    url.set_query(Some("delivery_limit=1"));
    let config = Config::from_url(url.as_str()).expect("url");
    let client = mq_core::Client::new(
        mq_rabbit::RabbitDriver::connect(&config)
            .await
            .expect("connect"),
    );

    let topic = "later";
    client
        .admin()
        .ensure_group(topic, "g", StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let recorder = mq_testkit::Recorder::new();
    let consumer = client
        .consumer(topic, "g")
        .run(recorder.handler())
        .await
        .expect("run");
    // Waits on the 20 s level, then on the 1 s one.
    let delay = Duration::from_secs(21);
    let sent = SystemTime::now();
    client
        .producer()
        .send(Message::new(topic, "late").with_delay(delay))
        .await
        .expect("send");
    let arrived = recorder.wait_for(1, delay + Duration::from_secs(20)).await;
    consumer.shutdown().await.expect("shutdown");
    client.close().await.expect("close");
    drop(settings);
    common::rabbitmqctl(&["delete_vhost", &vhost])
        .await
        .expect("delete_vhost");
    assert!(
        arrived,
        "a {delay:?} delay was lost to the consumer timeout"
    );
    for seen in recorder.seen() {
        let waited = seen.at.duration_since(sent).unwrap_or_default();
        assert!(waited >= delay, "delivered early, after {waited:?}");
    }
}
