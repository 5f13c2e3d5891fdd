//! `mq console` end to end: its JSON API against a console served on real
//! backends (memory, native in a temporary directory, and Redis at
//! `MQ_TEST_REDIS_URL`), its guards (read-only, token, origin, host,
//! loopback), the `mq console` command itself, and the page in a real
//! headless chromium (see `console/browser.rs`).

#[path = "console/browser.rs"]
mod browser;
#[path = "console/fixture.rs"]
mod fixture;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use fixture::{backlog, reject_all, serve, unique, Api};
use mq_console::{Backend, Console, ConsoleError, Settings};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_memory() {
    let client = mq::connect(format!("memory://{}", unique("m")))
        .await
        .expect("memory");
    exercise(&client).await;
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_native() {
    let dir = std::env::temp_dir().join(unique("native"));
    let client = mq::connect(format!("native://{}", dir.display()))
        .await
        .expect("native");
    exercise(&client).await;
    client.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_redis() {
    let Some(client) = fixture::redis("api_on_redis").await else {
        return;
    };
    exercise(&client).await;
    client.close().await.expect("close");
}

fn sum_lag(groups: &Value, group: &str) -> u64 {
    groups
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["group"] == group)
        .flat_map(|g| g["partitions"].as_array().expect("partitions").iter())
        .filter_map(|p| p["lag"].as_u64())
        .sum()
}

/// Every read and action of the API on `client`'s backend.
async fn exercise(client: &mq::Client) {
    let console = serve(client, true).await;
    let api = Api::new(&console);
    let (topic, group) = (unique("t"), unique("g"));
    backlog(client, &topic, &group, &["m0", "m1", "m2"]).await;

    let info = api.ok("/info").await;
    assert_eq!(info["actions"], true, "{info}");
    assert_eq!(info["backends"][0]["label"], "test backend", "{info}");
    assert_eq!(info["backends"][0]["backend"], client.backend(), "{info}");

    // Topics with partitions, groups and lag.
    let topics = api.ok("/backends/0/topics").await;
    let row = topics
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .unwrap_or_else(|| panic!("{topic} missing: {topics}"));
    assert_eq!(row["partitions"], 2, "{row}");
    assert_eq!(row["lag"], 3, "{row}");
    assert_eq!(
        row["groups"],
        json!([{ "group": group, "lag": 3 }]),
        "{row}"
    );
    let groups_path = format!("/backends/0/topics/{topic}/groups");
    let groups = api.ok(&groups_path).await;
    assert_eq!(sum_lag(&groups, &group), 3, "{groups}");
    assert_eq!(groups[0]["partitions"].as_array().map(Vec::len), Some(2));

    // Browse with search, bounded.
    let messages = format!("/backends/0/topics/{topic}/messages");
    let all = api.ok(&format!("{messages}?window=10")).await;
    assert_eq!(all["messages"].as_array().map(Vec::len), Some(3), "{all}");
    let by_key = api.ok(&format!("{messages}?field=key&q=k2")).await;
    assert_eq!(by_key["messages"][0]["payload"], "m2", "{by_key}");
    assert_eq!(by_key["messages"].as_array().map(Vec::len), Some(1));
    let by_header = api
        .ok(&format!("{messages}?field=header&q=color%3Dblue"))
        .await;
    assert_eq!(by_header["messages"][0]["key"], "k0", "{by_header}");
    assert_eq!(by_header["messages"][0]["headers"]["color"], "blue");
    let by_payload = api.ok(&format!("{messages}?field=payload&q=m1")).await;
    assert_eq!(by_payload["messages"][0]["key"], "k1", "{by_payload}");
    let p = by_payload["messages"][0]["partition"]
        .as_u64()
        .expect("partition");
    let one = api.ok(&format!("{messages}?partition={p}&q=m1")).await;
    assert_eq!(one["messages"].as_array().map(Vec::len), Some(1), "{one}");
    for bad in [
        "?window=0",
        "?window=10001",
        "?from=offset",
        "?from=time&at=soon",
    ] {
        let (status, body) = api.get(&format!("{messages}{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, _) = api.get("/backends/0/topics/no-such-topic/messages").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get("/backends/7/topics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Tail: the first poll marks "now"; a message produced after it shows.
    let tail = format!("/backends/0/topics/{topic}/tail");
    let first = api.ok(&tail).await;
    assert_eq!(first["messages"], json!([]), "{first}");
    let sent = api
        .done(
            &messages,
            json!({ "payload": "from the console", "key": "kc", "headers": { "via": "test" } }),
        )
        .await;
    assert_eq!(sent["topic"], topic.as_str(), "{sent}");
    assert!(sent["id"].as_str().is_some_and(|id| !id.is_empty()));
    let cursor = first["cursor"].as_str().expect("cursor").to_owned();
    let next = api.ok(&format!("{tail}?cursor={cursor}")).await;
    let shown: Vec<&Value> = next["messages"].as_array().expect("tail").iter().collect();
    assert_eq!(shown.len(), 1, "{next}");
    assert_eq!(shown[0]["payload"], "from the console");
    assert_eq!(shown[0]["headers"]["via"], "test");
    let again = api
        .ok(&format!(
            "{tail}?cursor={}",
            next["cursor"].as_str().expect("c")
        ))
        .await;
    assert_eq!(again["messages"], json!([]), "shown twice: {again}");
    assert_eq!(sum_lag(&api.ok(&groups_path).await, &group), 4);

    dead_letters(client, &api).await;
    console.stop().await.expect("stop");
}

/// Five letters: one redriven, two selected (and an unknown id), the rest
/// refused by a replay limit of 0 then redriven all; rejected again, they
/// come back with a replay count, and are purged.
async fn dead_letters(client: &mq::Client, api: &Api) {
    let (topic, group) = (unique("d"), unique("dg"));
    backlog(client, &topic, &group, &["d0", "d1", "d2", "d3", "d4"]).await;
    reject_all(client, &topic, &group).await;
    let dlq = client.capabilities().names.dead_letter_topic(&topic);
    let list = api.ok("/backends/0/dead-letters").await;
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|d| d["topic"] == dlq.as_str() && d["letters"] == 5),
        "{list}"
    );
    let letters_path = format!("/backends/0/dead-letters/{dlq}");
    let letters = api.ok(&letters_path).await;
    let letters = letters.as_array().expect("letters");
    assert_eq!(letters.len(), 5, "{letters:?}");
    for letter in letters {
        assert_eq!(letter["from_topic"], topic.as_str(), "{letter}");
        assert_eq!(letter["group"], group.as_str());
        assert_eq!(letter["replays"], 0);
        assert!(letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused by the test")));
        assert_eq!(
            letter["headers"]["mq-dlq-topic"],
            topic.as_str(),
            "{letter}"
        );
    }
    let id_of = |key: &str| -> String {
        letters
            .iter()
            .find(|l| l["key"] == key)
            .and_then(|l| l["id"].as_str())
            .unwrap_or_else(|| panic!("no letter {key}"))
            .to_owned()
    };
    let redrive = format!("{letters_path}/redrive");
    let one = api.done(&redrive, json!({ "ids": [id_of("k0")] })).await;
    assert_eq!(one["redriven"], 1, "{one}");
    assert_eq!(
        one["letters"],
        json!([{ "id": id_of("k0"), "outcome": "redriven" }])
    );
    let lag = || async { client.admin().total_lag(&topic, &group).await.expect("lag") };
    assert_eq!(lag().await, 1, "the redriven letter is back in its topic");
    let picked = api
        .done(
            &redrive,
            json!({ "ids": [id_of("k1"), id_of("k2"), "no-such-id"] }),
        )
        .await;
    assert_eq!(picked["redriven"], 2, "{picked}");
    assert_eq!(picked["letters"][2]["outcome"], "not found", "{picked}");
    let refused = api
        .done(&redrive, json!({ "all": true, "max_replays": 0 }))
        .await;
    assert_eq!(
        (refused["redriven"].as_u64(), refused["refused"].as_u64()),
        (Some(0), Some(2)),
        "{refused}"
    );
    let (status, body) = api.act(&redrive, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api.act(&redrive, json!({ "all": true, "every": 1 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let all = api.done(&redrive, json!({ "all": true })).await;
    assert_eq!(all["redriven"], 2, "{all}");
    assert_eq!(lag().await, 5);
    assert_eq!(api.ok(&letters_path).await, json!([]));

    reject_all(client, &topic, &group).await;
    let back = api.ok(&letters_path).await;
    let back = back.as_array().expect("letters");
    assert_eq!(back.len(), 5, "{back:?}");
    assert!(
        back.iter()
            .all(|l| l["replays"] == 1 && l["headers"]["mq-replays"] == "1"),
        "{back:?}"
    );
    let purged = api.done(&format!("{letters_path}/purge"), json!({})).await;
    assert_eq!(purged, json!({ "purged": 5 }));
    assert_eq!(api.ok(&letters_path).await, json!([]));
    let (status, body) = api.get(&format!("/backends/0/dead-letters/{topic}")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an ordinary topic is no dead-letter topic: {body}"
    );
}

#[tokio::test]
async fn read_only_refuses_actions() {
    let client = mq::connect(format!("memory://{}", unique("ro")))
        .await
        .expect("memory");
    let console = serve(&client, false).await;
    assert_eq!(console.token(), None);
    assert!(!console.url().contains("token"));
    let api = Api::new(&console);
    let topic = unique("t");
    backlog(&client, &topic, "g", &["m0"]).await;
    assert_eq!(api.ok("/info").await["actions"], false);
    let messages = format!("/backends/0/topics/{topic}/messages");
    let (status, body) = api.act(&messages, json!({ "payload": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("read-only")),
        "{body}"
    );
    let dlq = client.capabilities().names.dead_letter_topic(&topic);
    let (status, _) = api
        .act(&format!("/backends/0/dead-letters/{dlq}/purge"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let browsed = api.ok(&messages).await;
    assert_eq!(
        browsed["messages"].as_array().map(Vec::len),
        Some(1),
        "nothing was sent: {browsed}"
    );
    console.stop().await.expect("stop");
    client.close().await.expect("close");
}

/// What a refused request was, its headers, and the status it must get.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);

#[tokio::test]
async fn actions_need_the_token_the_origin_and_json() {
    let client = mq::connect(format!("memory://{}", unique("guard")))
        .await
        .expect("memory");
    let console = serve(&client, true).await;
    let token = console.token().expect("token").to_owned();
    assert!(console.url().ends_with(&format!("#token={token}")));
    let api = Api::new(&console);
    let topic = unique("t");
    let path = format!("/backends/0/topics/{topic}/messages");
    let body = json!({ "payload": "x" }).to_string();
    let origin = api.origin().to_owned();
    let json_type = ("content-type", "application/json");
    let cases: [Refusal; 5] = [
        (
            "no token",
            vec![("origin", &origin), json_type],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a wrong token",
            vec![("x-mq-token", "0123"), ("origin", &origin), json_type],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another site's origin",
            vec![
                ("x-mq-token", &token),
                ("origin", "http://evil.example"),
                json_type,
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "a null origin",
            vec![("x-mq-token", &token), ("origin", "null"), json_type],
            StatusCode::FORBIDDEN,
        ),
        (
            "a form body",
            vec![
                ("x-mq-token", &token),
                ("origin", &origin),
                ("content-type", "text/plain"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (what, headers, expected) in cases {
        let (status, answer) = api.post(&path, &headers, body.clone()).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    let (status, browsed) = api.get(&path).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused request made the topic: {browsed}"
    );
    let (status, answer) = api
        .post(
            &path,
            &[("x-mq-token", &token), ("origin", &origin), json_type],
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A request without Origin (not a browser) passes on the token alone.
    let (status, answer) = api
        .post(&path, &[("x-mq-token", &token), json_type], body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A page under another name resolving to loopback (DNS rebinding) is
    // refused even for reads.
    let rebound = reqwest::Client::new()
        .get(format!("http://{}/api/info", console.addr()))
        .header("host", "evil.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    // Reads never change anything: the action routes take no GET.
    let (status, _) = api
        .get(&format!("/backends/0/dead-letters/{topic}.dlq/purge"))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    console.stop().await.expect("stop");
    client.close().await.expect("close");
}

#[tokio::test]
async fn listens_on_loopback_unless_told() {
    let client = mq::connect("memory://").await.expect("memory");
    let open = Settings::new("0.0.0.0:0".parse().expect("addr"));
    let refused = Console::start(vec![Backend::new("m", client.clone())], open).await;
    assert!(
        matches!(refused, Err(ConsoleError::NotLoopback(_))),
        "{refused:?}"
    );
    let none = Console::start(
        Vec::new(),
        Settings::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await;
    assert!(matches!(none, Err(ConsoleError::NoBackend)), "{none:?}");
    client.close().await.expect("close");

    let run = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args(["console", "--url", "memory://", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run mq console");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

/// The command prints the page's address with its token, serves the
/// backends under their redacted URLs, and stops on request.
#[tokio::test]
async fn the_command_serves_and_redacts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mq"))
        .args([
            "console",
            "--url",
            "memory://ops:hunter2@shown",
            "--listen",
            "127.0.0.1:0",
            "--allow-actions",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mq console");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .expect("read");
    let page = line.trim();
    assert!(
        page.starts_with("http://127.0.0.1:") && page.contains("/#token="),
        "{line:?}"
    );
    let base = page.split('#').next().expect("base").trim_end_matches('/');
    let info: Value = reqwest::get(format!("{base}/api/info"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let label = info["backends"][0]["label"].as_str().expect("label");
    assert!(
        !label.contains("hunter2") && label.contains("***"),
        "{label}"
    );
    let html = reqwest::get(format!("{base}/"))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("html");
    assert!(html.contains("<title>mq console</title>"));
    let _ = child.kill();
    let _ = child.wait();
}
