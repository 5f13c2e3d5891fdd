//! Dead letters: list, inspect, redrive (one, selected, all) and purge,
//! through [`mq::client::Admin`]'s dead-letter operations, so redrive
//! publishes before it acks and honours the replay limit as `mq dlq` does.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use mq::client::RedriveOptions;
use mq::MessageId;
use serde::{Deserialize, Serialize};

use super::api::backend;
use super::error::{ApiError, ApiResult};
use super::views::LetterView;
use super::{Backend, Shared};

/// Letters one call looks at, the most [`mq::client::Admin`] holds at once.
const MAX_LETTERS: usize = 10_000;
/// Letters shown when the page does not say.
const DEFAULT_SHOWN: usize = 100;

#[derive(Serialize)]
pub(crate) struct DeadLetterTopic {
    topic: String,
    letters: u64,
}

/// `GET /api/backends/{b}/dead-letters`: the dead-letter topics and how
/// many letters each holds.
pub(crate) async fn list(
    State(state): State<Shared>,
    path: Result<Path<usize>, PathRejection>,
) -> ApiResult<Vec<DeadLetterTopic>> {
    let Path(index) = path?;
    let client = &backend(&state, index)?.client;
    let names = &client.capabilities().names;
    // Letters are what the retaining group has not acked; Admin::lag
    // refuses mq's own group names, so the driver is asked directly.
    let retaining = mq::client::dead_letter_group(names);
    let mut rows = Vec::new();
    for topic in client.admin().topics().await? {
        if names.is_dead_letter_topic(&topic.name) {
            let lag = client.driver().lag(&topic.name, &retaining).await?;
            rows.push(DeadLetterTopic {
                letters: lag.iter().map(|p| p.lag).sum(),
                topic: topic.name,
            });
        }
    }
    Ok(Json(rows))
}

/// `dlq` if it is a dead-letter topic of this backend. Anything else is
/// refused: reading it as dead letters would make mq's retaining group on
/// an ordinary topic, which would then keep every message forever.
fn dead_letter_topic(backend: &Backend, dlq: &str) -> Result<(), ApiError> {
    if backend
        .client
        .capabilities()
        .names
        .is_dead_letter_topic(dlq)
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{dlq:?} is not a dead-letter topic (see the dead-letter list for them)"
        )))
    }
}

#[derive(Deserialize)]
pub(crate) struct LettersQuery {
    max: Option<usize>,
}

/// `GET /api/backends/{b}/dead-letters/{dlq}`: the pending letters, left
/// where they are, with their headers and why they are there.
pub(crate) async fn letters(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    query: Result<Query<LettersQuery>, QueryRejection>,
) -> ApiResult<Vec<LetterView>> {
    let Path((index, dlq)) = path?;
    let Query(query) = query?;
    let backend = backend(&state, index)?;
    dead_letter_topic(backend, &dlq)?;
    let max = query.max.unwrap_or(DEFAULT_SHOWN).clamp(1, MAX_LETTERS);
    let _one_at_a_time = backend.dead_letter_lock.lock().await;
    let letters = backend.client.admin().dead_letters(&dlq, max).await?;
    Ok(Json(letters.iter().map(LetterView::new).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedriveBody {
    /// Every letter (that the replay limit allows).
    #[serde(default)]
    all: bool,
    /// Or these letters, by message id.
    #[serde(default)]
    ids: Vec<String>,
    max_replays: Option<u32>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize, Default)]
pub(crate) struct RedriveResult {
    redriven: u64,
    /// Left: already redriven `max_replays` times.
    refused: u64,
    /// Left: not selected (a redrive of all counts letters of no origin).
    skipped: u64,
    /// What happened to each selected letter.
    letters: Vec<LetterOutcome>,
}

#[derive(Serialize)]
struct LetterOutcome {
    id: String,
    outcome: &'static str,
}

/// `POST /api/backends/{b}/dead-letters/{dlq}/redrive`: sends letters back
/// to the topics they came from (an action).
pub(crate) async fn redrive(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    body: Result<Json<RedriveBody>, JsonRejection>,
) -> ApiResult<RedriveResult> {
    let Path((index, dlq)) = path?;
    let Json(body) = body?;
    let backend = backend(&state, index)?;
    dead_letter_topic(backend, &dlq)?;
    // Exactly one of the two: everything, or a non-empty list.
    if body.all != body.ids.is_empty() {
        return Err(ApiError::bad_request(
            "say which letters: {\"all\": true} or {\"ids\": [...]}",
        ));
    }
    let options = RedriveOptions::default()
        .with_max(MAX_LETTERS)
        .with_dry_run(body.dry_run)
        .with_max_replays(body.max_replays.unwrap_or(3));
    let admin = backend.client.admin();
    let _one_at_a_time = backend.dead_letter_lock.lock().await;
    if body.all {
        let report = admin.redrive(&dlq, options).await?;
        return Ok(Json(RedriveResult {
            redriven: report.redriven,
            refused: report.refused,
            skipped: report.skipped,
            letters: Vec::new(),
        }));
    }
    let pending = admin.dead_letters(&dlq, MAX_LETTERS).await?;
    let is_pending = |id: &MessageId| pending.iter().any(|l| l.message.id() == Some(*id));
    let mut asked: Vec<(String, Option<MessageId>)> = Vec::new();
    for text in body.ids {
        let id = MessageId::parse(&text).ok().filter(|id| is_pending(id));
        asked.push((text, id));
    }
    let ids: Vec<MessageId> = asked.iter().filter_map(|(_, id)| *id).collect();
    let report = if ids.is_empty() {
        mq::RedriveReport::default()
    } else {
        admin.redrive(&dlq, options.with_ids(ids)).await?
    };
    // What is still pending afterwards was refused (its replay limit) or
    // failed again; a dry run moves nothing.
    let left = if body.dry_run {
        Vec::new()
    } else {
        admin.dead_letters(&dlq, MAX_LETTERS).await?
    };
    let still_pending = |id: &MessageId| left.iter().any(|l| l.message.id() == Some(*id));
    let letters = asked
        .into_iter()
        .map(|(text, id)| LetterOutcome {
            id: text,
            outcome: match id {
                None => "not found",
                Some(_) if body.dry_run => "would be redriven",
                Some(id) if still_pending(&id) => "left: replay limit reached",
                Some(_) => "redriven",
            },
        })
        .collect();
    Ok(Json(RedriveResult {
        redriven: report.redriven,
        refused: report.refused,
        skipped: pending.len() as u64 - report.redriven.min(pending.len() as u64),
        letters,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeBody {}

#[derive(Serialize)]
pub(crate) struct Purged {
    purged: u64,
}

/// `POST /api/backends/{b}/dead-letters/{dlq}/purge`: removes every
/// pending letter (an action).
pub(crate) async fn purge(
    State(state): State<Shared>,
    path: Result<Path<(usize, String)>, PathRejection>,
    body: Result<Json<PurgeBody>, JsonRejection>,
) -> ApiResult<Purged> {
    let Path((index, dlq)) = path?;
    let Json(PurgeBody {}) = body?;
    let backend = backend(&state, index)?;
    dead_letter_topic(backend, &dlq)?;
    let _one_at_a_time = backend.dead_letter_lock.lock().await;
    let purged = backend.client.admin().purge_dead_letters(&dlq).await?;
    Ok(Json(Purged { purged }))
}
