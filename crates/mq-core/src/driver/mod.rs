//! The driver SPI that backends implement, their [`Capabilities`], and the
//! shared key → partition mapping.

mod capabilities;
mod partitioner;
mod spi;

pub use capabilities::{Capabilities, Support};
pub use partitioner::{murmur2, partition_for_key};
pub use spi::{
    AckToken, Driver, DriverSubscription, DriverTransaction, PartitionLag, RawDelivery, StartFrom,
    SubscribeSpec, TopicSpec,
};
