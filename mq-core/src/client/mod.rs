//! The user API: [`Client`], [`Producer`], [`Transaction`], [`ConsumerBuilder`],
//! [`Subscription`], [`Admin`] and half messages ([`half`]).

mod admin;
#[allow(clippy::module_inception)]
mod client;
mod coalesce;
mod consumer;
mod dead_letters;
pub mod half;
mod producer;
pub(crate) mod publish;
mod subscription;
mod transaction;

pub use admin::{Admin, MAX_BROWSE, MAX_TRANSACTION_ID};
pub use client::Client;
pub use coalesce::Coalescing;
pub use consumer::{dead_letter_group, ConsumerBuilder, DEAD_LETTER_GROUP};
pub use dead_letters::{DeadLetterView, RedriveOptions, RedriveReport};
pub use half::{checker_fn, HalfMessage, HalfProducer, HalfProducerBuilder, TransactionChecker};
pub use producer::Producer;
pub use subscription::Subscription;
pub use transaction::Transaction;
