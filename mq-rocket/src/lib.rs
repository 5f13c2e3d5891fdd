//! The RocketMQ driver for mq. Not implemented yet: the crate exists so the
//! workspace has its final shape; `mq::connect` answers its URL scheme with
//! `Error::Unsupported` until the driver lands.
