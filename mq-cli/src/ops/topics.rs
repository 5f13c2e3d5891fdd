//! `mq topics`, `mq groups`, `mq lag`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{print_rows, Format};

/// `mq topics`.
#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(subcommand)]
    action: Option<TopicsAction>,
    /// Also list mq's internal topics (retry, delay, dead-letter bookkeeping).
    #[arg(long)]
    internal: bool,
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// Lists topics with their partition counts (the default).
    List,
    /// Creates a topic if missing.
    Create {
        /// The topic.
        topic: String,
        /// Partitions (queues, shards) of the new topic.
        #[arg(long, default_value_t = 8)]
        partitions: u32,
    },
    /// Deletes a topic, its messages and its groups' retry topics.
    Delete {
        /// The topic.
        topic: String,
    },
    /// Grows a topic to more partitions, so more members drain its backlog
    /// at once. Keys that move are handled out of order until the old
    /// partitions have drained.
    Partitions {
        /// The topic.
        topic: String,
        /// The new partition count (more than it has).
        partitions: u32,
    },
}

#[derive(Serialize)]
struct TopicRow {
    topic: String,
    partitions: u32,
}

pub(super) async fn topics(
    client: &mq::Client,
    format: Format,
    args: TopicsArgs,
) -> mq::Result<()> {
    let admin = client.admin();
    match args.action.unwrap_or(TopicsAction::List) {
        TopicsAction::List => {
            let rows: Vec<TopicRow> = admin
                .topics()
                .await?
                .into_iter()
                .filter(|t| args.internal || !t.is_internal())
                .map(|t| TopicRow {
                    topic: t.name,
                    partitions: t.partitions,
                })
                .collect();
            print_rows(format, &["topic", "partitions"], &rows, |r| {
                vec![r.topic.clone(), r.partitions.to_string()]
            });
        }
        TopicsAction::Create { topic, partitions } => {
            admin
                .ensure_topic(&topic, mq::TopicSpec::new(partitions))
                .await?;
            eprintln!("topic {topic} exists");
        }
        TopicsAction::Delete { topic } => {
            admin.delete_topic(&topic).await?;
            eprintln!("topic {topic} deleted");
        }
        TopicsAction::Partitions { topic, partitions } => {
            admin.grow_partitions(&topic, partitions).await?;
            print_rows(
                format,
                &["topic", "partitions"],
                &[TopicRow {
                    topic: topic.clone(),
                    partitions,
                }],
                |r| vec![r.topic.clone(), r.partitions.to_string()],
            );
            eprintln!(
                "{topic} has {partitions} partitions. Keys now mapped to another partition \
                 send their new messages there while their older ones may still wait on \
                 the old one: per-key order holds again once the old partitions' lag is 0 \
                 (watch `mq lag {topic}`; pause ordered producers until then if it matters)."
            );
        }
    }
    Ok(())
}

/// `mq groups TOPIC`.
#[derive(Args, Debug)]
pub struct GroupsArgs {
    /// The topic.
    topic: String,
}

#[derive(Serialize)]
struct GroupRow {
    topic: String,
    group: String,
    lag: u64,
}

pub(super) async fn groups(
    client: &mq::Client,
    format: Format,
    args: GroupsArgs,
) -> mq::Result<()> {
    let admin = client.admin();
    let mut rows = Vec::new();
    for group in admin.groups(&args.topic).await? {
        let lag = admin.total_lag(&args.topic, &group).await?;
        rows.push(GroupRow {
            topic: args.topic.clone(),
            group,
            lag,
        });
    }
    print_rows(format, &["topic", "group", "lag"], &rows, |r| {
        vec![r.topic.clone(), r.group.clone(), r.lag.to_string()]
    });
    Ok(())
}

/// `mq lag TOPIC [GROUP]`.
#[derive(Args, Debug)]
pub struct LagArgs {
    /// The topic.
    topic: String,
    /// The group; every group of the topic when left out.
    group: Option<String>,
    /// Prints again every this many seconds, until interrupted.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
}

#[derive(Serialize)]
struct LagRow {
    group: String,
    partition: u32,
    lag: u64,
    end: Option<u64>,
    committed: Option<u64>,
}

pub(super) async fn lag(client: &mq::Client, format: Format, args: LagArgs) -> mq::Result<()> {
    let admin = client.admin();
    loop {
        let groups = match &args.group {
            Some(group) => vec![group.clone()],
            None => admin.groups(&args.topic).await?,
        };
        let mut rows = Vec::new();
        for group in groups {
            for partition in admin.lag(&args.topic, &group).await? {
                rows.push(LagRow {
                    group: group.clone(),
                    partition: partition.partition,
                    lag: partition.lag,
                    end: partition.end_offset,
                    committed: partition.committed_offset,
                });
            }
        }
        let dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        print_rows(
            format,
            &["group", "partition", "lag", "end", "committed"],
            &rows,
            |r| {
                vec![
                    r.group.clone(),
                    r.partition.to_string(),
                    r.lag.to_string(),
                    dash(r.end),
                    dash(r.committed),
                ]
            },
        );
        let Some(every) = args.watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
        if format == Format::Table {
            println!();
        }
    }
}
