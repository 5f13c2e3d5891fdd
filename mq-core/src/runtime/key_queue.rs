//! The ordering executor's queue: work for N workers where items with the
//! same key are handed out one at a time, in order, and different keys flow
//! in parallel. A key that is busy (or retrying) holds back only its own
//! later items.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

pub(crate) struct KeyQueue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

struct State<T> {
    ready: VecDeque<(Option<Arc<str>>, T)>,
    /// Keys handed out or ready, with their later items waiting behind them.
    busy: HashMap<Arc<str>, VecDeque<T>>,
    closed: bool,
}

impl<T> KeyQueue<T> {
    pub(crate) fn new() -> Self {
        KeyQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                busy: HashMap::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Queues several items under one lock.
    pub(crate) fn push_all(&self, items: impl IntoIterator<Item = (Option<Arc<str>>, T)>) {
        let mut ready = 0;
        {
            let mut state = self.state.lock();
            for (key, item) in items {
                match key {
                    None => {
                        state.ready.push_back((None, item));
                        ready += 1;
                    }
                    Some(key) => match state.busy.get_mut(&key) {
                        Some(waiting) => waiting.push_back(item),
                        None => {
                            state.busy.insert(key.clone(), VecDeque::new());
                            state.ready.push_back((Some(key), item));
                            ready += 1;
                        }
                    },
                }
            }
        }
        if ready > 0 {
            self.notify.notify_one();
        }
    }

    /// Releases `finished` (the key of the item the caller just completed,
    /// if it had one) and returns the next item to work on; `None` once
    /// closed. Both under one lock, as workers do this per message.
    pub(crate) async fn next(
        &self,
        mut finished: Option<Arc<str>>,
    ) -> Option<(Option<Arc<str>>, T)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                if let Some(key) = finished.take() {
                    release(&mut state, key);
                }
                if state.closed {
                    return None;
                }
                if let Some(next) = state.ready.pop_front() {
                    let more = !state.ready.is_empty();
                    drop(state);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(next);
                }
            }
            notified.await;
        }
    }

    /// Stops handing out items; waiting `pop`s return `None`.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }
}

/// Makes the next waiting item of `key` ready, or forgets the key.
fn release<T>(state: &mut State<T>, key: Arc<str>) {
    let next = match state.busy.get_mut(&key) {
        Some(waiting) => waiting.pop_front(),
        None => return,
    };
    match next {
        Some(item) => state.ready.push_back((Some(key), item)),
        None => {
            state.busy.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_flow() {
        let q = KeyQueue::new();
        let a: Arc<str> = Arc::from("a");
        q.push_all([
            (Some(a.clone()), 1),
            (Some(a.clone()), 2),
            (Some(Arc::from("b")), 3),
            (None, 4),
        ]);
        let (k1, v1) = q.next(None).await.unwrap();
        assert_eq!(v1, 1);
        // "a" is busy, so 2 waits; 3 and 4 are handed out.
        assert_eq!(q.next(None).await.unwrap().1, 3);
        assert_eq!(q.next(None).await.unwrap().1, 4);
        let (_, v2) = q.next(k1).await.unwrap();
        assert_eq!(v2, 2);
        q.close();
        assert!(q.next(None).await.is_none());
    }
}
