//! Consumer groups: the checkpointed offsets file. Cursors are the core's
//! offset tracker ([`mq_core::driver::offsets`]), assignment the core's
//! [`mq_core::driver::assignment`].

pub mod offsets;
