//! What the console tests share: a console served in-process on a real
//! backend, an HTTP client for its API, and backend state made the way an
//! application makes it (a group with a backlog, dead letters left by a
//! rejecting consumer).

use std::time::{Duration, Instant};

use mq::{handler_fn, Delivery, HandlerError, Message, StartFrom, TopicSpec};
use mq_console::{Backend, Console, Settings};
use reqwest::StatusCode;
use serde_json::Value;

/// Longest any wait in these tests lasts.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A name unique to this run.
pub fn unique(what: &str) -> String {
    format!("console-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// Fails under `MQ_REQUIRE_BROKERS=1`, else prints why the test skips.
pub fn skip(test: &str, why: &str) {
    if std::env::var("MQ_REQUIRE_BROKERS").is_ok_and(|v| v == "1") {
        panic!("MQ_REQUIRE_BROKERS=1 but {test} cannot run: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The Redis of the test suite, or `None` (having said why) when it is
/// unreachable.
pub async fn redis(test: &str) -> Option<mq::Client> {
    let url =
        std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    match tokio::time::timeout(Duration::from_secs(10), mq::connect(url.as_str())).await {
        Ok(Ok(client)) => Some(client),
        Ok(Err(e)) => {
            skip(test, &format!("no Redis at {url}: {e}"));
            None
        }
        Err(_) => {
            skip(test, &format!("no Redis at {url}: connecting timed out"));
            None
        }
    }
}

/// A console on `client`, on a free loopback port.
pub async fn serve(client: &mq::Client, actions: bool) -> Console {
    let settings = Settings::new("127.0.0.1:0".parse().expect("addr")).with_actions(actions);
    Console::start(vec![Backend::new("test backend", client.clone())], settings)
        .await
        .expect("start the console")
}

/// The console's JSON API, as its page calls it.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(console: &Console) -> Self {
        Api {
            http: reqwest::Client::builder()
                .timeout(LIMIT)
                .build()
                .expect("http client"),
            base: format!("http://{}", console.addr()),
            token: console.token().map(str::to_owned),
        }
    }

    /// The page's own origin.
    pub fn origin(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/api{path}", self.base))
            .send()
            .await
            .expect("GET");
        read(response).await
    }

    /// A GET whose answer must be 200.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// A POST as the page sends it: token, same origin, JSON.
    pub async fn act(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let token = self.token().to_owned();
        self.post(
            path,
            &[
                ("x-mq-token", token.as_str()),
                ("origin", self.origin()),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    /// An action whose answer must be 200.
    pub async fn done(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.act(path, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {answer}");
        answer
    }

    /// A POST with exactly `headers`.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/api{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.body(body).send().await.expect("POST")).await
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: not JSON: {text}"));
    (status, body)
}

/// Waits until `ready` holds, failing the test after [`LIMIT`].
pub async fn until<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `topic` with two partitions and group `group` at its start, holding
/// `payloads` sent with keys `k0`, `k1`, ... and header `color=blue` on
/// the first.
pub async fn backlog(client: &mq::Client, topic: &str, group: &str, payloads: &[&str]) {
    let admin = client.admin();
    admin
        .ensure_topic(topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    admin
        .ensure_group(topic, group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    for (i, payload) in payloads.iter().enumerate() {
        let mut message = Message::new(topic, payload.to_string()).with_key(format!("k{i}"));
        if i == 0 {
            message = message.with_header("color", "blue");
        }
        client.producer().send(message).await.expect("send");
    }
}

/// Consumes everything pending on `topic` in `group` with a handler that
/// rejects it all, so each message becomes a dead letter.
pub async fn reject_all(client: &mq::Client, topic: &str, group: &str) {
    let consumer = client
        .consumer(topic, group)
        .start_from(StartFrom::Earliest)
        .run(handler_fn(|_d: Delivery| async {
            Err::<(), _>(HandlerError::reject("refused by the test"))
        }))
        .await
        .expect("run the rejecting consumer");
    let admin = client.admin();
    until("the rejected messages to leave", || async {
        admin.total_lag(topic, group).await.expect("lag") == 0
    })
    .await;
    consumer.shutdown().await.expect("shutdown");
}
