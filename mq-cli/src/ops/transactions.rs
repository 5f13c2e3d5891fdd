//! `mq transactions`: producer transactions the broker knows of, and
//! aborting a hung one (its producer died mid-transaction, and consumers
//! of committed messages wait behind it). Kafka only; other backends
//! answer `Unsupported` naming themselves.

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use serde::Serialize;

use super::output::{print_rows, Format};

/// `mq transactions ...`.
#[derive(Subcommand, Debug)]
pub enum TransactionsCommand {
    /// Lists transactional ids with their state, producer, start, timeout
    /// and the partitions an open transaction wrote to.
    List {
        /// Only open transactions (those consumers of committed messages
        /// wait behind).
        #[arg(long)]
        open: bool,
    },
    /// Aborts the open transaction of a transactional id. This fences the
    /// id: a producer still alive under it fails its next transactional
    /// call, so abort only transactions whose producer is gone or stuck.
    Abort {
        /// The transactional id, as `mq transactions list` shows it.
        id: String,
    },
}

#[derive(Serialize)]
struct TransactionRow {
    id: String,
    state: String,
    open: bool,
    producer_id: Option<i64>,
    producer_epoch: Option<i16>,
    /// RFC 3339, while open.
    started: Option<String>,
    /// How long the transaction has been open, in seconds.
    open_for_s: Option<u64>,
    timeout_ms: Option<u64>,
    partitions: Vec<PartitionRow>,
}

#[derive(Serialize)]
struct PartitionRow {
    topic: String,
    partition: u32,
}

pub(super) async fn run(
    client: &mq::Client,
    format: Format,
    command: TransactionsCommand,
) -> mq::Result<()> {
    let admin = client.admin();
    match command {
        TransactionsCommand::List { open } => {
            let now = SystemTime::now();
            let rows: Vec<TransactionRow> = admin
                .transactions()
                .await?
                .into_iter()
                .filter(|t| !open || t.open)
                .map(|t| TransactionRow {
                    started: t
                        .started
                        .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                    open_for_s: t
                        .started
                        .and_then(|at| now.duration_since(at).ok())
                        .map(|d| d.as_secs()),
                    timeout_ms: t
                        .timeout
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionRow {
                            topic: p.topic.to_string(),
                            partition: p.partition,
                        })
                        .collect(),
                    id: t.id,
                    state: t.state,
                    open: t.open,
                    producer_id: t.producer_id,
                    producer_epoch: t.producer_epoch,
                })
                .collect();
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            print_rows(
                format,
                &[
                    "id",
                    "state",
                    "producer/epoch",
                    "started",
                    "open for",
                    "timeout",
                    "partitions",
                ],
                &rows,
                |r| {
                    let partitions: Vec<String> = r
                        .partitions
                        .iter()
                        .map(|p| format!("{}:{}", p.topic, p.partition))
                        .collect();
                    vec![
                        r.id.clone(),
                        r.state.clone(),
                        dash(
                            r.producer_id
                                .map(|id| format!("{id}/{}", r.producer_epoch.unwrap_or_default())),
                        ),
                        dash(r.started.clone()),
                        dash(r.open_for_s.map(|s| human(Duration::from_secs(s)))),
                        dash(r.timeout_ms.map(|ms| human(Duration::from_millis(ms)))),
                        if partitions.is_empty() {
                            "-".to_owned()
                        } else {
                            partitions.join(",")
                        },
                    ]
                },
            );
        }
        TransactionsCommand::Abort { id } => {
            admin.abort_transaction(&id).await?;
            eprintln!(
                "aborted the open transaction of {id}: its messages are never delivered to \
                 consumers of committed messages, which now read past it; a producer still \
                 running as {id} is fenced"
            );
        }
    }
    Ok(())
}

/// A duration for people: `1m 30s`.
fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
