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

    pub(crate) fn push(&self, key: Option<Arc<str>>, item: T) {
        {
            let mut state = self.state.lock();
            match key {
                None => state.ready.push_back((None, item)),
                Some(key) => match state.busy.get_mut(&key) {
                    Some(waiting) => {
                        waiting.push_back(item);
                        return;
                    }
                    None => {
                        state.busy.insert(key.clone(), VecDeque::new());
                        state.ready.push_back((Some(key), item));
                    }
                },
            }
        }
        self.notify.notify_one();
    }

    /// The next item to work on; `None` once closed. The caller must call
    /// [`done`](Self::done) with the key when finished.
    pub(crate) async fn pop(&self) -> Option<(Option<Arc<str>>, T)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
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

    /// Releases `key`: its next waiting item, if any, becomes ready.
    pub(crate) fn done(&self, key: Option<Arc<str>>) {
        let Some(key) = key else { return };
        let mut state = self.state.lock();
        let next = match state.busy.get_mut(&key) {
            Some(waiting) => waiting.pop_front(),
            None => return,
        };
        match next {
            Some(item) => {
                state.ready.push_back((Some(key), item));
                drop(state);
                self.notify.notify_one();
            }
            None => {
                state.busy.remove(&key);
            }
        }
    }

    /// Stops handing out items; waiting `pop`s return `None`.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_flow() {
        let q = KeyQueue::new();
        let a: Arc<str> = Arc::from("a");
        q.push(Some(a.clone()), 1);
        q.push(Some(a.clone()), 2);
        q.push(Some(Arc::from("b")), 3);
        q.push(None, 4);
        let (k1, v1) = q.pop().await.unwrap();
        assert_eq!(v1, 1);
        // "a" is busy, so 2 waits; 3 and 4 are handed out.
        assert_eq!(q.pop().await.unwrap().1, 3);
        assert_eq!(q.pop().await.unwrap().1, 4);
        q.done(k1);
        let (_, v2) = q.pop().await.unwrap();
        assert_eq!(v2, 2);
        q.close();
        assert!(q.pop().await.is_none());
    }
}
