//! The admin operations tools are built on: list, browse, reset, delete.
//!
//! Each part runs when the backend declares its operation
//! [`Native`](Support::Native) in [`Capabilities::admin`](mq_core::Capabilities::admin),
//! and is strict then; a part whose operation is unsupported is skipped
//! with a printed line. A queue broker may reset only to the end (it keeps
//! no consumed messages): a declared reset that refuses `Earliest` with
//! [`Error::Unsupported`] is checked to the end only, and said so.

use std::time::Duration;

use mq_core::driver::{AdminSupport, BrowseFrom, BrowseSpec, ResetTo};
use mq_core::{handler_fn, Delivery, Error, HandlerResult, Message, Support, TopicSpec};

use super::SOON;
use crate::{wait_until, Context, Skip};

/// Messages published to the scenario's topic.
const N: u64 = 10;

/// Topics and groups are listed; browsing reads without consuming; a
/// group moves to latest and back to earliest, but not while it runs;
/// deleting a topic takes mq's retry topics of its groups with it.
pub async fn admin_lists_browses_and_resets(ctx: &Context) -> Result<(), Skip> {
    let support = ctx.capabilities().admin;
    if support == AdminSupport::NONE {
        return Err(Skip(format!("admin operations unsupported: {support:?}")));
    }
    let admin = ctx.client.admin();
    let topic = ctx.topic("admin");
    let group = ctx.group("admin");
    admin
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    publish(ctx, &topic, 0..N).await;

    if support.list_topics == Support::Native {
        let topics = admin.topics().await.expect("topics");
        let listed = topics.iter().find(|t| t.name == topic);
        assert_eq!(listed.map(|t| t.partitions), Some(2), "{topics:?}");
        assert!(!listed.is_some_and(|t| t.is_internal()));
    } else {
        skipped("listing topics");
    }
    if support.list_groups == Support::Native {
        let groups = admin.groups(&topic).await.expect("groups");
        assert!(groups.contains(&group), "{groups:?}");
    } else {
        skipped("listing groups");
    }
    if support.browse == Support::Native {
        browse(ctx, &topic, &group).await;
    } else {
        skipped("browsing");
    }
    if support.reset_group == Support::Native {
        reset(ctx, &topic, &group).await;
    } else {
        skipped("resetting a group");
    }

    admin.delete_topic(&topic).await.expect("delete_topic");
    if support.list_topics == Support::Native {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left: Vec<String> = admin
            .topics()
            .await
            .expect("topics")
            .into_iter()
            .map(|t| t.name)
            .filter(|name| *name == topic || (name.starts_with("__mq") && name.contains(&group)))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    Ok(())
}

fn skipped(part: &str) {
    eprintln!("SKIPPED part of admin_lists_browses_and_resets: {part} unsupported");
}

/// Publishes one keyed message per number, the number as payload.
async fn publish(ctx: &Context, topic: &str, numbers: std::ops::Range<u64>) {
    let batch = numbers
        .map(|i| Message::new(topic, i.to_string()).with_key(format!("k{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
}

/// Both partitions browsed from the start hold every message, and the
/// group's backlog is untouched.
async fn browse(ctx: &Context, topic: &str, group: &str) {
    let admin = ctx.client.admin();
    let mut browsed = Vec::new();
    for partition in 0..2 {
        let spec = BrowseSpec::new(partition, BrowseFrom::Offset(0), 100);
        browsed.extend(admin.browse(topic, spec).await.expect("browse"));
        let last = admin
            .browse(topic, BrowseSpec::new(partition, BrowseFrom::Last(1), 100))
            .await
            .expect("browse last");
        assert!(last.len() <= 1, "{last:?}");
    }
    let mut bodies: Vec<u64> = browsed
        .iter()
        .map(|m| m.message.payload_str().unwrap().parse().unwrap())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        (0..N).collect::<Vec<_>>(),
        "browsing misses messages"
    );
    assert_eq!(
        admin.total_lag(topic, group).await.expect("lag"),
        N,
        "browsing consumed something"
    );
    let too_many = admin
        .browse(topic, BrowseSpec::new(0, BrowseFrom::Offset(0), 0))
        .await
        .unwrap_err();
    assert!(matches!(too_many, Error::Invalid { .. }), "{too_many:?}");
}

/// To the end the backlog is gone; back to the start (where the backend
/// keeps consumed messages), or with new messages, it is there again and
/// a consumer drains it; a running group is not reset.
async fn reset(ctx: &Context, topic: &str, group: &str) {
    let admin = ctx.client.admin();
    admin
        .reset_group(topic, group, ResetTo::Latest)
        .await
        .expect("reset to latest");
    assert_eq!(admin.total_lag(topic, group).await.expect("lag"), 0);
    match admin.reset_group(topic, group, ResetTo::Earliest).await {
        Ok(()) => assert_eq!(admin.total_lag(topic, group).await.expect("lag"), N),
        Err(Error::Unsupported { .. }) => {
            skipped("resetting a group to the earliest message");
            // The group still receives what is published after the reset.
            publish(ctx, topic, 0..N).await;
            assert_eq!(admin.total_lag(topic, group).await.expect("lag"), N);
        }
        Err(e) => panic!("reset to earliest: {e}"),
    }

    let consumer = ctx
        .client
        .consumer(topic, group)
        .run(handler_fn(|_d: Delivery| async { HandlerResult::Ok(()) }))
        .await
        .expect("run");
    assert!(
        wait_until(SOON, || async {
            admin.total_lag(topic, group).await.unwrap_or(u64::MAX) == 0
        })
        .await,
        "the reset group never consumed again"
    );
    let busy = admin.reset_group(topic, group, ResetTo::Latest).await;
    assert!(
        matches!(busy, Err(Error::Invalid { .. })),
        "reset an active group: {busy:?}"
    );
    consumer.shutdown().await.expect("shutdown");
}
