//! Consumer groups: cursors per group and partition, member assignment,
//! and the checkpointed offsets file.

pub mod cursor;
pub mod offsets;
