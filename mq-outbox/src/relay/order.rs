//! Which claimed rows may go out now without breaking per-key order.

use std::collections::HashSet;

use crate::record::Pending;

/// The rows of `rows` (in id order) that can be published now, and whether
/// any were held back.
///
/// A row waits while it is not settled, and so does every later row of its
/// key: publishing them first would put them ahead of a row that sorts
/// before them. Rows without a key only wait for themselves.
pub(crate) fn publishable(rows: Vec<Pending>) -> (Vec<Pending>, bool) {
    let mut blocked: HashSet<String> = HashSet::new();
    let mut held = false;
    let mut ready = Vec::with_capacity(rows.len());
    for row in rows {
        let key = row.stored.key.as_deref();
        if key.is_some_and(|k| blocked.contains(k)) {
            held = true;
            continue;
        }
        if !row.settled {
            held = true;
            if let Some(key) = key {
                blocked.insert(key.to_owned());
            }
            continue;
        }
        ready.push(row);
    }
    (ready, held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Stored;
    use mq_core::Message;

    fn row(id: i64, key: Option<&str>, settled: bool) -> Pending {
        let mut message = Message::new("t", "p");
        if let Some(key) = key {
            message = message.with_key(key);
        }
        Pending {
            id,
            settled,
            stored: Stored::from_message(message).unwrap(),
        }
    }

    #[test]
    fn an_unsettled_row_holds_back_the_rest_of_its_key_only() {
        let rows = vec![
            row(1, Some("a"), true),
            row(2, Some("b"), false),
            row(3, Some("a"), true),
            row(4, Some("b"), true),
            row(5, None, false),
            row(6, None, true),
        ];
        let (ready, held) = publishable(rows);
        assert!(held);
        assert_eq!(
            ready.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![1, 3, 6]
        );
    }

    #[test]
    fn all_settled_all_ready() {
        let (ready, held) = publishable(vec![row(1, Some("a"), true), row(2, Some("a"), true)]);
        assert!(!held);
        assert_eq!(ready.len(), 2);
    }
}
