//! Fuzzing `Config`, the decoder of what users type: URLs (with host
//! lists, credentials and options), TOML config tables and the durations
//! in options. Any text parses or is refused with a `Config` error; a
//! parsed config prints as a URL that parses back to it, and a password
//! never shows in what it prints or in an error.

use mq_core::config::parse_duration;
use mq_core::{Config, Error};
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};

/// Checks one parsed config.
fn check(config: &Config) -> Result<(), String> {
    let shown = config.to_string();
    if format!("{config:?}") != format!("Config({shown})") {
        return Err(format!("{config:?} is not shown as {shown}"));
    }
    // The password itself may also be text elsewhere in the URL: what is
    // checked is what stands in its place.
    if config.url().password().is_some() {
        let back = Config::from_url(&shown)
            .map_err(|e| format!("{shown:?}, shown for {config:?}, does not parse: {e}"))?;
        if back.url().password() != Some("***") {
            return Err(format!("{shown} shows the password"));
        }
    }
    let _ = config.hosts();
    let mut reader = config.reader();
    for name in config.options().keys() {
        let _ = reader.take_duration(name);
    }
    let secret = config.url().password().is_some()
        || config
            .options()
            .keys()
            .any(|k| mq_core::config::is_secret(k));
    if !secret {
        let again = Config::from_url(&shown)
            .map_err(|e| format!("{config:?} prints as {shown:?}, which does not parse: {e}"))?;
        if again != *config {
            return Err(format!("{shown:?} parses as {again:?}, not {config:?}"));
        }
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Outcome, String> {
    let text = String::from_utf8_lossy(bytes);
    let _ = parse_duration(&text);
    if let Ok(config) = Config::from_toml(&text) {
        check(&config)?;
    }
    match Config::from_url(&text) {
        Ok(config) => check(&config).map(|()| Outcome::Decoded),
        Err(Error::Config(_)) => Ok(Outcome::Rejected),
        Err(other) => Err(format!("refused with a non-config error: {other:?}")),
    }
}

#[test]
fn fuzz_config_urls() {
    Target::new("core-config")
        .seed("native", "native://./data?fsync=never&partitions=8")
        .seed(
            "kafka",
            "kafka://a:9092,b:9093,c?kafka.linger.ms=5&block=250ms",
        )
        .seed("amqp", "amqp://app:s3cret@127.0.0.1:5672/%2f?shards=4")
        .seed("redis", "redis://:hunter2@[::1]:6379/0?block=1h%2030m")
        .seed("rocketmq", "rocketmq://ns1:9876;ns2:9876?group=g")
        .seed("memory", "memory://")
        .run(decode);
}

#[test]
fn fuzz_config_toml() {
    Target::new("core-config-toml")
        .seed(
            "table",
            "url = \"kafka://h:9092\"\n[options]\npartitions = 6\n\"sasl.password\" = \"hunter2\"\nratio = 0.5\nsync = true\n",
        )
        .seed("bare", "url = \"memory://\"\n")
        .run(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            match Config::from_toml(&text) {
                Ok(config) => check(&config).map(|()| Outcome::Decoded),
                Err(Error::Config(_)) => Ok(Outcome::Rejected),
                Err(other) => Err(format!("refused with a non-config error: {other:?}")),
            }
        });
}

#[test]
fn fuzz_config_passwords_stay_hidden() {
    let url = (
        prop_oneof![Just("kafka"), Just("amqp"), Just("redis"), Just("x")],
        "[a-z]{0,6}",
        "[A-Za-z0-9]{12}",
        "[a-z0-9.-]{1,10}(:[0-9]{1,5})?",
        "(,[a-z0-9.-]{1,10}(:[0-9]{1,5})?){0,2}",
        "(/[a-z0-9%]{0,6})?",
        "(\\?[a-z._]{1,8}=[a-z0-9]{0,6})?",
    );
    explore(
        "core-config-passwords",
        url,
        |value| format!("{value:?}").into_bytes(),
        |(scheme, user, password, host, more, path, query)| {
            let password = format!("pw{password}");
            let text = format!("{scheme}://{user}:{password}@{host}{more}{path}{query}");
            match Config::from_url(&text) {
                Ok(config) => {
                    let shown = format!("{config} {config:?}");
                    if shown.contains(&password) {
                        return Err(format!("{text:?} shows its password: {shown}"));
                    }
                }
                Err(e) if e.to_string().contains(&password) => {
                    return Err(format!("the error for {text:?} shows its password: {e}"))
                }
                Err(_) => {}
            }
            Ok(())
        },
    );
}
