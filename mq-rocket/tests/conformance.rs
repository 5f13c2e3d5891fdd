//! The whole mq conformance suite against a real RocketMQ broker
//! (`MQ_TEST_ROCKETMQ_URL`; see `support`). Scenario topics and groups
//! carry a per-run id, so runs do not collide. Scenarios that need what
//! RocketMQ lacks (atomic multi-message transactions, consume-transform-
//! produce) skip themselves by name.
//!
//! One scenario is left out, a known gap: `delayed_messages_go_with_their_deleted_topic`.
//! The broker's timer keeps a delayed message for a deleted topic and
//! puts it into the topic when due, so a topic of the same name created
//! again receives it (rocketmq-rust 1.0.0). Every other scenario runs here
//! (a new one must be added to this list).

mod support;

mq_testkit::conformance_suite!(@tests support::client;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rocketmq-rust 1.0.0's timer delivers a deleted topic's delayed message into the topic created again"]
async fn delayed_messages_go_with_their_deleted_topic() {
    mq_testkit::run_scenario(
        "delayed_messages_go_with_their_deleted_topic",
        support::client,
        |ctx| Box::pin(mq_testkit::scenarios::delayed_messages_go_with_their_deleted_topic(ctx)),
    )
    .await;
}
