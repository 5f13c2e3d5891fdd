//! The admin operations tools are built on: list, browse, reset, delete.

use std::time::Duration;

use mq_core::driver::{BrowseFrom, BrowseSpec, ResetTo};
use mq_core::{handler_fn, Delivery, Error, HandlerResult, Message, Support, TopicSpec};

use super::SOON;
use crate::{wait_until, Context, Skip};

/// Topics and groups are listed; browsing reads without consuming; a
/// group moves to latest and back to earliest, but not while it runs;
/// deleting a topic takes mq's retry topics of its groups with it.
pub async fn admin_lists_browses_and_resets(ctx: &Context) -> Result<(), Skip> {
    let admin_support = ctx.capabilities().admin;
    if admin_support.list_topics != Support::Native
        || admin_support.browse != Support::Native
        || admin_support.reset_group != Support::Native
    {
        return Err(Skip(format!(
            "admin operations unsupported: {admin_support:?}"
        )));
    }
    let admin = ctx.client.admin();
    let topic = ctx.topic("admin");
    let group = ctx.group("admin");
    admin
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let n = 10u64;
    let batch = (0..n)
        .map(|i| Message::new(&topic, i.to_string()).with_key(format!("k{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    let topics = admin.topics().await.expect("topics");
    let listed = topics.iter().find(|t| t.name == topic);
    assert_eq!(listed.map(|t| t.partitions), Some(2), "{topics:?}");
    assert!(!listed.is_some_and(|t| t.is_internal()));
    if admin_support.list_groups == Support::Native {
        let groups = admin.groups(&topic).await.expect("groups");
        assert!(groups.contains(&group), "{groups:?}");
    }

    let mut browsed = Vec::new();
    for partition in 0..2 {
        let spec = BrowseSpec::new(partition, BrowseFrom::Offset(0), 100);
        browsed.extend(admin.browse(&topic, spec).await.expect("browse"));
        let last = admin
            .browse(&topic, BrowseSpec::new(partition, BrowseFrom::Last(1), 100))
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
        (0..n).collect::<Vec<_>>(),
        "browsing misses messages"
    );
    assert_eq!(
        admin.total_lag(&topic, &group).await.expect("lag"),
        n,
        "browsing consumed something"
    );
    let too_many = admin
        .browse(&topic, BrowseSpec::new(0, BrowseFrom::Offset(0), 0))
        .await
        .unwrap_err();
    assert!(matches!(too_many, Error::Invalid { .. }), "{too_many:?}");

    admin
        .reset_group(&topic, &group, ResetTo::Latest)
        .await
        .expect("reset to latest");
    assert_eq!(admin.total_lag(&topic, &group).await.expect("lag"), 0);
    admin
        .reset_group(&topic, &group, ResetTo::Earliest)
        .await
        .expect("reset to earliest");
    assert_eq!(admin.total_lag(&topic, &group).await.expect("lag"), n);

    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(handler_fn(|_d: Delivery| async { HandlerResult::Ok(()) }))
        .await
        .expect("run");
    assert!(
        wait_until(SOON, || async {
            admin.total_lag(&topic, &group).await.unwrap_or(u64::MAX) == 0
        })
        .await,
        "the reset group never consumed again"
    );
    let busy = admin.reset_group(&topic, &group, ResetTo::Earliest).await;
    assert!(
        matches!(busy, Err(Error::Invalid { .. })),
        "reset an active group: {busy:?}"
    );
    consumer.shutdown().await.expect("shutdown");

    admin.delete_topic(&topic).await.expect("delete_topic");
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
    Ok(())
}
