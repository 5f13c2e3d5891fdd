//! The message model: [`Message`], [`Headers`], [`Receipt`], [`Delivery`],
//! and the validation of names.

mod dead_letter;
mod delivery;
mod headers;
#[allow(clippy::module_inception)]
mod message;
mod names;
mod receipt;
pub mod reserved;

pub use dead_letter::DeadLetterInfo;
pub use delivery::Delivery;
pub use headers::Headers;
pub(crate) use message::IdSequence;
pub use message::{Message, MessageId, MessageParts};
pub use names::{
    is_reserved_header, validate_group, validate_header_name, validate_topic, IntoName,
    MAX_GROUP_LEN, MAX_TOPIC_LEN, RESERVED_PREFIX,
};
pub(crate) use names::{validate_any_group, validate_any_topic};
pub use receipt::Receipt;
