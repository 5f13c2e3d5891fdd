//! The driver SPI that backends implement, their [`Capabilities`], and the
//! shared key → partition mapping.

mod capabilities;
mod partitioner;
mod spi;

pub use capabilities::{Capabilities, Support};
pub use partitioner::{murmur2, partition_for_key};
/// Creates `group` on `topic` (from the earliest message) by joining and
/// leaving it. Queue brokers route only to groups that exist, so the core
/// does this before it publishes to a topic whose readers may come later.
pub async fn join_group(driver: &dyn Driver, topic: &str, group: &str) -> crate::Result<()> {
    let subscription = driver
        .subscribe(SubscribeSpec {
            topics: vec![topic.to_owned()],
            group: group.to_owned(),
            start: StartFrom::Earliest,
            prefetch: 1,
        })
        .await?;
    subscription.close().await
}

pub use spi::{
    AckToken, Driver, DriverSubscription, DriverTransaction, PartitionLag, RawDelivery, StartFrom,
    SubscribeSpec, TopicSpec,
};
