//! Bad input gets a typed error, and the password never shows: a wrong
//! URL, a refused connection, a wrong password, a server without the
//! stream commands, a message over `proto-max-bulk-len`. Each case runs
//! against a real `redis-server` started for it.

mod support;

use mq_core::{Client, Config, Error, Message};
use support::{free_port, RedisServer};

const SECRET: &str = "pw-s3cret-do-not-print";

async fn connect(url: &str) -> mq_core::Result<mq_redis::RedisDriver> {
    mq_redis::RedisDriver::connect(&Config::from_url(url)?).await
}

fn assert_no_secret(error: &Error) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(SECRET), "the password leaks: {shown}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        assert!(
            !s.to_string().contains(SECRET),
            "the password leaks in a source: {s}"
        );
        source = s.source();
    }
}

#[tokio::test]
async fn wrong_urls_are_config_errors() {
    for url in [
        format!("redis://:{SECRET}@127.0.0.1:6379/not-a-db"),
        format!("redis://:{SECRET}@127.0.0.1:6379/0?partitons=3"),
        format!("redis://:{SECRET}@127.0.0.1:6379/0?partitions=0"),
        format!("redis://:{SECRET}@127.0.0.1:6379/0?block=soon"),
        format!("rediss://:{SECRET}@127.0.0.1:6379/0"),
        "memory://".to_owned(),
    ] {
        let err = connect(&url).await.expect_err(&url);
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
        assert_no_secret(&err);
    }
}

#[tokio::test]
async fn refused_connection_is_a_connection_error() {
    let url = format!("redis://:{SECRET}@127.0.0.1:{}/0", free_port());
    let err = connect(&url).await.expect_err("nothing listens there");
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_no_secret(&err);
}

#[tokio::test]
async fn wrong_or_missing_password_is_rejected() {
    let Some(server) = RedisServer::start(&["--requirepass", "the-right-one"]) else {
        return;
    };
    let port = server.port;
    for url in [
        format!("redis://:{SECRET}@127.0.0.1:{port}/0"),
        format!("redis://someone:{SECRET}@127.0.0.1:{port}/0"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        let err = connect(&url).await.expect_err("must not authenticate");
        assert!(matches!(err, Error::Rejected(_)), "{err:?}");
        assert!(err.to_string().contains("authentication"), "{err}");
        assert!(!err.is_retryable());
        assert_no_secret(&err);
    }
    // The right password works.
    connect(&server.url("")).await.expect("right password");
}

#[tokio::test]
async fn server_without_stream_commands_is_unsupported() {
    // A real server with XAUTOCLAIM removed stands for an old or stripped
    // one (the version check itself is unit-tested in the crate).
    let Some(server) = RedisServer::start(&["--rename-command", "XAUTOCLAIM", ""]) else {
        return;
    };
    let err = connect(&server.url(""))
        .await
        .expect_err("XAUTOCLAIM is missing");
    assert!(
        matches!(
            err,
            Error::Unsupported {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn message_over_proto_max_bulk_len_is_too_large() {
    let Some(server) = RedisServer::start(&["--proto-max-bulk-len", "1mb"]) else {
        return;
    };
    let client = Client::new(connect(&server.url("")).await.expect("connect"));
    let limit = client.capabilities().max_message_bytes;
    assert!(
        limit < 1024 * 1024,
        "the limit {limit} ignores proto-max-bulk-len"
    );
    let producer = client.producer();
    let err = producer
        .send(Message::new("big", vec![7u8; 2 * 1024 * 1024]))
        .await
        .expect_err("over the server's bulk limit");
    assert!(
        matches!(err, Error::TooLarge { limit: l, .. } if l == limit),
        "{err:?}"
    );
    // Just under the limit is accepted.
    producer
        .send(Message::new("big", vec![7u8; limit - 64]))
        .await
        .expect("under the limit");
}
