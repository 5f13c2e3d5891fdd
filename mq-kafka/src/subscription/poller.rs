//! The member's poll thread: the only caller of `poll` on its consumer, so
//! librdkafka's heartbeats, rebalance callbacks and fetches keep going
//! whether or not the runtime fetches. Backpressure pauses the assigned
//! partitions instead of stopping the polls, so a slow handler never
//! breaks `max.poll.interval.ms`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use mq_core::driver::{AckToken, RawDelivery, RevokeWait, REVOKE_LIMIT};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::state::{Progress, Slot, State};
use super::Shared;
use crate::codec::decode;

/// The consumer of one member.
pub(super) type MemberConsumer = BaseConsumer<MemberContext>;

/// Longest single wait in `poll`: how quickly the thread sees a close, a
/// rewind or room in the buffer.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// Records taken from librdkafka per wake-up, at most.
const POLL_BATCH: usize = 1024;
/// How long the buffer may stay full before the partitions are paused:
/// a runtime merely busy takes records again well within it, and pausing
/// drops every record librdkafka fetched ahead (fetched again on resume).
/// Rebalance callbacks wait while the thread waits, so this bounds how
/// late a revocation starts.
pub(super) const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// Longest wait for the group to let the member go on close.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// Connects librdkafka's rebalance callbacks to the SPI's events.
pub(super) struct MemberContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for MemberContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::logging::forward(level, facility, message);
    }
}

impl ConsumerContext for MemberContext {
    /// A revocation: stop handing out the partitions, wait for the runtime
    /// to let go of them (handlers done, acks flushed; bounded), commit
    /// their offsets, and only then let librdkafka hand them on.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shared = &self.shared;
        let slots = shared.slots_of(tpl);
        if slots.is_empty() {
            return;
        }
        shared.state.lock().stop_reading(&slots, &shared.topics);
        if !shared.closing.load(Ordering::Acquire) {
            let wait = shared
                .rebalances
                .revoke(State::partitions(&slots, &shared.topics));
            wait_for_runtime(wait, shared);
        }
        // Committed even when librdkafka reports the assignment lost: a
        // broker may bump the generation before the member hears of the
        // rebalance, and the drained offsets are still the best there are.
        shared.revoking.store(true, Ordering::Release);
        commit(consumer, shared, CommitMode::Sync);
        shared.revoking.store(false, Ordering::Release);
        shared.state.lock().remove(&slots);
    }

    /// A background commit that failed is carried by the next one.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "committing offsets failed; the next commit carries them");
            let failed = self.shared.slots_of(offsets);
            self.shared.state.lock().commit_failed(&failed);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        if let Rebalance::Assign(tpl) = rebalance {
            let slots = shared.slots_of(tpl);
            shared.state.lock().assign(&slots);
            if shared.paused.load(Ordering::Acquire) {
                let _ = consumer.pause(tpl);
            }
            shared
                .rebalances
                .assigned(State::partitions(&slots, &shared.topics));
            shared.joined.store(true, Ordering::Release);
            shared.joined_wake.notify_waiters();
        }
        *shared.group_metadata.lock() = consumer.group_metadata().map(Arc::new);
    }
}

/// Waits until the runtime has let go of revoked partitions, for
/// [`REVOKE_LIMIT`] at most, and no longer once the subscription closes
/// (a runtime that is shutting down no longer completes revocations).
/// Polled without a runtime: this thread is librdkafka's, and the
/// runtime may be gone.
fn wait_for_runtime(mut wait: RevokeWait, shared: &Shared) {
    let deadline = Instant::now() + REVOKE_LIMIT;
    while (&mut wait).now_or_never().is_none() {
        if shared.closing.load(Ordering::Acquire) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(REVOKE_POLL);
    }
}

/// How often a revocation in progress is looked at.
const REVOKE_POLL: Duration = Duration::from_millis(2);

/// Looks up the delivery progress committed for the partitions of
/// `batch` seen for the first time since their assignment. Done here, not
/// in the assign callback: librdkafka answers offset fetches only once the
/// assignment is in place.
fn look_up_progress(consumer: &MemberConsumer, shared: &Shared, batch: &[RawDelivery]) {
    let slots = shared.state.lock().without_progress(
        batch
            .iter()
            .filter_map(|d| shared.slot(&d.token.topic, d.partition as i32)),
    );
    if slots.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(slots.len());
    for (t, p) in &slots {
        tpl.add_partition(&shared.topics[*t], *p);
    }
    // Without an answer, redeliveries count as first deliveries.
    let committed = consumer.committed_offsets(tpl, PROGRESS_WAIT).ok();
    let mut state = shared.state.lock();
    for slot in slots {
        let progress = committed.as_ref().and_then(|c| {
            let e = c.find_partition(&shared.topics[slot.0], slot.1)?;
            let Offset::Offset(at) = e.offset() else {
                return Progress::decode(e.metadata(), 0).map(|p| Progress {
                    acked: Vec::new(),
                    ..p
                });
            };
            Progress::decode(e.metadata(), u64::try_from(at).ok()?)
        });
        state.set_progress(slot, progress);
    }
}

/// Longest wait for the committed progress of newly assigned partitions.
const PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// Commits the offsets the member's acks moved: in the background
/// periodically (the poll thread must not wait a round trip each time),
/// synchronously on revoke and close. A failed commit is carried by the
/// next one.
pub(super) fn commit(consumer: &MemberConsumer, shared: &Shared, mode: CommitMode) {
    let positions = if shared.state.lock().wants_position() {
        consumer.position().ok()
    } else {
        None
    };
    let position = |(t, p): Slot| -> Option<u64> {
        let tpl = positions.as_ref()?;
        match tpl.find_partition(&shared.topics[t], p)?.offset() {
            Offset::Offset(o) => u64::try_from(o).ok(),
            _ => None,
        }
    };
    let offsets = shared.state.lock().offsets_to_commit(position);
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for ((t, p), offset, progress) in &offsets {
        let mut elem = tpl.add_partition(&shared.topics[*t], *p);
        let _ = elem.set_offset(Offset::Offset(*offset as i64));
        elem.set_metadata(progress.encode(*offset));
    }
    let result = match consumer.commit(&tpl, mode) {
        // A broker that moved the group to its next generation before the
        // revocation was reported refuses the member's commit; the
        // partitions are drained and nobody reads them until the
        // rebalance ends, so the offsets are committed outside the
        // membership (a broker that refuses that too loses nothing more).
        Err(_) if shared.revoking.load(Ordering::Acquire) => {
            shared.outsider.commit(&tpl, CommitMode::Sync)
        }
        other => other,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "committing offsets failed; the next commit carries them");
        let slots: Vec<Slot> = offsets.iter().map(|(slot, _, _)| *slot).collect();
        shared.state.lock().commit_failed(&slots);
    }
}

/// Polls until the subscription closes, then leaves the group in bounded time.
pub(super) fn run(consumer: MemberConsumer, shared: &Shared) {
    let mut last_commit = Instant::now();
    let mut batch: Vec<RawDelivery> = Vec::with_capacity(POLL_BATCH);
    let mut full_since: Option<Instant> = None;
    while !shared.closing.load(Ordering::Acquire) {
        for slot in shared.take_rewinds() {
            let at = shared.state.lock().rewind(slot, &shared.topics);
            if let Some(at) = at {
                let (t, p) = slot;
                if let Err(e) = consumer.seek(
                    &shared.topics[t],
                    p,
                    Offset::Offset(at as i64),
                    POLL_WAIT * 50,
                ) {
                    tracing::warn!(error = %e, "rewinding a partition failed");
                }
            }
        }
        if last_commit.elapsed() >= shared.commit_interval {
            commit(&consumer, shared, CommitMode::Async);
            last_commit = Instant::now();
        }
        let stalled = full_since.is_some_and(|since| since.elapsed() >= PAUSE_AFTER);
        backpressure(&consumer, shared, stalled);
        if !shared.paused.load(Ordering::Acquire) && shared.wait_for_room(POLL_WAIT) {
            full_since.get_or_insert_with(Instant::now);
            continue;
        }
        let room = shared.room();
        if room > 0 {
            full_since = None;
        }
        let mut wait = POLL_WAIT;
        // Never more than the buffer's room: what is read counts as
        // handed to this member until the runtime takes it.
        let room = room.clamp(1, POLL_BATCH);
        while batch.len() < room {
            match consumer.poll(wait) {
                Some(Ok(record)) => {
                    if let Some(slot) = shared.slot(record.topic(), record.partition()) {
                        let topic = &shared.topics[slot.0];
                        let offset = record.offset().max(0) as u64;
                        let token = AckToken::new(topic.clone(), slot.1 as u32, offset);
                        let message = decode(topic, &record);
                        batch.push(
                            RawDelivery::new(message, token, SystemTime::now()).with_offset(offset),
                        );
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        if !batch.is_empty() {
            look_up_progress(&consumer, shared, &batch);
            shared.accept(&mut batch);
        }
    }
    leave(consumer, shared);
}

/// Pauses every assigned partition once the buffer has been full for
/// [`PAUSE_AFTER`] (`stalled`), and resumes them once the runtime took
/// half of it.
fn backpressure(consumer: &MemberConsumer, shared: &Shared, stalled: bool) {
    let buffered = shared.state.lock().buffer.len();
    let paused = shared.paused.load(Ordering::Acquire);
    let change = if !paused && stalled && buffered >= shared.buffer_limit {
        Some(true)
    } else if paused && buffered <= shared.buffer_limit / 2 {
        Some(false)
    } else {
        None
    };
    // Only on a change: asking librdkafka for the assignment is a round
    // trip to its main thread.
    let Some(pause) = change else { return };
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    shared.paused.store(pause, Ordering::Release);
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
    }
}

/// Commits, leaves the group and destroys the consumer, within
/// [`CLOSE_LIMIT`]: librdkafka's destroy can hang on a consumer that never
/// finished closing, so one that does not finish in time is leaked rather
/// than waited for.
fn leave(consumer: MemberConsumer, shared: &Shared) {
    commit(&consumer, shared, CommitMode::Sync);
    shared.state.lock().buffer.clear();
    if consumer.close_queue().is_ok() {
        let deadline = Instant::now() + CLOSE_LIMIT;
        while !consumer.closed() && Instant::now() < deadline {
            // Records still arriving are dropped at once: held records
            // are what keeps a destroy waiting.
            let _ = consumer.poll(POLL_WAIT);
        }
    }
    if consumer.closed() {
        drop(consumer);
    } else {
        tracing::warn!("a Kafka consumer did not close in time; leaking it");
        std::mem::forget(consumer);
    }
}
