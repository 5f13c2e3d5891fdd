//! `mq produce`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::output::{print_rows, Format};

/// `mq produce TOPIC [PAYLOAD]`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// The payload; without it, one message per line of `--file` or stdin.
    payload: Option<String>,
    /// Reads one payload per line from this file (`-` for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Ordering key of every message.
    #[arg(long)]
    key: Option<String>,
    /// A header `name=value`; repeat for more.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Delivers no earlier than this after sending (`250ms`, `30s`, `2h`).
    #[arg(long, value_parser = parse_delay)]
    delay: Option<Duration>,
    /// Idempotency key (one message only): a repeat is a duplicate receipt.
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    Ok((name.to_owned(), value.to_owned()))
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    mq::config::parse_duration(text)
}

#[derive(Serialize)]
struct SentRow {
    id: String,
    topic: String,
    partition: u32,
    offset: Option<u64>,
    duplicate: bool,
}

pub(super) async fn produce(
    client: &mq::Client,
    format: Format,
    args: ProduceArgs,
) -> mq::Result<()> {
    let payloads = payloads(&args)?;
    if args.idempotency_key.is_some() && payloads.len() != 1 {
        return Err(mq::Error::invalid(
            "idempotency key",
            args.idempotency_key.clone().unwrap_or_default(),
            "applies to one message; give one payload",
        ));
    }
    let messages: Vec<mq::Message> = payloads
        .into_iter()
        .map(|payload| {
            let mut message = mq::Message::new(args.topic.as_str(), payload);
            if let Some(key) = &args.key {
                message = message.with_key(key.as_str());
            }
            for (name, value) in &args.headers {
                message = message.with_header(name.as_str(), value.as_str());
            }
            if let Some(delay) = args.delay {
                message = message.with_delay(delay);
            }
            if let Some(key) = &args.idempotency_key {
                message = message.with_idempotency_key(key.as_str());
            }
            message
        })
        .collect();
    let receipts = client.producer().send_batch(messages).await?;
    let rows: Vec<SentRow> = receipts
        .into_iter()
        .map(|r| SentRow {
            id: r.id.to_string(),
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            duplicate: r.duplicate,
        })
        .collect();
    print_rows(
        format,
        &["id", "topic", "partition", "offset"],
        &rows,
        |r| {
            vec![
                r.id.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                r.offset.map_or_else(|| "-".to_owned(), |o| o.to_string()),
            ]
        },
    );
    Ok(())
}

fn payloads(args: &ProduceArgs) -> mq::Result<Vec<String>> {
    if let Some(payload) = &args.payload {
        if args.file.is_some() {
            return Err(mq::Error::Config(
                "give a payload or --file, not both".into(),
            ));
        }
        return Ok(vec![payload.clone()]);
    }
    let lines: Vec<String> = match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path)
                .map_err(|e| mq::Error::Config(format!("cannot read {}: {e}", path.display())))?;
            read_lines(std::io::BufReader::new(file))?
        }
        _ => read_lines(std::io::stdin().lock())?,
    };
    if lines.is_empty() {
        return Err(mq::Error::Config(
            "nothing to send: the input is empty".into(),
        ));
    }
    Ok(lines)
}

fn read_lines(reader: impl BufRead) -> mq::Result<Vec<String>> {
    reader
        .lines()
        .filter(|line| line.as_ref().map_or(true, |l| !l.is_empty()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| mq::Error::Config(format!("cannot read the input: {e}")))
}
