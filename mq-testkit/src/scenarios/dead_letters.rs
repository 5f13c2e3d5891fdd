//! Operating dead letters: inspect, redrive (with filters, dry runs and a
//! replay limit), purge.

use std::sync::Arc;

use mq_core::message::reserved;
use mq_core::{handler_fn, Delivery, HandlerError, HandlerResult, Message, RedriveOptions};
use parking_lot::Mutex;

use super::SOON;
use crate::{wait_until, Context, Skip};

/// Rejected messages are inspected in the dead-letter topic with why
/// they are there; a dry run changes nothing; a redrive filtered by key
/// takes only that letter back to its topic, with a replay count; a
/// letter that fails again is refused past the replay limit, and a purge
/// removes it.
pub async fn dead_letters_are_inspected_redriven_and_purged(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("dlq-ops");
    let group = ctx.group("dlq-ops");
    let dlq = ctx.capabilities().names.dead_letter_topic(&topic);
    ctx.join(&topic, &group).await;
    let admin = ctx.client.admin();
    // (payload, replay count header) of each message handled.
    type Handled = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let handled: Handled = Arc::default();
    // Rejects everything at first; once `healed`, only "c".
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (handled, healed) = (handled.clone(), healed.clone());
        ctx.client
            .consumer(&topic, &group)
            .run(handler_fn(move |d: Delivery| {
                let (handled, healed) = (handled.clone(), healed.clone());
                async move {
                    let body = d.message().payload_str()?.to_owned();
                    if !healed.load(std::sync::atomic::Ordering::SeqCst) || body == "c" {
                        return Err(HandlerError::reject(format!("cannot take {body}")));
                    }
                    let replays = d
                        .message()
                        .headers()
                        .get(reserved::REPLAYS)
                        .map(str::to_owned);
                    handled.lock().push((body, replays));
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run")
    };
    for (body, key) in [("a", "ka"), ("b", "kb"), ("c", "kc")] {
        ctx.client
            .producer()
            .send(Message::new(&topic, body).with_key(key))
            .await
            .expect("send");
    }
    assert!(
        wait_until(SOON, || async {
            admin
                .dead_letters(&dlq, 10)
                .await
                .map(|l| l.len())
                .unwrap_or(0)
                == 3
        })
        .await,
        "the rejects never reached {dlq}"
    );
    let letters = admin.dead_letters(&dlq, 10).await.expect("inspect");
    for letter in &letters {
        let info = letter.info.as_ref().expect("dead-letter headers");
        assert_eq!(
            (info.topic.as_str(), info.group.as_deref()),
            (topic.as_str(), Some(group.as_str()))
        );
        assert!(info.error.contains("cannot take"), "{}", info.error);
        assert_eq!(letter.replays, 0);
    }
    healed.store(true, std::sync::atomic::Ordering::SeqCst);

    let dry = admin
        .redrive(&dlq, RedriveOptions::default().with_dry_run(true))
        .await
        .expect("dry run");
    assert_eq!(dry.redriven, 3);
    assert_eq!(
        admin.dead_letters(&dlq, 10).await.expect("inspect").len(),
        3,
        "a dry run changed something"
    );

    let one = admin
        .redrive(&dlq, RedriveOptions::default().with_key("ka"))
        .await
        .expect("redrive one");
    assert_eq!((one.redriven, one.skipped), (1, 2));
    assert!(
        wait_until(SOON, || async { handled.lock().len() == 1 }).await,
        "the redriven letter never came back"
    );
    assert_eq!(handled.lock()[0], ("a".to_owned(), Some("1".to_owned())));

    let rest = admin
        .redrive(&dlq, RedriveOptions::default())
        .await
        .expect("redrive");
    assert_eq!(rest.redriven, 2);
    // "b" is handled; "c" fails again and is dead-lettered with its count.
    assert!(
        wait_until(SOON, || async {
            handled.lock().len() == 2
                && admin
                    .dead_letters(&dlq, 10)
                    .await
                    .is_ok_and(|l| l.len() == 1 && l[0].replays == 1)
        })
        .await,
        "handled {:?}",
        handled.lock()
    );
    let refused = admin
        .redrive(&dlq, RedriveOptions::default().with_max_replays(1))
        .await
        .expect("redrive over the limit");
    assert_eq!((refused.redriven, refused.refused), (0, 1));
    assert_eq!(admin.purge_dead_letters(&dlq).await.expect("purge"), 1);
    assert!(admin
        .dead_letters(&dlq, 10)
        .await
        .expect("inspect")
        .is_empty());
    consumer.shutdown().await.expect("shutdown");
    Ok(())
}
