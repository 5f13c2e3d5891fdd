//! # mq-testkit
//!
//! The conformance suite: one set of scenarios that every mq backend runs
//! against a real broker, so "the same guarantees on every broker" is
//! something tests check rather than a promise.
//!
//! A backend crate runs the whole suite with one macro in a test file:
//!
//! ```ignore
//! // mq-redis/tests/conformance.rs
//! mq_testkit::conformance_suite!(|| async {
//!     mq_testkit::connect_or_skip("MQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", |config| async move {
//!         Ok(mq_core::Client::new(mq_redis::RedisDriver::connect(&config).await?))
//!     }).await
//! });
//! ```
//!
//! Each scenario checks the client's [`Capabilities`](mq_core::Capabilities)
//! first and, when the backend lacks what it needs, prints
//! `SKIPPED <scenario>: <reason>` instead of failing. A factory that cannot
//! reach its broker returns `None` and the test prints why it skips, unless
//! `MQ_REQUIRE_BROKERS=1`, where it fails.

mod child;
pub mod consumer_kill;
mod context;
pub mod delay_kill;
mod fault_proxy;
pub mod half_kill;
mod harness;
mod network;
pub mod scenarios;
mod support;

pub use context::{Context, Skip};
pub use fault_proxy::FaultProxy;
pub use harness::{connect_or_skip, require_brokers, run_scenario, Outcome};
pub use network::{check_network_faults, NetworkReport};
pub use support::{wait_quiescent, wait_until, Recorder, Seen, QUIET};

/// Generates one `#[tokio::test]` per conformance scenario.
///
/// `$factory` is an expression of type `Fn() -> impl Future<Output =
/// Option<mq_core::Client>>`; `None` means "no broker: skip". Each test gets
/// a fresh client and topic names unique to the run.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@tests $factory;
            round_trip,
            group_load_sharing,
            fan_out_to_groups,
            per_key_order_under_concurrency,
            redelivery_after_handler_error,
            redelivery_after_consumer_dropped,
            dead_letter_after_max_attempts,
            reject_goes_to_dead_letter,
            ordered_retry_keeps_key_order,
            unordered_retry_does_not_block,
            delay_is_never_early,
            delayed_messages_go_with_their_deleted_topic,
            transaction_commit_and_abort,
            idempotent_publish,
            dedup_gives_one_effect,
            batch_handler,
            prefetch_bound,
            graceful_shutdown,
            lag_drops_to_zero,
            invalid_input_errors,
            members_join_and_leave_mid_stream,
            members_start_and_stop_concurrently,
            group_created_before_publishing,
            new_group_from_earliest,
            dropped_delivery_is_released,
            transform_publishes_outputs_and_acks_inputs,
            admin_lists_browses_and_resets,
            dead_letters_are_inspected_redriven_and_purged,
            prefetch_bound_at_the_broker,
            lag_never_below_backlog,
            half_message_commit_and_rollback,
            half_message_checked_until_known,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = $factory;
                $crate::run_scenario(stringify!($name), factory, |ctx| {
                    Box::pin($crate::scenarios::$name(ctx))
                })
                .await;
            }
        )*
    };
}
