//! The live tail: what arrived in a topic since the last poll, found by
//! browsing, so the tail joins no group and holds nothing back.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use mq::driver::{BrowseFrom, BrowseSpec, BrowsedMessage};
use serde::{Deserialize, Serialize};

use super::api::{backend, partitions_of};
use super::error::{ApiError, ApiResult};
use super::views::MessageView;
use super::Shared;

/// Most messages one poll returns per partition.
const TAIL_BATCH: usize = 200;

#[derive(Deserialize)]
pub(crate) struct TailQuery {
    /// What the previous poll returned; absent on the first.
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct TailResult {
    messages: Vec<MessageView>,
    /// Pass back on the next poll.
    cursor: String,
}

/// `GET /api/backends/{b}/topics/{topic}/tail`: what arrived since the
/// cursor, by browsing; it joins no group, so it holds nothing back. The
/// first poll returns no message, only where "now" is.
pub(crate) async fn tail(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> ApiResult<TailResult> {
    let Path((index, topic)) = path?;
    let Query(query) = query?;
    let backend = backend(&state, index)?;
    let cursor = parse_cursor(query.cursor.as_deref().unwrap_or(""))?;
    let admin = backend.client.admin();
    let mut messages = Vec::new();
    let mut next = BTreeMap::new();
    for partition in 0..partitions_of(backend, &topic).await? {
        let mark = cursor.get(&partition);
        let from = match mark {
            None => BrowseFrom::Last(1),
            Some(Mark::Offset(o)) => BrowseFrom::Offset(*o),
            Some(Mark::Start | Mark::After(_)) => BrowseFrom::Last(TAIL_BATCH as u64),
            Some(Mark::Time(ms)) => {
                BrowseFrom::Time(std::time::UNIX_EPOCH + Duration::from_millis(*ms))
            }
        };
        let read = admin
            .browse(&topic, BrowseSpec::new(partition, from, TAIL_BATCH))
            .await?;
        let fresh = match mark {
            None => &read[..0],
            // Past the last one shown; all of them when it has scrolled
            // out of the batch (more arrived than one poll shows).
            Some(Mark::After(id)) => {
                let shown = read
                    .iter()
                    .rposition(|m| m.message.id().is_some_and(|i| i.to_string() == *id));
                &read[shown.map_or(0, |at| at + 1)..]
            }
            Some(_) => &read[..],
        };
        messages.extend(
            fresh
                .iter()
                .map(|m| MessageView::new(m.partition, m.offset, &m.message)),
        );
        let moved = read.last().map(mark_after);
        next.insert(partition, moved.or(mark.cloned()).unwrap_or(Mark::Start));
    }
    Ok(Json(TailResult {
        messages,
        cursor: format_cursor(&next),
    }))
}

/// Where a tail goes on in one partition, in the cursor as
/// `partition=mark`, marks joined by commas.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mark {
    /// Empty when first seen: everything in it is new (`s`).
    Start,
    /// The next offset to show (`o:N`).
    Offset(u64),
    /// On a backend without offsets: past this message id (`i:ID`).
    After(String),
    /// Without offsets or ids: published from this millisecond on (`t:MS`).
    Time(u64),
}

/// The mark past `last`: by offset where the backend has them, else by id,
/// else by time.
fn mark_after(last: &BrowsedMessage) -> Mark {
    if let Some(offset) = last.offset {
        return Mark::Offset(offset + 1);
    }
    if let Some(id) = last.message.id() {
        return Mark::After(id.to_string());
    }
    let at = last
        .message
        .published_at()
        .unwrap_or_else(std::time::SystemTime::now);
    Mark::Time(mq::driver::clock::epoch_millis(at) + 1)
}

fn parse_cursor(text: &str) -> Result<BTreeMap<u32, Mark>, ApiError> {
    let bad = || ApiError::bad_request(format!("tail cursor {text:?} is malformed"));
    let mut marks = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (partition, mark) = part.split_once('=').ok_or_else(bad)?;
        let partition = partition.parse().map_err(|_| bad())?;
        let mark = match mark.split_once(':') {
            None if mark == "s" => Mark::Start,
            Some(("o", n)) => Mark::Offset(n.parse().map_err(|_| bad())?),
            Some(("i", id)) if !id.is_empty() => Mark::After(id.to_owned()),
            Some(("t", ms)) => Mark::Time(ms.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        marks.insert(partition, mark);
    }
    Ok(marks)
}

fn format_cursor(marks: &BTreeMap<u32, Mark>) -> String {
    marks
        .iter()
        .map(|(p, mark)| match mark {
            Mark::Start => format!("{p}=s"),
            Mark::Offset(o) => format!("{p}=o:{o}"),
            Mark::After(id) => format!("{p}=i:{id}"),
            Mark::Time(ms) => format!("{p}=t:{ms}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let marks = BTreeMap::from([
            (0, Mark::Offset(12)),
            (1, Mark::Start),
            (2, Mark::After("01a2".into())),
            (3, Mark::Time(1_700_000_000_000)),
        ]);
        let text = format_cursor(&marks);
        assert_eq!(text, "0=o:12,1=s,2=i:01a2,3=t:1700000000000");
        assert_eq!(parse_cursor(&text).expect("parse"), marks);
        assert!(parse_cursor("0=x").is_err());
        assert!(parse_cursor("0=i:").is_err());
        assert!(parse_cursor("0=o:x").is_err());
        assert!(parse_cursor("zero").is_err());
        assert!(parse_cursor("").expect("empty").is_empty());
    }
}
