//! The ordering executor's queue: work for N workers where items with the
//! same key are handed out one at a time, in order, and different keys flow
//! in parallel. A key that is busy (or waiting to retry) holds back only its
//! own later items, never a worker.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

pub(crate) struct KeyQueue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

struct State<T> {
    ready: VecDeque<(Option<Arc<str>>, T)>,
    /// Keys handed out or ready, with their later items waiting behind
    /// them. Hashed with foldhash, randomly seeded: several times cheaper
    /// per message than SipHash, which showed in profiles.
    busy: HashMap<Arc<str>, VecDeque<T>>,
    /// Items put back to be handed out again after a pause (an ordered
    /// retry); their keys stay busy meanwhile.
    deferred: Vec<Deferred<T>>,
    next_deferral: u64,
    closed: bool,
}

struct Deferred<T> {
    id: u64,
    key: Option<Arc<str>>,
    item: T,
    timer: AbortHandle,
}

impl<T> KeyQueue<T> {
    pub(crate) fn new() -> Self {
        KeyQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                busy: HashMap::new(),
                deferred: Vec::new(),
                next_deferral: 0,
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

    /// Releases the keys of the items the caller completed (`finished`,
    /// emptied) and moves ready items into `chunk`: a fair share of what
    /// is ready among `workers`, at least one and at most `max`. Waits
    /// while none is ready; false once closed. Taking several items per
    /// lock is what keeps the queue cheap per message; the share keeps
    /// slow handlers spread over every worker, and the items of one chunk
    /// have distinct keys (a key has at most one item ready).
    pub(crate) async fn next_chunk(
        &self,
        finished: &mut Vec<Arc<str>>,
        chunk: &mut VecDeque<(Option<Arc<str>>, T)>,
        workers: usize,
        max: usize,
    ) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                for key in finished.drain(..) {
                    release(&mut state, key);
                }
                if state.closed {
                    return false;
                }
                if !state.ready.is_empty() {
                    let take = (state.ready.len() / workers.max(1)).clamp(1, max.max(1));
                    chunk.extend(state.ready.drain(..take));
                    let more = !state.ready.is_empty();
                    drop(state);
                    if more {
                        self.notify.notify_one();
                    }
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Releases the keys of the items the caller completed (`finished`,
    /// emptied), so their later items go to other workers while the caller
    /// waits for a handler.
    pub(crate) fn release_all(&self, finished: &mut Vec<Arc<str>>) {
        if finished.is_empty() {
            return;
        }
        let ready = {
            let mut state = self.state.lock();
            for key in finished.drain(..) {
                release(&mut state, key);
            }
            !state.ready.is_empty()
        };
        if ready {
            self.notify.notify_one();
        }
    }

    /// Takes out every queued item (ready, deferred or waiting behind its
    /// key) that `matches`; the items of a key left behind keep their order.
    pub(crate) fn remove_where(&self, matches: impl Fn(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut state = self.state.lock();
        let mut kept_deferred = Vec::with_capacity(state.deferred.len());
        for deferred in std::mem::take(&mut state.deferred) {
            if !matches(&deferred.item) {
                kept_deferred.push(deferred);
                continue;
            }
            deferred.timer.abort();
            removed.push(deferred.item);
            if let Some(key) = deferred.key {
                release(&mut state, key);
            }
        }
        state.deferred = kept_deferred;
        let State { ready, busy, .. } = &mut *state;
        for waiting in busy.values_mut() {
            let mut kept = VecDeque::with_capacity(waiting.len());
            for item in waiting.drain(..) {
                if matches(&item) {
                    removed.push(item);
                } else {
                    kept.push_back(item);
                }
            }
            *waiting = kept;
        }
        let mut kept = VecDeque::with_capacity(ready.len());
        for (key, item) in ready.drain(..) {
            if !matches(&item) {
                kept.push_back((key, item));
                continue;
            }
            removed.push(item);
            // The key's head is gone and it is not handed out: its next
            // item (if any) becomes ready in its place.
            if let Some(key) = key {
                match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(next) => kept.push_back((Some(key), next)),
                    None => {
                        busy.remove(&key);
                    }
                }
            }
        }
        *ready = kept;
        let more = !ready.is_empty();
        drop(state);
        if more {
            self.notify.notify_one();
        }
        removed
    }

    /// Stops handing out items; waiting `pop`s return `None`. Deferred
    /// items stay unhandled.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        for deferred in &state.deferred {
            deferred.timer.abort();
        }
        drop(state);
        self.notify.notify_waiters();
    }
}

impl<T: Send + 'static> KeyQueue<T> {
    /// Puts back an item that was handed out, to be handed out again after
    /// `pause`: its key (still busy) keeps its later items behind it, and
    /// the worker is free for other keys meanwhile.
    pub(crate) fn defer(self: &Arc<Self>, key: Option<Arc<str>>, item: T, pause: Duration) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        let id = state.next_deferral;
        state.next_deferral += 1;
        let queue: Weak<Self> = Arc::downgrade(self);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if let Some(queue) = queue.upgrade() {
                queue.resume(id);
            }
        })
        .abort_handle();
        state.deferred.push(Deferred {
            id,
            key,
            item,
            timer,
        });
    }

    /// A deferred item's pause is over: it is ready again.
    fn resume(&self, id: u64) {
        let mut state = self.state.lock();
        let Some(at) = state.deferred.iter().position(|d| d.id == id) else {
            return;
        };
        let deferred = state.deferred.swap_remove(at);
        state.ready.push_back((deferred.key, deferred.item));
        drop(state);
        self.notify.notify_one();
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

    /// One item at a time, releasing `finished` first.
    async fn next<T>(q: &KeyQueue<T>, finished: Option<Arc<str>>) -> Option<(Option<Arc<str>>, T)> {
        let mut finished: Vec<Arc<str>> = finished.into_iter().collect();
        let mut chunk = VecDeque::new();
        if !q.next_chunk(&mut finished, &mut chunk, 1, 1).await {
            return None;
        }
        chunk.pop_front()
    }

    #[tokio::test]
    async fn a_chunk_is_a_fair_share_of_distinct_keys() {
        let q = KeyQueue::new();
        let keys: Vec<Arc<str>> = (0..8).map(|k| Arc::from(k.to_string())).collect();
        // Keys 0..8 twice: eight ready, eight waiting behind them.
        q.push_all((0..16).map(|i| (Some(keys[i % 8].clone()), i)));
        let (mut finished, mut chunk) = (Vec::new(), VecDeque::new());
        // Four workers: a quarter of the eight ready.
        assert!(q.next_chunk(&mut finished, &mut chunk, 4, 32).await);
        let taken: Vec<usize> = chunk.iter().map(|(_, v)| *v).collect();
        assert_eq!(taken, [0, 1]);
        // The cap holds, and a worker takes one when the share rounds to 0.
        chunk.clear();
        assert!(q.next_chunk(&mut finished, &mut chunk, 1, 3).await);
        assert_eq!(chunk.len(), 3);
        chunk.clear();
        assert!(q.next_chunk(&mut finished, &mut chunk, 64, 32).await);
        assert_eq!(chunk.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [5]);
        // Releasing key 0 makes its second item ready.
        finished.push(keys[0].clone());
        chunk.clear();
        assert!(q.next_chunk(&mut finished, &mut chunk, 1, 32).await);
        assert_eq!(chunk.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [6, 7, 8]);
        assert!(finished.is_empty());
    }

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
        let (k1, v1) = next(&q, None).await.unwrap();
        assert_eq!(v1, 1);
        // "a" is busy, so 2 waits; 3 and 4 are handed out.
        assert_eq!(next(&q, None).await.unwrap().1, 3);
        assert_eq!(next(&q, None).await.unwrap().1, 4);
        let (_, v2) = next(&q, k1).await.unwrap();
        assert_eq!(v2, 2);
        q.close();
        assert!(next(&q, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_key_holds_only_itself() {
        let q = Arc::new(KeyQueue::new());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        q.push_all([(Some(a.clone()), 1), (Some(a.clone()), 2)]);
        let (ka, one) = next(&q, None).await.unwrap();
        q.defer(ka, one, Duration::from_secs(10));
        q.push_all([(Some(b.clone()), 10)]);
        // "a" waits out its pause; "b" flows meanwhile, and 2 stays behind 1.
        let started = tokio::time::Instant::now();
        let (kb, ten) = next(&q, None).await.unwrap();
        assert_eq!((ten, started.elapsed()), (10, Duration::ZERO));
        let (ka, again) = next(&q, kb).await.unwrap();
        assert_eq!((again, started.elapsed()), (1, Duration::from_secs(10)));
        assert_eq!(next(&q, ka).await.unwrap().1, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_deferred_item_frees_its_key() {
        let q = Arc::new(KeyQueue::new());
        let a: Arc<str> = Arc::from("a");
        q.push_all([(Some(a.clone()), 1), (Some(a.clone()), 2)]);
        let (ka, one) = next(&q, None).await.unwrap();
        q.defer(ka, one, Duration::from_secs(3600));
        assert_eq!(q.remove_where(|v| *v == 1), [1]);
        assert_eq!(next(&q, None).await.unwrap().1, 2);
    }

    #[tokio::test]
    async fn removing_items_keeps_the_order_of_the_rest() {
        let q = KeyQueue::new();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        q.push_all([
            (Some(a.clone()), 1),
            (Some(a.clone()), 2),
            (Some(a.clone()), 3),
            (Some(b.clone()), 10),
            (Some(b.clone()), 11),
        ]);
        let (kb, first) = {
            // Hand out "a"'s head so "a" is busy.
            let (k, v) = next(&q, None).await.unwrap();
            assert_eq!(v, 1);
            (k, v)
        };
        let mut removed = q.remove_where(|v| *v == 2 || *v == 10);
        removed.sort();
        assert_eq!(removed, [2, 10]);
        // "b" lost its ready head: 11 takes its place.
        assert_eq!(next(&q, None).await.unwrap().1, 11);
        // "a" is still busy with 1; its next is 3, after 1 finishes.
        assert_eq!(first, 1);
        assert_eq!(next(&q, kb).await.unwrap().1, 3);
    }
}
