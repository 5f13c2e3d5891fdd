//! Names of the broker objects of the topology, and key → shard routing.
//!
//! `/` may not appear in topic or group names, so the names below cannot
//! collide. AMQP names are at most 255 bytes; longer ones are cut by the
//! core's [`bounded`](mq_core::driver::names::bounded), so every client
//! (and every mq driver) shortens a name the same way.

use std::sync::OnceLock;

use lapin::types::ShortString;
use mq_core::driver::{names, NameRules};

/// Most shard queues per group: routing keys carry this many hash bits.
pub(crate) const MAX_SHARDS: u32 = 1 << HASH_BITS;
const HASH_BITS: u32 = 8;
const MAX_NAME: usize = 255;

/// The rules for the names the core builds. Every broker object's name is
/// derived here from the topic and group, so the core's default rules fit.
pub(crate) fn rules() -> NameRules {
    NameRules::default()
}

/// The core's own groups (the delay forwarders' and the one retaining
/// dead letters): they exist on topics this client may never have seen
/// declared, so deleting a topic deletes their queues too.
pub(crate) fn internal_groups() -> [String; 2] {
    let rules = rules();
    // The forwarders' group, as the core names it.
    let forwarders = rules.internal("delay", &[]);
    [forwarders, mq_core::client::dead_letter_group(&rules)]
}

/// Whether `topic` is one of the core's delay topics, which every client
/// of the broker shares.
pub(crate) fn is_delay_topic(topic: &str) -> bool {
    let rules = rules();
    let prefix = format!("{}{}", rules.internal("delay", &[]), rules.separator());
    topic.starts_with(&prefix)
}

/// The exchange of `topic` (a durable topic exchange).
pub(crate) fn exchange(topic: &str) -> String {
    bounded(format!("mq/{topic}"))
}

/// Shard queue `shard` of `group` on `topic` (a durable quorum queue).
pub(crate) fn shard_queue(topic: &str, group: &str, shard: u32) -> String {
    bounded(format!("mq/{topic}/{group}/{shard}"))
}

/// The queue whose message count records the shard count of `topic`.
pub(crate) fn shards_marker(topic: &str) -> String {
    bounded(format!("mq.shards/{topic}"))
}

/// The fanout exchange where members of `group` on `topic` announce themselves.
pub(crate) fn members_exchange(topic: &str, group: &str) -> String {
    bounded(format!("mq.members/{topic}/{group}"))
}

/// A short string for a name made by this module (always within 255 bytes).
pub(crate) fn short(name: &str) -> ShortString {
    ShortString::try_new(name).unwrap_or_else(|_| ShortString::from(bounded(name.to_owned())))
}

fn bounded(name: String) -> String {
    names::bounded(name, MAX_NAME)
}

/// The hash bits of `key`: the low bits of the shared key hash (Kafka's
/// murmur2), so shard `p` of `S` (a power of two) holds exactly the keys with
/// `partition_for_key(key, S) == p`.
pub(crate) fn key_bits(key: &str) -> u32 {
    mq_core::driver::partition_for_key(key, MAX_SHARDS)
}

/// The routing key for hash bits `bits`: each bit as a word, lowest first
/// (`"1.0.1.1.0.0.1.0"`), so a shard queue can bind to a bit prefix.
pub(crate) fn routing_key(bits: u32) -> ShortString {
    static KEYS: OnceLock<Vec<ShortString>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        (0..MAX_SHARDS)
            .map(|b| ShortString::from(bit_words(b, HASH_BITS, false)))
            .collect()
    });
    keys[(bits % MAX_SHARDS) as usize].clone()
}

/// The binding pattern of shard `shard` of `shards` (a power of two): its
/// low `log2(shards)` bits, then `#`.
pub(crate) fn binding_pattern(shard: u32, shards: u32) -> String {
    bit_words(shard, shards.max(1).trailing_zeros(), true)
}

fn bit_words(value: u32, bits: u32, wildcard: bool) -> String {
    let mut words: Vec<&str> = (0..bits)
        .map(|i| if value >> i & 1 == 1 { "1" } else { "0" })
        .collect();
    if wildcard {
        words.push("#");
    }
    words.join(".")
}

/// The shard count used for a requested partition count: the next power of
/// two, at most [`MAX_SHARDS`].
pub(crate) fn shard_count(partitions: u32) -> u32 {
    partitions.clamp(1, MAX_SHARDS).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_core::driver::partition_for_key;

    #[test]
    fn patterns_route_keys_like_partition_for_key() {
        assert_eq!(binding_pattern(0, 1), "#");
        assert_eq!(binding_pattern(1, 2), "1.#");
        assert_eq!(binding_pattern(2, 4), "0.1.#");
        assert_eq!(routing_key(0b1101).as_str(), "1.0.1.1.0.0.0.0");
        for shards in [1u32, 2, 4, 8, 256] {
            for i in 0..500 {
                let key = format!("key-{i}");
                let rk = routing_key(key_bits(&key));
                let shard = partition_for_key(&key, shards);
                let prefix = binding_pattern(shard, shards);
                let prefix = prefix.trim_end_matches('#').trim_end_matches('.');
                assert!(rk.as_str().starts_with(prefix), "{key} {shards}");
            }
        }
    }

    #[test]
    fn long_names_are_bounded_and_stable() {
        let topic = "t".repeat(200);
        let group = "g".repeat(100);
        let a = shard_queue(&topic, &group, 3);
        assert!(a.len() <= 255);
        assert_eq!(a, shard_queue(&topic, &group, 3));
        assert_ne!(a, shard_queue(&topic, &group, 2));
        assert_eq!(short(&a).as_str(), a);
    }

    #[test]
    fn internal_names_are_the_cores() {
        assert_eq!(internal_groups(), ["__mq.delay", "__mq.dlq"]);
        assert!(is_delay_topic("__mq.delay.5000"));
        assert!(!is_delay_topic("__mq.delayed"));
        assert!(!is_delay_topic("orders"));
    }

    #[test]
    fn shard_counts_are_powers_of_two() {
        assert_eq!(shard_count(0), 1);
        assert_eq!(shard_count(3), 4);
        assert_eq!(shard_count(8), 8);
        assert_eq!(shard_count(10_000), 256);
    }
}
