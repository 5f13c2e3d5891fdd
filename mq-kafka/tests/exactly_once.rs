//! Consume-transform-produce exactly once across a consumer that dies
//! mid-stream: a first transformer runs on a runtime of its own, which is
//! dropped (every task gone at whatever await it was at, transactions
//! open, acks unsent) once it has handled part of the input; a second
//! transformer of the same group takes over. A reader of the output
//! (read_committed) must then see every input's output exactly once and
//! in key order: outputs of transactions the first one never committed
//! were aborted, and inputs whose transaction did commit are not handled
//! again. The at-least-once path fails this: the acks lost with the first
//! runtime bring their inputs back.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mq_core::{
    handler_fn, transform_fn, Client, Config, Delivery, HandlerError, HandlerResult, Message,
    StartFrom, TopicSpec,
};
use mq_testkit::{wait_quiescent, wait_until};
use parking_lot::Mutex;

const INPUTS: usize = 90;
const KEYS: usize = 6;
/// Inputs the first transformer starts on before its runtime is dropped.
const BEFORE_CRASH: usize = 30;
const LIMIT: Duration = Duration::from_secs(60);

fn enrich(
    calls: Arc<AtomicUsize>,
    output: String,
    crashed: Option<std::sync::mpsc::Sender<()>>,
) -> impl mq_core::Transform {
    let crashed = crashed.map(Mutex::new);
    let crashed = Arc::new(crashed);
    transform_fn(move |d: Delivery| {
        let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call == BEFORE_CRASH {
            if let Some(tx) = crashed.as_ref() {
                let _ = tx.lock().send(());
            }
        }
        let output = output.clone();
        async move {
            // Slow enough that other partitions' transactions are open
            // when the crash comes.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let body = d.message().payload_str()?.to_owned();
            let key = d.key().unwrap_or_default().to_owned();
            Ok::<_, HandlerError>(vec![Message::new(output, format!("{body}!")).with_key(key)])
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_is_exactly_once_across_a_crashed_consumer() {
    let Some(client) = support::client().await else {
        return;
    };
    let (input, output) = (support::unique("eos-in"), support::unique("eos-out"));
    let (group, readers) = (support::unique("eos-g"), support::unique("eos-r"));
    for topic in [&input, &output] {
        client
            .admin()
            .ensure_topic(topic, TopicSpec::new(3))
            .await
            .expect("ensure_topic");
    }
    client
        .admin()
        .ensure_group(&input, &group, StartFrom::Earliest)
        .await
        .expect("group");
    client
        .admin()
        .ensure_group(&output, &readers, StartFrom::Earliest)
        .await
        .expect("readers");
    let batch = (0..INPUTS)
        .map(|i| Message::new(&input, format!("{i}")).with_key(format!("k{}", i % KEYS)))
        .collect();
    client.producer().send_batch(batch).await.expect("send");

    let first_calls = Arc::new(AtomicUsize::new(0));
    let crashed = {
        let (input, output, group) = (input.clone(), output.clone(), group.clone());
        let calls = first_calls.clone();
        std::thread::spawn(move || crash_a_transformer(&input, &output, &group, calls))
    };
    tokio::task::spawn_blocking(move || crashed.join().expect("first transformer"))
        .await
        .expect("join");
    let handled_before = first_calls.load(Ordering::SeqCst);
    assert!(handled_before >= BEFORE_CRASH, "{handled_before} calls");

    let second_calls = Arc::new(AtomicUsize::new(0));
    let second = client
        .consumer(&input, &group)
        .concurrency(4)
        .run_transform(enrich(second_calls.clone(), output.clone(), None))
        .await
        .expect("second transformer");
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let reader = {
        let seen = seen.clone();
        client
            .consumer(&output, &readers)
            .concurrency(1)
            .run(handler_fn(move |d: Delivery| {
                let seen = seen.clone();
                async move {
                    let body = d.message().payload_str()?;
                    let i: usize = body
                        .trim_end_matches('!')
                        .parse()
                        .map_err(|e| HandlerError::reject(format!("{body}: {e}")))?;
                    seen.lock()
                        .entry(d.key().unwrap_or_default().to_owned())
                        .or_default()
                        .push(i);
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("reader")
    };
    let total = || seen.lock().values().map(Vec::len).sum::<usize>();
    if !wait_until(LIMIT, || async { total() >= INPUTS }).await {
        let open: Vec<_> = client
            .admin()
            .transactions()
            .await
            .expect("transactions")
            .into_iter()
            .filter(|t| t.open)
            .collect();
        panic!(
            "{} of {INPUTS} outputs after the crash; open transactions: {open:?}; lag of the output: {:?}",
            total(),
            client.admin().lag(&output, &readers).await
        );
    }
    assert!(
        wait_quiescent(
            &client,
            &input,
            &group,
            Duration::from_secs(2),
            LIMIT,
            total
        )
        .await,
        "the inputs were never all acked"
    );
    assert!(
        wait_quiescent(
            &client,
            &output,
            &readers,
            Duration::from_secs(2),
            LIMIT,
            total
        )
        .await,
        "the outputs were never all read"
    );
    second.shutdown().await.expect("shutdown transformer");
    reader.shutdown().await.expect("shutdown reader");

    let redone = second_calls.load(Ordering::SeqCst);
    eprintln!(
        "first transformer: {handled_before} calls before its runtime was dropped; \
         second: {redone} calls for the rest of {INPUTS}"
    );
    assert_eq!(total(), INPUTS, "outputs: {:?}", seen.lock());
    for k in 0..KEYS {
        let key = format!("k{k}");
        let expected: Vec<usize> = (k..INPUTS).step_by(KEYS).collect();
        assert_eq!(seen.lock().get(&key), Some(&expected), "outputs of {key}");
    }
    for topic in [&input, &output] {
        let _ = client.admin().delete_topic(topic).await;
    }
}

/// Runs a transformer on a runtime of its own and drops that runtime
/// once `BEFORE_CRASH` inputs reached the transform.
fn crash_a_transformer(input: &str, output: &str, group: &str, calls: Arc<AtomicUsize>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (crash, crash_now) = std::sync::mpsc::channel();
    let consumer = runtime.block_on(async {
        let config = Config::from_url(&support::url()).expect("url");
        let client = Client::new(
            mq_kafka::KafkaDriver::connect(&config)
                .await
                .expect("connect"),
        );
        client
            .consumer(input, group)
            .concurrency(4)
            .run_transform(enrich(calls, output.to_owned(), Some(crash)))
            .await
            .expect("first transformer")
    });
    crash_now
        .recv_timeout(LIMIT)
        .expect("the first transformer never got its inputs");
    drop(runtime);
    // Only now: dropping the handle first would ask for a clean stop.
    drop(consumer);
}
