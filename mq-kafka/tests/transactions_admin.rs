//! A hung transaction found and released: a transactional producer begins
//! a transaction, writes one record and then never commits or aborts (to
//! the broker, a producer that died mid-transaction); `Admin::transactions`
//! lists it as open with its partition; a consumer of the group (which
//! reads committed records only) gets nothing published after it, since
//! the partition's last stable offset stays at the hung record;
//! `Admin::abort_transaction` releases it, the consumer then gets the later
//! records and never the aborted one, and the stuck producer is fenced.

mod support;

use std::time::Duration;

use mq_core::driver::{Support, TopicPartition};
use mq_core::{Error, Message, StartFrom, TopicSpec};
use mq_testkit::Recorder;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const STEP: Duration = Duration::from_secs(30);

/// How long a consumer is given to (wrongly) read past the hung record.
const HELD: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_transaction_is_listed_and_aborted() {
    let Some(client) = support::client().await else {
        return;
    };
    let admin = client.admin();
    assert_eq!(client.capabilities().admin.transactions, Support::Native);
    let topic = support::unique("tx-hung");
    let group = support::unique("g");
    admin
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("create");
    admin
        .ensure_group(&topic, &group, StartFrom::Earliest)
        .await
        .expect("group");

    // The hung producer: a transaction longer than the test, one record
    // sent and acknowledged, then neither commit nor abort.
    let id = support::unique("hung");
    let hung: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", support::bootstrap())
        .set("transactional.id", &id)
        .set("transaction.timeout.ms", "600000")
        .create()
        .expect("producer");
    let (p, target) = (hung, topic.clone());
    let hung = tokio::task::spawn_blocking(move || {
        p.init_transactions(STEP).expect("init transactions");
        p.begin_transaction().expect("begin");
        p.send(BaseRecord::<str, str>::to(&target).payload("aborted"))
            .map_err(|(e, _)| e)
            .expect("send");
        p.flush(STEP).expect("flush");
        p
    })
    .await
    .expect("hung producer");

    let listed = admin.transactions().await.expect("list");
    let open = listed
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
    assert!(open.open, "{open:?}");
    assert_eq!(open.state, "Ongoing");
    assert_eq!(
        open.partitions,
        vec![TopicPartition::new(topic.as_str(), 0)]
    );
    assert!(open.producer_id.is_some_and(|p| p >= 0), "{open:?}");
    assert!(open.started.is_some(), "{open:?}");
    assert_eq!(open.timeout, Some(Duration::from_secs(600)));
    assert!(
        listed.windows(2).all(|w| w[0].id <= w[1].id),
        "not sorted by id"
    );

    let seen = Recorder::new();
    let consumer = client
        .consumer(topic.as_str(), group.as_str())
        .run(seen.handler())
        .await
        .expect("consume");
    client
        .producer()
        .send(Message::new(topic.as_str(), "after"))
        .await
        .expect("send after");
    tokio::time::sleep(HELD).await;
    assert!(
        seen.is_empty(),
        "read past an open transaction: {:?}",
        seen.seen()
    );

    for (bad, why) in [
        ("", "empty"),
        (&*support::unique("never-registered"), "unknown"),
    ] {
        let err = admin.abort_transaction(bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "transactional id",
                    ..
                }
            ),
            "{why}: {err:?}"
        );
    }

    admin.abort_transaction(&id).await.expect("abort");
    assert!(seen.wait_for(1, STEP).await, "still held after the abort");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payloads: Vec<String> = seen
        .seen()
        .iter()
        .map(|s| s.delivery.message().payload_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(payloads, ["after"], "the aborted record was delivered");

    let after = admin.transactions().await.expect("list again");
    let closed = after.iter().find(|t| t.id == id).expect("still listed");
    assert!(!closed.open, "{closed:?}");
    let again = admin.abort_transaction(&id).await.unwrap_err();
    assert!(matches!(again, Error::Invalid { .. }), "{again:?}");

    // The stuck producer was fenced: it cannot commit what was aborted.
    let commit = tokio::task::spawn_blocking(move || hung.commit_transaction(STEP))
        .await
        .expect("commit");
    assert!(commit.is_err(), "a fenced producer committed");

    consumer.shutdown().await.expect("shutdown");
    let _ = admin.delete_topic(&topic).await;
    client.close().await.expect("close");
}
