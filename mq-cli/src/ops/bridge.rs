//! `mq bridge`: copies a topic from one backend to another while both run
//! (the broker-migration use case).
//!
//! The bridge reads the source in a consumer group of its own, so a later
//! run resumes where an earlier one stopped, and acks each batch only after
//! the target confirmed it: nothing is lost, and a message copied twice
//! (a run interrupted between publish and ack) keeps its id, which the
//! target dedups by where it can (an idempotency key) and consumers
//! otherwise (the dedup middleware keys on the id).

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde::Serialize;

use super::consume::forget_group;
use super::output::{print_rows, Format};
use mq::{Message, MessageId, StartFrom, Support};

/// `mq bridge --from URL --to URL --topic T`.
#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// The backend to copy from.
    #[arg(long)]
    from: String,
    /// The backend to copy to.
    #[arg(long)]
    to: String,
    /// The topic to copy.
    #[arg(long)]
    topic: String,
    /// The topic's name on the target (default: the same name).
    #[arg(long)]
    to_topic: Option<String>,
    /// The bridge's consumer group on the source; a later run with the same
    /// group resumes where this one stopped.
    #[arg(long, default_value = "mq-bridge")]
    group: String,
    /// Keeps copying new messages until interrupted; otherwise stops once
    /// the source has had nothing new for `--idle`.
    #[arg(long)]
    follow: bool,
    /// How long without a message ends a run that does not follow.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Stops after copying this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Messages per publish on the target.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// At the end, reads the target topic and checks that every copied id
    /// is there.
    #[arg(long)]
    verify: bool,
}

/// What a run did.
#[derive(Serialize, Default)]
struct Report {
    from_topic: String,
    to_topic: String,
    copied: u64,
    /// Copies the target recognised as already there (same idempotency key).
    duplicates: u64,
    /// With `--verify`: copied ids found on the target, and those missing.
    verified: Option<u64>,
    missing: Option<u64>,
}

/// Runs `mq bridge`.
pub async fn run(format: Format, args: BridgeArgs) -> mq::Result<()> {
    let from = mq::connect(args.from.as_str()).await?;
    let to = match mq::connect(args.to.as_str()).await {
        Ok(to) => to,
        Err(error) => {
            let _ = from.close().await;
            return Err(error);
        }
    };
    let result = bridge(&from, &to, &args).await;
    let closed = from.close().await.and(to.close().await);
    let report = result?;
    closed?;
    print_rows(
        format,
        &["from", "to", "copied", "duplicates", "verified", "missing"],
        std::slice::from_ref(&report),
        |r| {
            let shown = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            vec![
                r.from_topic.clone(),
                r.to_topic.clone(),
                r.copied.to_string(),
                r.duplicates.to_string(),
                shown(r.verified),
                shown(r.missing),
            ]
        },
    );
    match report.missing {
        Some(missing) if missing > 0 => Err(mq::Error::Rejected(format!(
            "{missing} copied messages are missing on the target"
        ))),
        _ => Ok(()),
    }
}

async fn bridge(from: &mq::Client, to: &mq::Client, args: &BridgeArgs) -> mq::Result<Report> {
    let to_topic = args.to_topic.clone().unwrap_or_else(|| args.topic.clone());
    mq::message::validate_topic(&to_topic)?;
    // The same partition count keeps the copy's load spread like the
    // original's, where the source can say what it is.
    let partitions = from
        .admin()
        .topics()
        .await
        .ok()
        .and_then(|topics| topics.into_iter().find(|t| t.name == args.topic))
        .map_or(1, |t| t.partitions);
    to.admin()
        .ensure_topic(&to_topic, mq::TopicSpec::new(partitions))
        .await?;
    // Queue brokers keep messages only for groups that exist: the checking
    // reader must exist before the copies arrive.
    let verifier = format!("mq-bridge-verify-{}", uuid::Uuid::now_v7().simple());
    if args.verify {
        to.admin()
            .ensure_group(&to_topic, &verifier, StartFrom::Earliest)
            .await?;
    }
    let mut report = Report {
        from_topic: args.topic.clone(),
        to_topic: to_topic.clone(),
        ..Report::default()
    };
    let copied = copy(from, to, args, &to_topic, &mut report).await;
    if args.verify {
        let found = match &copied {
            Ok(ids) => Some(find_on_target(to, &to_topic, &verifier, ids, args.idle).await),
            Err(_) => None,
        };
        forget_group(to, &to_topic, &verifier).await;
        if let (Some(found), Ok(ids)) = (found, &copied) {
            let found = found?;
            report.verified = Some(found);
            report.missing = Some(ids.len() as u64 - found);
        }
    }
    copied.map(|_| report)
}

/// Copies until idle (or `--max`, or interrupted when following); returns
/// the ids copied.
async fn copy(
    from: &mq::Client,
    to: &mq::Client,
    args: &BridgeArgs,
    to_topic: &str,
    report: &mut Report,
) -> mq::Result<HashSet<MessageId>> {
    let dedup_on_target = to.capabilities().idempotent_publish == Support::Native;
    let mut stream = from
        .consumer(&args.topic, &args.group)
        .start_from(StartFrom::Earliest)
        .prefetch(args.batch as usize * 2)
        .subscribe()
        .await?;
    let progress = indicatif::ProgressBar::new_spinner().with_message("copying");
    let mut ids = HashSet::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let result = loop {
        let room = args
            .max
            .map_or(args.batch, |max| (max - report.copied).min(args.batch));
        if room == 0 {
            break Ok(());
        }
        let first = tokio::select! {
            _ = &mut interrupted => break Ok(()),
            next = next_within(&mut stream, (!args.follow).then_some(args.idle)) => next,
        };
        let Some(first) = first else { break Ok(()) };
        let mut batch = vec![first];
        // Whatever else is ready now joins the batch; nothing waits for it.
        while (batch.len() as u64) < room {
            match next_within(&mut stream, Some(Duration::from_millis(5))).await {
                Some(next) => batch.push(next),
                None => break,
            }
        }
        let deliveries = match batch.into_iter().collect::<mq::Result<Vec<_>>>() {
            Ok(deliveries) => deliveries,
            Err(error) => break Err(error),
        };
        let copies: Vec<Message> = deliveries
            .iter()
            .map(|d| copy_of(d.message(), to_topic, dedup_on_target))
            .collect();
        let receipts = match to.producer().relay(copies).await {
            Ok(receipts) => receipts,
            Err(error) => break Err(error),
        };
        for receipt in &receipts {
            ids.insert(receipt.id);
            report.duplicates += u64::from(receipt.duplicate);
        }
        report.copied += receipts.len() as u64;
        // Acked only once the target has them: an interrupted run copies
        // the unacked rest again, ids unchanged.
        for delivery in deliveries {
            if let Err(error) = delivery.ack().await {
                warn_copied_again(&error);
            }
        }
        progress.set_message(format!("copied {}", report.copied));
        progress.tick();
    };
    progress.finish_and_clear();
    let closed = stream.close().await;
    result.and(closed).map(|()| ids)
}

/// A failed ack only means the message comes back and is copied again.
fn warn_copied_again(error: &mq::Error) {
    eprintln!(
        "mq bridge: an ack on the source failed ({error}); that message will be copied again"
    );
}

/// The next delivery, waiting at most `limit` (forever without one).
async fn next_within(
    stream: &mut mq::Subscription,
    limit: Option<Duration>,
) -> Option<mq::Result<mq::Delivery>> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, stream.next())
            .await
            .ok()
            .flatten(),
        None => stream.next().await,
    }
}

/// The target's copy of `message`: same id, key, headers and payload.
/// Where the target dedups by idempotency key, the id serves as one when
/// the message has none, so copying twice stores it once.
fn copy_of(message: &Message, to_topic: &str, dedup_on_target: bool) -> Message {
    let copy = message.clone().with_topic(to_topic);
    match (dedup_on_target, message.idempotency_key(), message.id()) {
        (true, None, Some(id)) => copy.with_idempotency_key(format!("mq-bridge:{id}")),
        _ => copy,
    }
}

/// How many of `ids` a reader of `topic` on the target finds, reading
/// until `idle` passes without a message.
async fn find_on_target(
    to: &mq::Client,
    topic: &str,
    group: &str,
    ids: &HashSet<MessageId>,
    idle: Duration,
) -> mq::Result<u64> {
    let mut stream = to
        .consumer(topic, group)
        .start_from(StartFrom::Earliest)
        .subscribe()
        .await?;
    let mut found = HashSet::new();
    while found.len() < ids.len() {
        let Some(delivery) = next_within(&mut stream, Some(idle)).await else {
            break;
        };
        let delivery = delivery?;
        if let Some(id) = delivery.message().id().filter(|id| ids.contains(id)) {
            found.insert(id);
        }
        delivery.ack().await?;
    }
    stream.close().await?;
    Ok(found.len() as u64)
}
