//! # Writing a driver
//!
//! A driver maps the SPI's primitives onto one broker; everything else
//! (validation, ids, retries, dead letters, delay emulation, dedup,
//! per-key ordering, telemetry) happens once in the core. A new backend is
//! a crate `mq-<broker>` depending on `mq-core` only, with:
//!
//! 1. **A [`Driver`](super::Driver)** built from a [`Config`](crate::Config)
//!    (read options with [`Config::reader`](crate::Config::reader), using
//!    the common names in [`options`](super::options), and refuse unknown
//!    ones with `finish`). It declares [`Capabilities`](super::Capabilities)
//!    starting from `Capabilities::minimal()`: only what the broker does
//!    itself is `Native`; the core emulates delay and retry-after where
//!    they are `Unsupported`, and refuses the rest with
//!    `Error::Unsupported`. Say which names the broker accepts
//!    ([`NameRules`](super::NameRules)): every internal name the core
//!    builds will obey them.
//! 2. **`publish`** returns once the broker has the batch durably (confirms,
//!    acks=all, fsync): a receipt is a promise. Map the key to a partition
//!    with [`partition_for_key`](super::partition_for_key) unless the broker
//!    already hashes the same way.
//! 3. **`ensure_group`** creates a group without joining it (a join and a
//!    leave is a rebalance on a partitioned broker). After it, the group
//!    keeps every message published to the topic. **`delete_topic`**
//!    removes it; if the broker creates topics on publish, answer
//!    **`topic_exists`** too, so messages the core's delay emulation still
//!    holds for a deleted topic go with it instead of creating it again.
//! 4. **A [`DriverSubscription`](super::DriverSubscription)**: `fetch` is
//!    cancel safe and bounded by `max`; records are built with
//!    [`RawDelivery::new`](super::RawDelivery::new) and an
//!    [`AckToken`](super::AckToken) (partition and offset, plus the broker's
//!    own handle if it acks by one). Out-of-order acks become a contiguous
//!    committed offset with the core's [`offsets`](super::offsets)
//!    tracker. The subscription stays a member while nobody fetches.
//! 5. **Rebalances**: if the broker can move partitions between members,
//!    report it through `rebalance` (see [`Rebalance`](super::Rebalance)):
//!    `Assigned` when a partition may be read, `Revoked` before it leaves,
//!    and hand it on only when the [`RevokeWait`](super::RevokeWait)
//!    resolves. [`RebalanceQueue`](super::RebalanceQueue) keeps the events;
//!    where the clients split the partitions themselves, use
//!    [`assignment`](super::assignment) (`share`, `Assignment`), and
//!    [`local_group`](super::local_group) when all members live in one
//!    process.
//! 6. **Shared mechanics** instead of copies: [`Backoff`](super::Backoff)
//!    for reconnects, [`clock`](super::clock) for due times (rounded up, so
//!    never early), [`names::bounded`](super::names::bounded) for brokers
//!    with name length limits.
//!
//! ## Skeleton
//!
//! `mq-testkit/tests/skeleton_driver.rs` is a complete skeleton: every SPI
//! method, on top of the memory broker standing in for a real one, passing
//! the whole conformance suite with one line:
//!
//! ```rust,ignore
//! mq_testkit::conformance_suite!(|| async {
//!     Some(Client::new(SkeletonDriver { broker: MemoryDriver::new() }))
//! });
//! ```
//!
//! Replace each call on the stand-in broker with your broker's client and
//! keep the suite green. For a real broker, connect with
//! `mq_testkit::connect_or_skip("MQ_TEST_<BROKER>_URL", default_url, ..)`
//! so the tests skip with a reason without a broker, and fail under
//! `MQ_REQUIRE_BROKERS=1`. The suite's scenarios are listed in
//! `mq_testkit::scenarios`; a scenario that needs a capability the backend
//! lacks reports `SKIPPED <scenario>: <reason>`.
