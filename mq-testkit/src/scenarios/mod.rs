//! The scenarios, one async function each. Every scenario takes a
//! [`Context`](crate::Context), panics when a guarantee does not hold, and
//! returns [`Skip`](crate::Skip) naming the capability it lacks.

mod admin;
mod basics;
mod bounds;
mod dead_letters;
mod delay;
mod flow;
mod half;
mod idempotency;
mod membership;
mod ordering;
mod retry;
mod stream;
mod transactions;
mod transform;

pub use admin::admin_lists_browses_and_resets;
pub use basics::{
    fan_out_to_groups, group_load_sharing, invalid_input_errors, lag_drops_to_zero, round_trip,
};
pub use bounds::{lag_never_below_backlog, prefetch_bound_at_the_broker};
pub use dead_letters::dead_letters_are_inspected_redriven_and_purged;
pub use delay::{delay_is_never_early, delayed_messages_go_with_their_deleted_topic};
pub use flow::{batch_handler, graceful_shutdown, prefetch_bound};
pub use half::{
    half_message_checked_until_known, half_message_commit_and_rollback, ScriptedChecker, PLAN,
};
pub use idempotency::{dedup_gives_one_effect, idempotent_publish};
pub use membership::{
    group_created_before_publishing, members_join_and_leave_mid_stream,
    members_start_and_stop_concurrently, new_group_from_earliest,
};
pub use ordering::per_key_order_under_concurrency;
pub use retry::{
    dead_letter_after_max_attempts, ordered_retry_keeps_key_order,
    redelivery_after_consumer_dropped, redelivery_after_handler_error, reject_goes_to_dead_letter,
    unordered_retry_does_not_block,
};
pub use stream::dropped_delivery_is_released;
pub use transactions::transaction_commit_and_abort;
pub use transform::transform_publishes_outputs_and_acks_inputs;

use std::time::Duration;

use mq_core::RetryPolicy;

/// Generous limit for things that should happen "soon" on any broker.
pub(crate) const SOON: Duration = Duration::from_secs(20);

/// Fast retries so scenarios finish quickly.
pub(crate) fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .with_jitter(0.0)
}
