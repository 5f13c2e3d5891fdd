//! Bad input gets a typed error naming its cause, and the password never
//! shows: wrong credentials, a missing vhost, a queue declared earlier with
//! other arguments, a message over the broker's `max_message_size`.

mod common;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use mq_core::{Config, Error, Message, StartFrom, TopicSpec};
use mq_rabbit::RabbitDriver;

/// The error of connecting to `url`, checked not to show `secret`.
async fn connect_error(url: &str, secret: &str) -> Option<Error> {
    common::client("").await?;
    let config = Config::from_url(url).expect("url");
    let error = RabbitDriver::connect(&config)
        .await
        .expect_err("the connection must fail");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(secret), "the password leaks: {shown}");
    Some(error)
}

/// The test broker's URL with other credentials or vhost.
fn url_with(user: &str, password: &str, vhost: &str) -> String {
    let mut url = url::Url::parse(&common::url()).expect("url");
    url.set_username(user).expect("user");
    url.set_password(Some(password)).expect("password");
    url.set_path(vhost);
    url.to_string()
}

#[tokio::test]
async fn wrong_credentials_are_access_refused() {
    let secret = "not-the-password-4711";
    let Some(error) = connect_error(&url_with("guest", secret, "/%2f"), secret).await else {
        return;
    };
    assert!(
        matches!(&error, Error::Rejected(text) if text.contains("ACCESS_REFUSED")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn missing_vhost_is_named() {
    let Some(error) =
        connect_error(&url_with("guest", "guest", "/mq-no-such-vhost"), "guest@").await
    else {
        return;
    };
    assert!(
        matches!(&error, Error::Rejected(text) if text.contains("mq-no-such-vhost") && text.contains("virtual host")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_vhost_of_its_own_works() {
    if common::client("").await.is_none() {
        return;
    }
    let vhost = common::unique("mq-test-vhost");
    common::rabbitmqctl(&["add_vhost", &vhost])
        .await
        .expect("add_vhost");
    common::rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"])
        .await
        .expect("set_permissions");
    let config = Config::from_url(&url_with("guest", "guest", &format!("/{vhost}"))).expect("url");
    let connected = RabbitDriver::connect(&config).await;
    common::rabbitmqctl(&["delete_vhost", &vhost])
        .await
        .expect("delete_vhost");
    connected.expect("connecting to an existing vhost");
}

#[tokio::test]
async fn queue_declared_with_other_arguments_is_precondition_failed() {
    let Some(client) = common::client("").await else {
        return;
    };
    let topic = common::unique("conflict");
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("ensure_topic");
    // Someone declared the group's shard queue as a classic queue.
    let queue = format!("mq/{topic}/billing/0");
    let raw = lapin::Connection::connect(&common::url(), lapin::ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = raw.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare classic queue");
    let error = client
        .consumer(&topic, "billing")
        .subscribe()
        .await
        .err()
        .expect("subscribing must fail");
    assert!(
        matches!(&error, Error::Rejected(text)
            if text.contains("PRECONDITION_FAILED") && text.contains("inequivalent arg") && text.contains(&queue)),
        "{error:?}"
    );
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("delete");
    let _ = raw.close(200, "bye".into()).await;
    client.close().await.expect("close");
}

#[tokio::test]
async fn message_over_max_message_size_is_too_large() {
    if common::client("").await.is_none() {
        return;
    }
    let before = common::rabbitmqctl(&["eval", "application:get_env(rabbit, max_message_size)."])
        .await
        .expect("read max_message_size");
    let restore = before
        .trim()
        .strip_prefix("{ok,")
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or("134217728")
        .to_owned();
    common::rabbitmqctl(&[
        "eval",
        "application:set_env(rabbit, max_message_size, 1048576).",
    ])
    .await
    .expect("set max_message_size");
    // The driver is told a larger limit, so the broker's limit is what trips.
    let client = common::client("max_message_bytes=8388608")
        .await
        .expect("client");
    let topic = common::unique("big");
    client
        .admin()
        .ensure_group(&topic, "g", StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let result = client
        .producer()
        .send(Message::new(topic.as_str(), vec![7u8; 2 * 1024 * 1024]))
        .await;
    common::rabbitmqctl(&[
        "eval",
        &format!("application:set_env(rabbit, max_message_size, {restore})."),
    ])
    .await
    .expect("restore max_message_size");
    let error = result.expect_err("a message over max_message_size");
    assert!(
        matches!(
            error,
            Error::TooLarge {
                size: 2_097_152,
                limit: 1_048_576
            }
        ),
        "{error:?}"
    );
    // The publisher recovers its channel.
    client
        .producer()
        .send(Message::new(topic.as_str(), "small"))
        .await
        .expect("a small message after the refusal");
    client.close().await.expect("close");
}

#[tokio::test]
async fn bad_urls_and_options_are_config_errors() {
    for url in [
        "redis://127.0.0.1:6379",
        "amqp://guest:guest@127.0.0.1:5672/%2f?partitions=3",
        "amqp://guest:guest@127.0.0.1:5672/%2f?bogus=1",
    ] {
        let config = Config::from_url(url).expect("url");
        let error = RabbitDriver::connect(&config).await.expect_err(url);
        assert!(matches!(error, Error::Config(_)), "{url}: {error:?}");
    }
}
