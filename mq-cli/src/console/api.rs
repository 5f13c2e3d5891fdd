//! The JSON handlers for topics, groups, browsing and producing. Tailing
//! and dead letters have their own modules.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use mq::client::MAX_BROWSE;
use mq::driver::{BrowseFrom, BrowseSpec, Support};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::views::{matches, MessageView};
use super::{Backend, Shared};

/// Messages a browse reads when the page does not say.
const DEFAULT_WINDOW: usize = 200;

/// Backend `index` of the console.
pub(crate) fn backend(state: &Shared, index: usize) -> Result<&Backend, ApiError> {
    state
        .backends
        .get(index)
        .ok_or_else(|| ApiError::not_found(format!("no backend {index}")))
}

#[derive(Serialize)]
pub(crate) struct Info {
    actions: bool,
    max_browse: usize,
    backends: Vec<BackendInfo>,
}

#[derive(Serialize)]
struct BackendInfo {
    index: usize,
    label: String,
    backend: &'static str,
    lists_groups: bool,
}

/// `GET /api/info`: the backends and whether actions are on.
pub(crate) async fn info(State(state): State<Shared>) -> Json<Info> {
    let backends = state
        .backends
        .iter()
        .enumerate()
        .map(|(index, b)| BackendInfo {
            index,
            label: b.label.clone(),
            backend: b.client.backend(),
            lists_groups: b.client.capabilities().admin.list_groups != Support::Unsupported,
        })
        .collect();
    Json(Info {
        actions: state.guard.actions_enabled(),
        max_browse: MAX_BROWSE,
        backends,
    })
}

#[derive(Deserialize)]
pub(crate) struct TopicsQuery {
    #[serde(default)]
    internal: bool,
}

#[derive(Serialize)]
pub(crate) struct TopicRow {
    name: String,
    partitions: u32,
    internal: bool,
    dead_letter: bool,
    groups: Vec<GroupLag>,
    /// Backlog summed over the groups.
    lag: u64,
    /// Why groups or lag are missing, when they are.
    error: Option<String>,
}

#[derive(Serialize)]
struct GroupLag {
    group: String,
    lag: u64,
}

/// `GET /api/backends/{b}/topics`: topics with partitions, groups and lag.
/// One topic failing does not hide the others: its row says why.
pub(crate) async fn topics(
    State(state): State<Shared>,
    path: Result<Path<usize>, PathRejection>,
    query: Result<Query<TopicsQuery>, QueryRejection>,
) -> ApiResult<Vec<TopicRow>> {
    let Path(index) = path?;
    let Query(query) = query?;
    let backend = backend(&state, index)?;
    let admin = backend.client.admin();
    let names = &backend.client.capabilities().names;
    let lists_groups = backend.client.capabilities().admin.list_groups != Support::Unsupported;
    let mut rows = Vec::new();
    for topic in admin.topics().await? {
        let internal = topic.is_internal();
        if internal && !query.internal {
            continue;
        }
        let mut row = TopicRow {
            dead_letter: names.is_dead_letter_topic(&topic.name),
            name: topic.name,
            partitions: topic.partitions,
            internal,
            groups: Vec::new(),
            lag: 0,
            error: None,
        };
        if lists_groups && !internal {
            match group_lags(&admin, &row.name).await {
                Ok(groups) => row.groups = groups,
                Err(e) => row.error = Some(e.to_string()),
            }
        }
        row.lag = row.groups.iter().map(|g| g.lag).sum();
        rows.push(row);
    }
    Ok(Json(rows))
}

/// The user groups of `topic` with their backlog; mq's own groups (the
/// dead-letter retaining group) are not shown.
async fn group_lags(admin: &mq::client::Admin, topic: &str) -> mq::Result<Vec<GroupLag>> {
    let mut groups = Vec::new();
    for group in admin.groups(topic).await? {
        if group.starts_with(mq::message::RESERVED_PREFIX) {
            continue;
        }
        let lag = admin.total_lag(topic, &group).await?;
        groups.push(GroupLag { group, lag });
    }
    Ok(groups)
}

#[derive(Serialize)]
pub(crate) struct GroupView {
    group: String,
    lag: u64,
    partitions: Vec<PartitionRow>,
}

#[derive(Serialize)]
struct PartitionRow {
    partition: u32,
    lag: u64,
    end: Option<u64>,
    committed: Option<u64>,
}

/// `GET /api/backends/{b}/topics/{topic}/groups`: lag per partition of
/// every group of the topic.
pub(crate) async fn groups(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
) -> ApiResult<Vec<GroupView>> {
    let Path((index, topic)) = path?;
    let admin = backend(&state, index)?.client.admin();
    let mut views = Vec::new();
    for group in admin.groups(&topic).await? {
        if group.starts_with(mq::message::RESERVED_PREFIX) {
            continue;
        }
        let partitions: Vec<PartitionRow> = admin
            .lag(&topic, &group)
            .await?
            .into_iter()
            .map(|p| PartitionRow {
                partition: p.partition,
                lag: p.lag,
                end: p.end_offset,
                committed: p.committed_offset,
            })
            .collect();
        views.push(GroupView {
            group,
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        });
    }
    Ok(Json(views))
}

#[derive(Deserialize)]
pub(crate) struct BrowseQuery {
    /// One partition; every partition when left out.
    partition: Option<u32>,
    /// `last` (the default), `offset` or `time`.
    from: Option<String>,
    /// The offset for `offset`, an RFC 3339 time for `time`.
    at: Option<String>,
    /// Messages read: the window searched (per partition: its share).
    window: Option<usize>,
    /// Search text; empty or absent shows the whole window.
    q: Option<String>,
    /// Where to search: `key`, `header`, `payload` or `any`.
    field: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct BrowseResult {
    /// Messages read (the window), of which `messages` matched.
    scanned: usize,
    messages: Vec<MessageView>,
}

/// The partition count of `topic`, or 404.
pub(crate) async fn partitions_of(backend: &Backend, topic: &str) -> Result<u32, ApiError> {
    backend
        .client
        .admin()
        .topics()
        .await?
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions)
        .ok_or_else(|| ApiError::not_found(format!("no topic {topic:?} on this backend")))
}

/// `GET /api/backends/{b}/topics/{topic}/messages`: a bounded window of
/// messages, consuming nothing, filtered by the search.
pub(crate) async fn browse(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    query: Result<Query<BrowseQuery>, QueryRejection>,
) -> ApiResult<BrowseResult> {
    let Path((index, topic)) = path?;
    let Query(query) = query?;
    let backend = backend(&state, index)?;
    let window = query.window.unwrap_or(DEFAULT_WINDOW);
    if window == 0 || window > MAX_BROWSE {
        return Err(ApiError::bad_request(format!(
            "window must be between 1 and {MAX_BROWSE} messages"
        )));
    }
    let partitions: Vec<u32> = match query.partition {
        Some(p) => vec![p],
        None => (0..partitions_of(backend, &topic).await?).collect(),
    };
    // The window is shared out so that reading every partition still
    // reads at most `window` messages in all.
    let share = (window / partitions.len().max(1)).max(1);
    let from = browse_from(query.from.as_deref(), query.at.as_deref(), share)?;
    let text = query.q.unwrap_or_default();
    let field = query.field.unwrap_or_else(|| "any".into());
    let admin = backend.client.admin();
    let mut result = BrowseResult {
        scanned: 0,
        messages: Vec::new(),
    };
    for partition in partitions {
        let read = admin
            .browse(&topic, BrowseSpec::new(partition, from, share))
            .await?;
        result.scanned += read.len();
        result.messages.extend(
            read.iter()
                .filter(|m| matches(&m.message, &field, &text))
                .map(|m| MessageView::new(m.partition, m.offset, &m.message)),
        );
    }
    Ok(Json(result))
}

fn browse_from(from: Option<&str>, at: Option<&str>, share: usize) -> Result<BrowseFrom, ApiError> {
    let at = at.map(str::trim).filter(|a| !a.is_empty());
    match (from.unwrap_or("last"), at) {
        ("last", _) => Ok(BrowseFrom::Last(share as u64)),
        ("offset", Some(at)) => at
            .parse()
            .map(BrowseFrom::Offset)
            .map_err(|_| ApiError::bad_request(format!("offset {at:?} is not a number"))),
        ("time", Some(at)) => humantime::parse_rfc3339_weak(at)
            .map(BrowseFrom::Time)
            .map_err(|e| ApiError::bad_request(format!("time {at:?}: {e}"))),
        ("offset" | "time", None) => Err(ApiError::bad_request("`at` is needed with this `from`")),
        (other, _) => Err(ApiError::bad_request(format!(
            "from {other:?}: expected last, offset or time"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProduceBody {
    payload: String,
    key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub(crate) struct Sent {
    id: String,
    topic: String,
    partition: u32,
    offset: Option<u64>,
    duplicate: bool,
}

/// `POST /api/backends/{b}/topics/{topic}/messages`: publishes one test
/// message (an action).
pub(crate) async fn produce(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    body: Result<Json<ProduceBody>, JsonRejection>,
) -> ApiResult<Sent> {
    let Path((index, topic)) = path?;
    let Json(body) = body?;
    let backend = backend(&state, index)?;
    let mut message = mq::Message::new(topic.as_str(), body.payload);
    if let Some(key) = body.key.filter(|k| !k.is_empty()) {
        message = message.with_key(key);
    }
    for (name, value) in body.headers {
        message = message.with_header(name, value);
    }
    let receipt = backend.client.producer().send(message).await?;
    Ok(Json(Sent {
        id: receipt.id.to_string(),
        topic: receipt.topic.to_string(),
        partition: receipt.partition,
        offset: receipt.offset,
        duplicate: receipt.duplicate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browse_starts_where_asked() {
        assert_eq!(browse_from(None, None, 5).ok(), Some(BrowseFrom::Last(5)));
        assert_eq!(
            browse_from(Some("offset"), Some("7"), 5).ok(),
            Some(BrowseFrom::Offset(7))
        );
        assert!(browse_from(Some("offset"), None, 5).is_err());
        assert!(browse_from(Some("time"), Some("yesterday"), 5).is_err());
        assert!(browse_from(Some("sideways"), None, 5).is_err());
    }
}
