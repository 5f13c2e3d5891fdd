//! The checkpointed group offsets: `offsets.json`, replaced atomically
//! (write temp, fsync, rename, fsync dir).
//!
//! Per group and partition it keeps the committed offset (lowest unacked),
//! the offsets acked above it and how far delivery had gone, so after a
//! restart unacked records come back (counted as redeliveries) and acked
//! ones do not.

use serde::{Deserialize, Serialize};

/// One group's position in one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedCursor {
    /// The group.
    pub group: String,
    /// Topic id.
    pub topic: u32,
    /// Partition.
    pub partition: u32,
    /// Lowest unacked offset.
    pub committed: u64,
    /// Next offset never delivered.
    pub delivered: u64,
    /// Acked offsets above `committed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acked: Vec<u64>,
}

/// The file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffsetsFile {
    /// Every cursor.
    pub cursors: Vec<SavedCursor>,
}
