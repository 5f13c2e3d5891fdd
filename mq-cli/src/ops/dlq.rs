//! `mq dlq`: dead letters, the same on every backend.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{print_rows, Format};

/// `mq dlq ...`.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Lists dead-letter topics with how many letters each holds.
    List,
    /// Shows the letters of a topic's dead-letter topic and why they are there.
    Inspect {
        /// The topic whose dead letters to show (or its `.dlq` topic).
        topic: String,
        /// Most letters shown.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Sends dead letters back to the topics they came from.
    Redrive(RedriveArgs),
    /// Removes every letter of a topic's dead-letter topic.
    Purge {
        /// The topic whose dead letters to remove (or its `.dlq` topic).
        topic: String,
    },
}

/// `mq dlq redrive TOPIC`.
#[derive(Args, Debug)]
pub struct RedriveArgs {
    /// The topic whose dead letters to redrive (or its `.dlq` topic).
    topic: String,
    /// Shows what would be redriven, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Refuses letters already redriven this many times.
    #[arg(long, default_value_t = 3)]
    max_replays: u32,
    /// Only letters with this key.
    #[arg(long)]
    key: Option<String>,
    /// Only letters whose error contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Only letters with this header, `name=value`.
    #[arg(long)]
    header: Option<String>,
    /// Looks at most this many letters.
    #[arg(long, default_value_t = 10_000)]
    max: usize,
}

/// The dead-letter topic of `topic` (which may already be one).
fn dlq_of(client: &mq::Client, topic: &str) -> String {
    let names = &client.capabilities().names;
    if names.is_dead_letter_topic(topic) {
        topic.to_owned()
    } else {
        names.dead_letter_topic(topic)
    }
}

#[derive(Serialize)]
struct DlqRow {
    topic: String,
    letters: u64,
}

#[derive(Serialize)]
struct LetterRow {
    id: String,
    from_topic: String,
    group: String,
    attempts: String,
    replays: u32,
    error: String,
    key: String,
    payload: String,
}

pub(super) async fn run(
    client: &mq::Client,
    format: Format,
    command: DlqCommand,
) -> mq::Result<()> {
    let admin = client.admin();
    match command {
        DlqCommand::List => {
            let names = client.capabilities().names.clone();
            let retaining = mq::client::dead_letter_group(&names);
            let mut rows = Vec::new();
            for topic in admin.topics().await? {
                if names.is_dead_letter_topic(&topic.name) {
                    let letters = client
                        .driver()
                        .lag(&topic.name, &retaining)
                        .await?
                        .iter()
                        .map(|p| p.lag)
                        .sum();
                    rows.push(DlqRow {
                        topic: topic.name,
                        letters,
                    });
                }
            }
            print_rows(format, &["dead-letter topic", "letters"], &rows, |r| {
                vec![r.topic.clone(), r.letters.to_string()]
            });
        }
        DlqCommand::Inspect { topic, max } => {
            let letters = admin.dead_letters(&dlq_of(client, &topic), max).await?;
            let rows: Vec<LetterRow> = letters
                .iter()
                .map(|letter| {
                    let info = letter.info.as_ref();
                    LetterRow {
                        id: letter
                            .message
                            .id()
                            .map(|i| i.to_string())
                            .unwrap_or_default(),
                        from_topic: info.map(|i| i.topic.clone()).unwrap_or_default(),
                        group: info.and_then(|i| i.group.clone()).unwrap_or_default(),
                        attempts: info
                            .and_then(|i| i.attempts)
                            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                        replays: letter.replays,
                        error: info.map(|i| i.error.clone()).unwrap_or_default(),
                        key: letter.message.key().unwrap_or_default().to_owned(),
                        payload: String::from_utf8_lossy(letter.message.payload()).into_owned(),
                    }
                })
                .collect();
            print_rows(
                format,
                &["id", "from", "group", "attempts", "replays", "key", "error"],
                &rows,
                |r| {
                    vec![
                        r.id.clone(),
                        r.from_topic.clone(),
                        r.group.clone(),
                        r.attempts.clone(),
                        r.replays.to_string(),
                        r.key.clone(),
                        r.error.clone(),
                    ]
                },
            );
        }
        DlqCommand::Redrive(args) => {
            let mut options = mq::RedriveOptions::default()
                .with_dry_run(args.dry_run)
                .with_max_replays(args.max_replays)
                .with_max(args.max);
            if let Some(key) = args.key {
                options = options.with_key(key);
            }
            if let Some(text) = args.error_contains {
                options = options.with_error_containing(text);
            }
            if let Some(header) = args.header {
                let (name, value) = header
                    .split_once('=')
                    .ok_or_else(|| mq::Error::invalid("header", &header, "expected name=value"))?;
                options = options.with_header(name, value);
            }
            let spinner = indicatif::ProgressBar::new_spinner().with_message("redriving");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let report = admin.redrive(&dlq_of(client, &args.topic), options).await;
            spinner.finish_and_clear();
            let report = report?;
            let verb = if args.dry_run {
                "would redrive"
            } else {
                "redriven"
            };
            print_rows(
                format,
                &[verb, "refused (replays)", "skipped"],
                &[&report],
                |r| {
                    vec![
                        r.redriven.to_string(),
                        r.refused.to_string(),
                        r.skipped.to_string(),
                    ]
                },
            );
        }
        DlqCommand::Purge { topic } => {
            let purged = admin.purge_dead_letters(&dlq_of(client, &topic)).await?;
            print_rows(format, &["purged"], &[purged], |n| vec![n.to_string()]);
        }
    }
    Ok(())
}
