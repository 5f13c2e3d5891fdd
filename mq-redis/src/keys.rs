//! Key names. Every key of a topic carries the topic as its hash tag
//! (`mq:{orders}:...`), so on a cluster a topic's streams, schedule,
//! idempotency keys and group state share one slot and its scripts and
//! transactions stay legal.

/// Builds the keys of one driver (one prefix).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: format!("{prefix}:"),
        }
    }

    /// The prefix with its separator, as the Lua scripts rebuild keys from it.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn topic_key(&self, topic: &str, rest: &str) -> String {
        format!("{}{{{topic}}}:{rest}", self.prefix)
    }

    /// Hash with the topic's settings (`partitions`, `maxlen`, `retention_ms`).
    pub(crate) fn meta(&self, topic: &str) -> String {
        self.topic_key(topic, "meta")
    }

    /// The stream of one partition (the Lua scripts build the same name).
    pub(crate) fn stream(&self, topic: &str, partition: u32) -> String {
        self.topic_key(topic, &format!("s:{partition}"))
    }

    /// Sorted set of delayed messages, scored by due time in ms.
    pub(crate) fn delayed(&self, topic: &str) -> String {
        self.topic_key(topic, "delay")
    }

    /// The first receipt of an idempotency key.
    pub(crate) fn idempotency(&self, topic: &str, key: &str) -> String {
        self.topic_key(topic, &format!("idem:{key}"))
    }

    /// Sorted set of a group's live members, scored by lease expiry in ms.
    pub(crate) fn members(&self, topic: &str, group: &str) -> String {
        self.topic_key(topic, &format!("members:{group}"))
    }

    /// Hash member -> client id of its blocking reader, to wake it on rebalance.
    pub(crate) fn readers(&self, topic: &str, group: &str) -> String {
        self.topic_key(topic, &format!("readers:{group}"))
    }

    /// The lock of one partition for one group: held by the member reading it.
    pub(crate) fn lock(&self, topic: &str, group: &str, partition: u32) -> String {
        self.topic_key(topic, &format!("lock:{group}:{partition}"))
    }

    /// A pattern matching every key of a topic (for delete).
    pub(crate) fn topic_pattern(&self, topic: &str) -> String {
        format!("{}{{{topic}}}:*", escape_glob(&self.prefix))
    }

    /// A pattern matching the settings hash of every topic (for listing).
    pub(crate) fn meta_pattern(&self) -> String {
        format!("{}{{*}}:meta", escape_glob(&self.prefix))
    }

    /// The topic whose settings hash `key` is. `None` for any other key
    /// the pattern matched: an idempotency key may hold `}:meta`, but no
    /// topic name holds a brace.
    pub(crate) fn topic_of_meta<'k>(&self, key: &'k str) -> Option<&'k str> {
        let topic = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:meta")?;
        (!topic.is_empty() && !topic.contains(['{', '}'])).then_some(topic)
    }

    /// Sorted set of topics with delayed messages, scored by their earliest due time.
    pub(crate) fn delay_index(&self) -> String {
        format!("{}delay-index", self.prefix)
    }
}

fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_share_a_hash_tag() {
        let k = Keys::new("mq");
        assert_eq!(k.stream("orders", 3), "mq:{orders}:s:3");
        assert_eq!(k.delayed("orders"), "mq:{orders}:delay");
        assert_eq!(k.lock("orders", "billing", 1), "mq:{orders}:lock:billing:1");
        assert_eq!(k.topic_pattern("orders"), "mq:{orders}:*");
        assert_eq!(Keys::new("a*b").topic_pattern("t"), "a\\*b:{t}:*");
    }

    #[test]
    fn settings_keys_name_their_topic() {
        let k = Keys::new("mq");
        assert_eq!(k.meta_pattern(), "mq:{*}:meta");
        assert_eq!(k.topic_of_meta(&k.meta("orders.v2")), Some("orders.v2"));
        assert_eq!(k.topic_of_meta("mq:{t}:idem:x}:meta"), None);
        assert_eq!(k.topic_of_meta("mq:{}:meta"), None);
        assert_eq!(k.topic_of_meta("other:{t}:meta"), None);
    }
}
