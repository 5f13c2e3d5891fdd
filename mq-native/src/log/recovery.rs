//! Recovery: scanning the log past the last checkpoint, and telling a torn
//! tail (cut off by a crash: truncate it) from corruption in the middle of
//! the log (report it with the file and offset, never serve it).

use std::sync::Arc;

use bytes::Bytes;
use mq_core::Result;

use super::batch::{self, DecodeError};
use super::segment::{Segment, SegmentSet};
use crate::error::{corrupt, io_error};

/// Bytes read at once while scanning.
const SCAN_CHUNK: usize = 8 * 1024 * 1024;

/// How the log ended.
#[derive(Debug)]
pub enum Tail {
    /// The last batch ends at the end of the last segment.
    Clean,
    /// Bytes after `position` in `segment` are not a whole batch: a write
    /// the crash cut short. They were never acknowledged (an `always` ack
    /// waits for the fsync that covers them), so they are dropped.
    Torn {
        /// The segment with the tail.
        segment: Arc<Segment>,
        /// Where the good data ends.
        position: u64,
    },
}

/// Calls `visit(position, batch)` for every good batch from `from` on;
/// returns the end of the good data and how the log ended. Corruption
/// followed by good data is an error naming the file and offset.
pub fn scan(
    log: &SegmentSet,
    from: u64,
    mut visit: impl FnMut(u64, &Bytes) -> Result<()>,
) -> Result<(u64, Tail)> {
    let segments = log.all();
    let Some(first) = segments
        .iter()
        .rposition(|s| s.base <= from)
        .or(if segments.is_empty() { None } else { Some(0) })
    else {
        return Ok((from, Tail::Clean));
    };
    let mut position = from.max(segments[first].base);
    for (i, segment) in segments.iter().enumerate().skip(first) {
        if i > first && segment.base != position {
            if segment.is_empty().unwrap_or(false) {
                // A segment created just before a crash, before any write.
                return Ok((
                    position,
                    Tail::Torn {
                        segment: segments[i - 1].clone(),
                        position,
                    },
                ));
            }
            return Err(corrupt(
                &segment.path,
                0,
                format!("segment does not start where the previous one ends ({position})"),
            ));
        }
        let file_len = segment
            .len()
            .map_err(|e| io_error(format!("reading {}", segment.path.display()), e))?;
        let end = segment.base + file_len;
        if position > end {
            return Err(corrupt(
                &segment.path,
                file_len,
                format!("the checkpoint says the log reaches {position}, the file is shorter"),
            ));
        }
        let last = i + 1 == segments.len();
        let mut chunk_start = position;
        let mut chunk = Bytes::new();
        while position < end {
            let at = (position - chunk_start) as usize;
            match batch::decode(&chunk[at.min(chunk.len())..]) {
                Ok((_, len)) => {
                    visit(position, &chunk.slice(at..at + len))?;
                    position += len as u64;
                }
                Err(DecodeError::Incomplete { needed })
                    if chunk_start + (chunk.len() as u64) < end =>
                {
                    let want = needed
                        .unwrap_or(0)
                        .max(SCAN_CHUNK)
                        .min((end - position) as usize);
                    let mut buf = vec![0u8; want];
                    let n = segment
                        .read_at(position, &mut buf)
                        .map_err(|e| io_error(format!("reading {}", segment.path.display()), e))?;
                    buf.truncate(n);
                    chunk_start = position;
                    chunk = Bytes::from(buf);
                    if n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    if last && !good_data_follows(segment, position, end) {
                        return Ok((
                            position,
                            Tail::Torn {
                                segment: segment.clone(),
                                position,
                            },
                        ));
                    }
                    let why = match e {
                        DecodeError::Incomplete { .. } => DecodeError::Corrupt("batch cut short"),
                        other => other,
                    };
                    return Err(corrupt(&segment.path, position - segment.base, why));
                }
            }
        }
        if position < end {
            return Ok((
                position,
                Tail::Torn {
                    segment: segment.clone(),
                    position,
                },
            ));
        }
    }
    Ok((position, Tail::Clean))
}

/// How far past a bad batch recovery looks for good data.
const SEARCH_LIMIT: u64 = 64 * 1024 * 1024;

/// Whether a good batch starts anywhere after the bad one at `position`:
/// then the bad one is damage in the middle of the log (a flipped bit, even
/// in a length prefix), not a tail a crash cut short, and truncating would
/// drop good data.
fn good_data_follows(segment: &Segment, position: u64, end: u64) -> bool {
    let len = (end - position).min(SEARCH_LIMIT) as usize;
    let mut buf = vec![0u8; len];
    let n = segment.read_at(position, &mut buf).unwrap_or(0);
    let buf = &buf[..n];
    (1..buf.len()).any(|at| match batch::peek_len(&buf[at..]) {
        Ok(need) => at + need <= buf.len() && batch::decode(&buf[at..]).is_ok(),
        Err(_) => false,
    })
}
