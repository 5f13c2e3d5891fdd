//! The ordering executor's queue: work for N workers where items with the
//! same key are handed out one at a time, in order, and different keys flow
//! in parallel. A key that is busy (or waiting to retry) holds back only its
//! own later items, never a worker.
//!
//! Workers wait on the queue itself: an idle worker leaves its waker here,
//! and at most one idle worker is being woken at a time. A worker whose
//! handlers finish without waiting takes item after item under one lock
//! each, without waking the others for every item; a woken worker that
//! finds more work than it takes wakes the next, so handlers that do wait
//! still spread over every worker.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::Mutex;
use tokio::task::AbortHandle;

/// Emptied queues of keys kept for the next keys, so a key that gets busy
/// again costs no allocation.
const SPARE_QUEUES: usize = 64;
/// Queues grown past this many items are not kept.
const SPARE_CAPACITY: usize = 16;

/// An item's ordering key with its hash, taken once when the item is
/// queued: the key is looked up again when its item is done.
pub(crate) struct Key {
    name: Arc<str>,
    hash: u64,
}

impl Key {
    fn is(&self, name: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.name, name) || *self.name == **name
    }
}

pub(crate) struct KeyQueue<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    ready: VecDeque<(Option<Key>, T)>,
    /// Keys handed out or ready, with their later items waiting behind
    /// them. The hash is seeded at random; at most `prefetch` keys are in it.
    busy: HashTable<(Arc<str>, VecDeque<T>)>,
    hasher: DefaultHashBuilder,
    spare: Vec<VecDeque<T>>,
    /// Items put back to be handed out again after a pause (an ordered
    /// retry); their keys stay busy meanwhile.
    deferred: Vec<Deferred<T>>,
    next_deferral: u64,
    closed: bool,
    /// Workers waiting for an item, by worker number.
    idle: Vec<(usize, Waker)>,
    /// The worker woken and not back for work yet, if any.
    waking: Option<usize>,
}

struct Deferred<T> {
    id: u64,
    key: Option<Key>,
    item: T,
    timer: AbortHandle,
}

impl<T> State<T> {
    /// Picks an idle worker to wake when items are ready and no other is
    /// being woken; the caller wakes it after unlocking.
    fn wake_one(&mut self) -> Option<Waker> {
        if self.ready.is_empty() || self.waking.is_some() {
            return None;
        }
        let (worker, waker) = self.idle.pop()?;
        self.waking = Some(worker);
        Some(waker)
    }

    fn push(&mut self, name: Option<Arc<str>>, item: T) {
        let Some(name) = name else {
            self.ready.push_back((None, item));
            return;
        };
        let hash = self.hasher.hash_one(&*name);
        let key = Key { name, hash };
        match self.busy.find_mut(hash, |(name, _)| key.is(name)) {
            Some((_, waiting)) => waiting.push_back(item),
            None => {
                let waiting = self.spare.pop().unwrap_or_default();
                let hasher = &self.hasher;
                self.busy
                    .insert_unique(hash, (key.name.clone(), waiting), |(name, _)| {
                        hasher.hash_one(&**name)
                    });
                self.ready.push_back((Some(key), item));
            }
        }
    }

    /// Makes the next waiting item of `key` ready, or forgets the key.
    fn release(&mut self, key: Key) {
        let Ok(mut entry) = self.busy.find_entry(key.hash, |(name, _)| key.is(name)) else {
            return;
        };
        match entry.get_mut().1.pop_front() {
            Some(item) => self.ready.push_back((Some(key), item)),
            None => {
                let ((_, waiting), _) = entry.remove();
                if self.spare.len() < SPARE_QUEUES && waiting.capacity() <= SPARE_CAPACITY {
                    self.spare.push(waiting);
                }
            }
        }
    }

    /// Worker `worker` stops waiting; passes its wake-up on if it got one.
    fn leave(&mut self, worker: usize) -> Option<Waker> {
        if let Some(at) = self.idle.iter().position(|(w, _)| *w == worker) {
            self.idle.swap_remove(at);
        }
        if self.waking == Some(worker) {
            self.waking = None;
        }
        self.wake_one()
    }
}

impl<T> KeyQueue<T> {
    pub(crate) fn new() -> Self {
        KeyQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                busy: HashTable::new(),
                hasher: DefaultHashBuilder::default(),
                spare: Vec::new(),
                deferred: Vec::new(),
                next_deferral: 0,
                closed: false,
                idle: Vec::new(),
                waking: None,
            }),
        }
    }

    /// Queues several items under one lock.
    pub(crate) fn push_all(&self, items: impl IntoIterator<Item = (Option<Arc<str>>, T)>) {
        let wake = {
            let mut state = self.state.lock();
            for (name, item) in items {
                state.push(name, item);
            }
            state.wake_one()
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// For worker number `worker`: releases `finished` (the key of the
    /// item it just completed, if it had one) and returns the next item to
    /// work on; `None` once closed. Both under one lock, as workers do
    /// this per item.
    pub(crate) fn next(&self, worker: usize, finished: Option<Key>) -> Next<'_, T> {
        Next {
            queue: self,
            worker,
            finished,
            waiting: false,
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
                state.release(key);
            }
        }
        state.deferred = kept_deferred;
        for (_, waiting) in state.busy.iter_mut() {
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
        let ready = std::mem::take(&mut state.ready);
        for (key, item) in ready {
            if !matches(&item) {
                state.ready.push_back((key, item));
                continue;
            }
            removed.push(item);
            // The key's head is gone and it is not handed out: its next
            // item (if any) becomes ready in its place.
            if let Some(key) = key {
                state.release(key);
            }
        }
        let wake = state.wake_one();
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        removed
    }

    /// Stops handing out items; waiting workers get `None`. Deferred
    /// items stay unhandled.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        for deferred in &state.deferred {
            deferred.timer.abort();
        }
        let idle = std::mem::take(&mut state.idle);
        drop(state);
        for (_, waker) in idle {
            waker.wake();
        }
    }
}

impl<T: Send + 'static> KeyQueue<T> {
    /// Puts back an item that was handed out, to be handed out again after
    /// `pause`: its key (still busy) keeps its later items behind it, and
    /// the worker is free for other keys meanwhile.
    pub(crate) fn defer(self: &Arc<Self>, key: Option<Key>, item: T, pause: Duration) {
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
        let wake = state.wake_one();
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

/// See [`KeyQueue::next`].
pub(crate) struct Next<'a, T> {
    queue: &'a KeyQueue<T>,
    worker: usize,
    finished: Option<Key>,
    /// Whether this worker may have left its waker in `idle`.
    waiting: bool,
}

impl<T> Future for Next<'_, T> {
    type Output = Option<(Option<Key>, T)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.queue.state.lock();
        if let Some(key) = this.finished.take() {
            state.release(key);
        }
        if state.waking == Some(this.worker) {
            state.waking = None;
        }
        if state.closed {
            return Poll::Ready(None);
        }
        let Some(next) = state.ready.pop_front() else {
            match state.idle.iter_mut().find(|(w, _)| *w == this.worker) {
                Some((_, waker)) if waker.will_wake(cx.waker()) => {}
                Some((_, waker)) => *waker = cx.waker().clone(),
                None => state.idle.push((this.worker, cx.waker().clone())),
            }
            this.waiting = true;
            return Poll::Pending;
        };
        let wake = if std::mem::take(&mut this.waiting) {
            state.leave(this.worker)
        } else {
            state.wake_one()
        };
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
        Poll::Ready(Some(next))
    }
}

impl<T> Drop for Next<'_, T> {
    fn drop(&mut self) {
        if !self.waiting {
            return;
        }
        let wake = self.queue.state.lock().leave(self.worker);
        if let Some(waker) = wake {
            waker.wake();
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
        let (k1, v1) = q.next(0, None).await.unwrap();
        assert_eq!(v1, 1);
        // "a" is busy, so 2 waits; 3 and 4 are handed out.
        assert_eq!(q.next(0, None).await.unwrap().1, 3);
        assert_eq!(q.next(0, None).await.unwrap().1, 4);
        let (_, v2) = q.next(0, k1).await.unwrap();
        assert_eq!(v2, 2);
        q.close();
        assert!(q.next(0, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_key_holds_only_itself() {
        let q = Arc::new(KeyQueue::new());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        q.push_all([(Some(a.clone()), 1), (Some(a.clone()), 2)]);
        let (ka, one) = q.next(0, None).await.unwrap();
        q.defer(ka, one, Duration::from_secs(10));
        q.push_all([(Some(b.clone()), 10)]);
        // "a" waits out its pause; "b" flows meanwhile, and 2 stays behind 1.
        let started = tokio::time::Instant::now();
        let (kb, ten) = q.next(0, None).await.unwrap();
        assert_eq!((ten, started.elapsed()), (10, Duration::ZERO));
        let (ka, again) = q.next(0, kb).await.unwrap();
        assert_eq!((again, started.elapsed()), (1, Duration::from_secs(10)));
        assert_eq!(q.next(0, ka).await.unwrap().1, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_deferred_item_frees_its_key() {
        let q = Arc::new(KeyQueue::new());
        let a: Arc<str> = Arc::from("a");
        q.push_all([(Some(a.clone()), 1), (Some(a.clone()), 2)]);
        let (ka, one) = q.next(0, None).await.unwrap();
        q.defer(ka, one, Duration::from_secs(3600));
        assert_eq!(q.remove_where(|v| *v == 1), [1]);
        assert_eq!(q.next(0, None).await.unwrap().1, 2);
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
            let (k, v) = q.next(0, None).await.unwrap();
            assert_eq!(v, 1);
            (k, v)
        };
        let mut removed = q.remove_where(|v| *v == 2 || *v == 10);
        removed.sort();
        assert_eq!(removed, [2, 10]);
        // "b" lost its ready head: 11 takes its place.
        assert_eq!(q.next(0, None).await.unwrap().1, 11);
        // "a" is still busy with 1; its next is 3, after 1 finishes.
        assert_eq!(first, 1);
        assert_eq!(q.next(0, kb).await.unwrap().1, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_that_wait_all_get_work() {
        // Each worker holds its item until every item is taken: only a
        // wake-up passed on from worker to worker lets all of them start.
        let q = Arc::new(KeyQueue::new());
        let workers = 8;
        let all_taken = Arc::new(tokio::sync::Barrier::new(workers));
        let mut tasks = Vec::new();
        for worker in 0..workers {
            let (q, all_taken) = (q.clone(), all_taken.clone());
            tasks.push(tokio::spawn(async move {
                let (_, item) = q.next(worker, None).await.unwrap();
                all_taken.wait().await;
                item
            }));
        }
        tokio::task::yield_now().await;
        q.push_all((0..workers).map(|i| (Some(Arc::from(format!("k{i}"))), i)));
        let mut got = Vec::new();
        for task in tasks {
            got.push(
                tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        got.sort();
        assert_eq!(got, (0..workers).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_stops_waiting_workers() {
        let q = Arc::new(KeyQueue::<u32>::new());
        let tasks: Vec<_> = (0..4)
            .map(|worker| {
                let q = q.clone();
                tokio::spawn(async move { q.next(worker, None).await })
            })
            .collect();
        tokio::task::yield_now().await;
        q.close();
        for task in tasks {
            let next = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap();
            assert!(next.unwrap().is_none());
        }
    }
}
