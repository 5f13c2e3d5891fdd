//! `mq consume` and `mq tail`: messages out as JSON lines.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Serialize;

use super::output::json_line;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum From {
    Earliest,
    Latest,
}

/// `mq consume TOPIC`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Consume (and ack) as this group; without it, a throwaway reader
    /// that acks nothing of yours.
    #[arg(long)]
    group: Option<String>,
    /// Where a new group starts.
    #[arg(long, value_enum, default_value_t = From::Earliest)]
    from: From,
    /// Stops after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Keeps waiting for messages; otherwise stops after a second without any.
    #[arg(long)]
    follow: bool,
}

/// `mq tail TOPIC`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// The topic.
    topic: String,
    /// Stops after this many messages.
    #[arg(long)]
    max: Option<u64>,
}

/// One message as a JSON line.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: u32,
    offset: Option<u64>,
    id: Option<String>,
    key: Option<&'a str>,
    headers: BTreeMap<&'a str, &'a str>,
    /// The payload as text (invalid UTF-8 replaced; see `payload_utf8`).
    payload: String,
    payload_utf8: bool,
    attempt: u32,
}

fn line(delivery: &mq::Delivery) -> String {
    let message = delivery.message();
    let text = std::str::from_utf8(message.payload());
    json_line(&Line {
        topic: message.topic(),
        partition: delivery.partition(),
        offset: delivery.offset(),
        id: message.id().map(|id| id.to_string()),
        key: message.key(),
        headers: message.headers().iter().collect(),
        payload: String::from_utf8_lossy(message.payload()).into_owned(),
        payload_utf8: text.is_ok(),
        attempt: delivery.attempt(),
    })
}

pub(super) async fn consume(client: &mq::Client, args: ConsumeArgs) -> mq::Result<()> {
    let throwaway = args.group.is_none();
    let group = args
        .group
        .unwrap_or_else(|| format!("mq-cli-{}", uuid::Uuid::now_v7().simple()));
    let start = match args.from {
        From::Earliest => mq::StartFrom::Earliest,
        From::Latest => mq::StartFrom::Latest,
    };
    let idle = (!args.follow).then_some(Duration::from_secs(1));
    read(client, &args.topic, &group, start, args.max, idle).await?;
    if throwaway {
        forget_group(client, &args.topic, &group).await;
    }
    Ok(())
}

pub(super) async fn tail(client: &mq::Client, args: TailArgs) -> mq::Result<()> {
    let group = format!("mq-tail-{}", uuid::Uuid::now_v7().simple());
    let result = read(
        client,
        &args.topic,
        &group,
        mq::StartFrom::Latest,
        args.max,
        None,
    )
    .await;
    forget_group(client, &args.topic, &group).await;
    result
}

/// A throwaway reader's group is moved to the end so it holds nothing
/// back; where groups can be removed, the backend drops it with its queue.
pub(super) async fn forget_group(client: &mq::Client, topic: &str, group: &str) {
    let _ = client
        .admin()
        .reset_group(topic, group, mq::driver::ResetTo::Latest)
        .await;
}

async fn read(
    client: &mq::Client,
    topic: &str,
    group: &str,
    start: mq::StartFrom,
    max: Option<u64>,
    idle: Option<Duration>,
) -> mq::Result<()> {
    let mut stream = client
        .consumer(topic, group)
        .start_from(start)
        .subscribe()
        .await?;
    let mut seen = 0u64;
    while max.is_none_or(|max| seen < max) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => stream.next().await,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        println!("{}", line(&delivery));
        delivery.ack().await?;
        seen += 1;
    }
    stream.close().await
}
