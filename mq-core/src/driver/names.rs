//! Names the core builds (retry, delay and dead-letter topics, internal
//! groups) and the broker's rules they must obey, in one place.
//!
//! An internal name is `__mq`, a kind and its parts joined by a separator
//! (`.` where the broker allows it, else `_`): `__mq.retry.billing.orders`.
//! When a part contains the separator (so the join would be ambiguous: group
//! `a.b` with topic `c` against group `a` with topic `b.c`), holds a
//! character the broker refuses, or the name would be too long, the name
//! becomes `__mq.h.<kind>.<readable prefix>.<hash>`: the prefix keeps it
//! recognisable, the 64-bit hash of the exact parts keeps it unique, and
//! `h` (never a kind) keeps the two forms apart. Names are stable across
//! processes and versions: they name durable broker objects.

use std::fmt::Write;

/// Which names a broker accepts for topics and groups.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameRules {
    /// Longest name, in bytes.
    pub max_len: usize,
    /// Characters allowed besides ASCII letters and digits; must hold `_`
    /// (every broker we know allows it), which internal names start with.
    pub punctuation: &'static str,
}

impl Default for NameRules {
    /// Kafka's rules: up to 249 of `[A-Za-z0-9._-]`, which every user name
    /// already obeys.
    fn default() -> Self {
        NameRules {
            max_len: 249,
            punctuation: "._-",
        }
    }
}

impl NameRules {
    /// Names of up to `max_len` bytes of letters, digits and `punctuation`.
    pub fn new(max_len: usize, punctuation: &'static str) -> Self {
        NameRules {
            max_len: max_len.max(MIN_LEN),
            punctuation,
        }
    }

    /// Whether the broker accepts `c` in a name.
    pub fn allows(&self, c: char) -> bool {
        c.is_ascii_alphanumeric() || self.punctuation.contains(c)
    }

    /// Whether the broker accepts `name`.
    pub fn accepts(&self, name: &str) -> bool {
        !name.is_empty() && name.len() <= self.max_len && name.chars().all(|c| self.allows(c))
    }

    /// The separator of internal names: `.` where allowed, else `_`.
    pub fn separator(&self) -> char {
        if self.allows('.') {
            '.'
        } else {
            '_'
        }
    }

    /// The internal name of `kind` with `parts`; see the module docs.
    ///
    /// ```
    /// use mq_core::driver::NameRules;
    /// let kafka = NameRules::default();
    /// assert_eq!(kafka.internal("retry", &["billing", "orders"]), "__mq.retry.billing.orders");
    /// // Ambiguous joins are told apart by a hash.
    /// assert_ne!(kafka.internal("retry", &["a.b", "c"]), kafka.internal("retry", &["a", "b.c"]));
    /// // A broker without dots (RocketMQ) gets names it accepts.
    /// let rocket = NameRules::new(127, "_-%|");
    /// let name = rocket.internal("retry", &["billing", "orders.created"]);
    /// assert!(rocket.accepts(&name), "{name}");
    /// ```
    pub fn internal(&self, kind: &str, parts: &[&str]) -> String {
        let sep = self.separator();
        let mut plain = format!("__mq{sep}{kind}");
        for part in parts {
            plain.push(sep);
            plain.push_str(part);
        }
        let readable = parts.iter().all(|p| !p.is_empty() && !p.contains(sep));
        if readable && self.accepts(&plain) {
            return plain;
        }
        let mut hashed = format!("__mq{sep}h{sep}{kind}{sep}");
        let suffix_len = 1 + 16;
        let room = self.max_len.saturating_sub(hashed.len() + suffix_len);
        let prefix: String = parts
            .iter()
            .flat_map(|p| p.chars().chain(std::iter::once(sep)))
            .map(|c| if self.allows(c) { c } else { '_' })
            .take(room)
            .collect();
        hashed.push_str(prefix.trim_end_matches(sep));
        let _ = write!(hashed, "{sep}{:016x}", hash_parts(kind, parts));
        hashed
    }

    /// Whether `topic` is a dead-letter topic as
    /// [`dead_letter_topic`](Self::dead_letter_topic) builds them.
    ///
    /// ```
    /// use mq_core::driver::NameRules;
    /// let rules = NameRules::default();
    /// assert!(rules.is_dead_letter_topic(&rules.dead_letter_topic("orders")));
    /// assert!(rules.is_dead_letter_topic(&rules.dead_letter_topic(&"o".repeat(249))));
    /// assert!(!rules.is_dead_letter_topic("orders"));
    /// ```
    pub fn is_dead_letter_topic(&self, topic: &str) -> bool {
        let sep = self.separator();
        topic.ends_with(&format!("{sep}dlq"))
            || topic.starts_with(&format!("__mq{sep}dlq{sep}"))
            || topic.starts_with(&format!("__mq{sep}h{sep}dlq{sep}"))
    }

    /// The dead-letter topic of `topic`: `<topic>.dlq` (`<topic>_dlq` where
    /// dots are refused), hashed like internal names when too long.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        let name = format!("{topic}{}dlq", self.separator());
        if self.accepts(&name) {
            return name;
        }
        self.internal("dlq", &[topic])
    }
}

/// Shortest `max_len` the rules take: room for a hashed internal name.
const MIN_LEN: usize = 48;

/// `name` if it has at most `max_len` bytes, else a prefix of it, `~` and
/// a hash of the whole name: for drivers that map names onto broker
/// objects with a length limit (AMQP's 255 bytes). Same in every client.
///
/// ```
/// use mq_core::driver::names::bounded;
/// assert_eq!(bounded("mq/orders".to_owned(), 255), "mq/orders");
/// let long = "x".repeat(300);
/// assert_eq!(bounded(long.clone(), 255).len(), 255);
/// assert_ne!(bounded(long, 255), bounded("x".repeat(301), 255));
/// ```
pub fn bounded(name: String, max_len: usize) -> String {
    if name.len() <= max_len {
        return name;
    }
    let mut cut = max_len.saturating_sub(17);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:016x}", &name[..cut], fnv1a(name.as_bytes()))
}

/// The hash of an internal name's exact parts (length-framed, so no two
/// lists of parts hash the same input).
fn hash_parts(kind: &str, parts: &[&str]) -> u64 {
    let mut framed = Vec::new();
    for part in std::iter::once(&kind).chain(parts) {
        framed.extend_from_slice(&(part.len() as u32).to_le_bytes());
        framed.extend_from_slice(part.as_bytes());
    }
    fnv1a(&framed)
}

/// FNV-1a, 64 bits: tiny and stable, which names need (not strength).
fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_obey_the_rules_and_never_collide() {
        let rules = [
            NameRules::default(),
            NameRules::new(127, "_-%|"),
            NameRules::new(48, "_"),
        ];
        let long = "g".repeat(100);
        let cases: Vec<Vec<&str>> = vec![
            vec!["a.b", "c"],
            vec!["a", "b.c"],
            vec!["a_b", "c"],
            vec!["a", "b_c"],
            vec![&long, "orders"],
            vec![&long, "orders2"],
            vec!["billing", "orders"],
        ];
        for rule in &rules {
            let names: Vec<String> = cases.iter().map(|c| rule.internal("retry", c)).collect();
            for (name, case) in names.iter().zip(&cases) {
                assert!(rule.accepts(name), "{rule:?} refuses {name} for {case:?}");
            }
            let distinct: std::collections::HashSet<&String> = names.iter().collect();
            assert_eq!(distinct.len(), names.len(), "{names:?}");
            assert!(rule.accepts(&rule.dead_letter_topic(&"t".repeat(200))));
        }
    }
}
