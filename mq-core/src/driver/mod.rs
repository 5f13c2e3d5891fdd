//! The driver SPI that backends implement, their [`Capabilities`], and the
//! mechanics drivers share instead of copying: the key → partition mapping,
//! partition [`assignment`] (and [`local_group`] for members in one process), [`offsets`] tracking, rebalance events,
//! [`Backoff`], due-time rounding ([`clock`]), internal [`names`] and
//! common [`options`] names.
//!
//! A guide to writing a driver, with a skeleton that passes the
//! conformance suite, is in [`guide`].

mod admin;
pub mod assignment;
mod backoff;
mod capabilities;
pub mod clock;
pub mod guide;
mod half;
pub mod local_group;
pub mod names;
pub mod offsets;
pub mod options;
mod partitioner;
mod rebalance;
mod spi;

pub use admin::{
    AdminSupport, BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo, TopicInfo, TransactionInfo,
};
pub use backoff::Backoff;
pub use capabilities::{Capabilities, DelayModel, Support};
pub use half::{DriverHalfChecks, HalfCheck, HalfOutcome, HalfToken};
pub use names::NameRules;
pub use partitioner::{murmur2, partition_for_key};
pub use rebalance::{Rebalance, RebalanceQueue, Revocation, RevokeWait, REVOKE_LIMIT};
pub use spi::{
    AckToken, Driver, DriverSubscription, DriverTransaction, PartitionLag, RawDelivery, StartFrom,
    SubscribeSpec, TopicPartition, TopicSpec,
};
