//! RocketMQ's name rules: topics of at most 127 and groups of at most 255
//! characters of `[A-Za-z0-9_-%|]`. mq's names allow `.` too, which
//! RocketMQ refuses: the driver stores a `.` as `|` (which mq names never
//! hold) and reads `|` back as `.`, so `orders.dlq` is the broker's
//! `orders|dlq`. Longer names are refused with an error naming them.

use mq_core::driver::NameRules;
use mq_core::{Error, Result};

/// Longest topic name.
const TOPIC_MAX: usize = 127;
/// Longest group name.
const GROUP_MAX: usize = 255;

/// The rules the core's internal names must obey: mq's own characters
/// (a `.` becomes `|` at the broker), within RocketMQ's topic length.
pub(crate) fn rules() -> NameRules {
    NameRules::new(TOPIC_MAX, "._-")
}

fn valid(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The broker's name for an mq topic or group.
pub(crate) fn to_broker(name: &str) -> String {
    name.replace('.', "|")
}

/// The mq name of a broker topic or group.
pub(crate) fn from_broker(name: &str) -> String {
    name.replace('|', ".")
}

/// Refuses a topic RocketMQ would refuse.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > TOPIC_MAX || !valid(topic) {
        return Err(Error::invalid(
            "topic",
            topic,
            "RocketMQ topics are 1 to 127 characters of letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Refuses a group RocketMQ would refuse.
pub(crate) fn check_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > GROUP_MAX || !valid(group) {
        return Err(Error::invalid(
            "group",
            group,
            "RocketMQ groups are 1 to 255 characters of letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Whether `topic` is one of RocketMQ's own (system, retry, dead-letter,
/// topics, by their broker names), which mq never lists. Broker and
/// cluster names, which brokers also register as topics, are told apart by
/// the admin listing.
pub(crate) fn is_broker_topic(topic: &str) -> bool {
    topic.starts_with('%')
        || topic.starts_with("RMQ_SYS_")
        || topic.starts_with("rmq_sys_")
        || topic.starts_with("SCHEDULE_TOPIC")
        || matches!(
            topic,
            "TBW102"
                | "BenchmarkTest"
                | "OFFSET_MOVED_EVENT"
                | "SELF_TEST_TOPIC"
                | "TRANS_CHECK_MAX_TIME_TOPIC"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_pass_the_checks() {
        let rules = rules();
        for name in [
            rules.internal("retry", &["g-1", "orders"]),
            rules.internal("delay", &["5000"]),
            rules.dead_letter_topic(&"t".repeat(120)),
        ] {
            assert!(check_topic(&name).is_ok(), "{name}");
        }
        assert!(check_topic("orders.created").is_ok());
        assert_eq!(to_broker("orders.created"), "orders|created");
        assert_eq!(from_broker(&to_broker("a.b_c")), "a.b_c");
        assert!(check_topic("orders|created").is_err());
        assert!(check_group("a b").is_err());
        assert!(check_group(&"g".repeat(256)).is_err());
    }
}
