//! The console's page in a real headless chromium, driven through
//! chromedriver: the topic list, lag changing after producing, a dead
//! letter's headers, its redrive reaching a running consumer, and a live
//! tail. Screenshots go to `target/console-screenshots/`. Without chromium
//! or chromedriver it skips, saying why, unless `MQ_REQUIRE_BROKERS=1`.
//! `MQ_CHROMIUM` and `MQ_CHROMEDRIVER` name other binaries.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use mq::{handler_fn, Delivery, Message, StartFrom};
use serde_json::{json, Value};

use super::fixture::{backlog, reject_all, serve, skip, unique, LIMIT};

const TEST: &str = "console_in_a_browser";

/// The file `variable` names, or else the first of `candidates` on disk.
fn binary(variable: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(variable) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(path: &PathBuf) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Driver { child, port }
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn snap(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// The text of the first element matching `css`, or `None`.
async fn text(browser: &Client, css: &str) -> Option<String> {
    let found = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .await
        .expect("script");
    found.as_str().map(str::to_owned)
}

/// Waits until the text at `css` satisfies `ready`; returns it.
async fn wait_text(browser: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = text(browser, css).await;
        if let Some(now) = now.as_deref().filter(|t| ready(t)) {
            return now.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {css}: last text {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks `css`, retrying while the element is missing or replaced (the
/// page redraws its lists as it refreshes them).
async fn click(browser: &Client, css: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() {
    let chromium = binary(
        "MQ_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let chromedriver = binary("MQ_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        return skip(
            TEST,
            "no chromium or chromedriver (apt-get install chromium chromium-driver)",
        );
    };
    let driver = start_driver(&chromedriver);
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let webdriver = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + LIMIT;
    let browser = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&webdriver)
            .await
        {
            Ok(browser) => break browser,
            Err(e) if Instant::now() > deadline => panic!("chromedriver never took a session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };

    let dir = std::env::temp_dir().join(unique("browser-native"));
    let client = mq::connect(format!("native://{}", dir.display()))
        .await
        .expect("native");
    let result = tokio::time::timeout(Duration::from_secs(300), drive(&browser, &client)).await;
    let _ = browser.close().await;
    drop(driver);
    client.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&profile);
    result.expect("the browser test ran over 5 minutes");
}

async fn drive(browser: &Client, client: &mq::Client) {
    // A backlog of two in group `billing`, and one dead letter of
    // `payments` whose group `settle` rejected it.
    let (orders, payments) = (unique("orders"), unique("payments"));
    backlog(client, &orders, "billing", &["o1", "o2"]).await;
    let admin = client.admin();
    admin
        .ensure_group(&payments, "settle", StartFrom::Earliest)
        .await
        .expect("group");
    client
        .producer()
        .send(
            Message::new(payments.as_str(), "charge 42")
                .with_key("p-42")
                .with_header("tenant", "acme"),
        )
        .await
        .expect("send");
    reject_all(client, &payments, "settle").await;
    let dlq = client.capabilities().names.dead_letter_topic(&payments);
    // The consumer the redrive must reach, already running.
    let (got, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let settle = client
        .consumer(&payments, "settle")
        .run(handler_fn(move |d: Delivery| {
            let got = got.clone();
            async move {
                let replays = d.message().headers().get("mq-replays").map(str::to_owned);
                got.send((d.message().payload_str()?.to_owned(), replays))?;
                Ok(())
            }
        }))
        .await
        .expect("run settle");

    let console = serve(client, true).await;
    browser
        .goto(&console.url())
        .await
        .expect("open the console");
    let backend = ".backend[data-backend='0']";
    let row = format!("{backend} tr[data-topic='{orders}']");
    wait_text(browser, &format!("{row} td.lag"), |t| t == "2").await;
    let url = browser.current_url().await.expect("url");
    assert!(
        url.fragment().is_none(),
        "the token stays in the address bar: {url}"
    );
    assert_eq!(
        text(browser, "#mode").await.as_deref(),
        Some("actions enabled")
    );
    snap(browser, "topics").await;

    // The group view, then two messages produced from the page: lag 2 → 4.
    click(browser, &format!("{row} .open-topic")).await;
    let group_lag = ".group[data-group='billing'] .group-lag";
    wait_text(browser, group_lag, |t| t == "2").await;
    click(browser, ".tabs button[data-tab='produce']").await;
    for n in 1..=2 {
        type_into(
            browser,
            "#produce-payload",
            &format!("from the browser {n}"),
        )
        .await;
        click(browser, "#produce-send").await;
        wait_text(browser, "#produce-result", |t| t.starts_with("sent ")).await;
        browser
            .execute(
                "document.querySelector('#produce-result').textContent = ''",
                vec![],
            )
            .await
            .expect("reset");
    }
    click(browser, ".tabs button[data-tab='groups']").await;
    wait_text(browser, group_lag, |t| t == "4").await;
    wait_text(browser, &format!("{row} td.lag"), |t| t == "4").await;
    snap(browser, "group-lag").await;

    // The message browser, searching payloads.
    click(browser, ".tabs button[data-tab='messages']").await;
    browser
        .find(Locator::Css("#browse-form [name=field]"))
        .await
        .expect("field")
        .select_by_value("payload")
        .await
        .expect("select");
    type_into(browser, "#browse-form [name=q]", "browser 2").await;
    click(browser, "#browse-form button[type=submit]").await;
    wait_text(browser, "#browse-summary", |t| t.starts_with("1 of 4")).await;
    let payload = wait_text(browser, "#messages tr.message td.payload", |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(payload, "from the browser 2");
    snap(browser, "messages").await;

    // Live tail: a message published after it starts shows up.
    click(browser, ".tabs button[data-tab='tail']").await;
    click(browser, "#tail-toggle").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .producer()
        .send(Message::new(orders.as_str(), "tailed live"))
        .await
        .expect("send");
    wait_text(browser, "#tail tr.message td.payload", |t| {
        t == "tailed live"
    })
    .await;
    click(browser, "#tail-toggle").await;

    // The dead letter, its headers, and its redrive to the running consumer.
    click(
        browser,
        &format!("{backend} tr[data-dlq='{dlq}'] .open-dlq"),
    )
    .await;
    let letter = "#letters-table tr.letter";
    wait_text(browser, &format!("{letter} td:nth-child(3)"), |t| {
        t == "p-42"
    })
    .await;
    click(browser, &format!("{letter} .show-headers")).await;
    let details = wait_text(browser, "#letters-table tr.details", |t| {
        t.contains("mq-dlq-error")
    })
    .await;
    for expected in [
        "refused by the test",
        "tenant",
        "acme",
        "charge 42",
        "mq-dlq-topic",
    ] {
        assert!(
            details.contains(expected),
            "{expected} missing from {details}"
        );
    }
    snap(browser, "dead-letter").await;
    click(browser, &format!("{letter} .redrive-one")).await;
    wait_text(browser, "#letters-result", |t| t.starts_with("redriven 1")).await;
    let (payload, replays) = tokio::time::timeout(LIMIT, delivered.recv())
        .await
        .expect("the consumer never got the redriven letter")
        .expect("channel");
    assert_eq!(
        (payload.as_str(), replays.as_deref()),
        ("charge 42", Some("1"))
    );
    wait_text(browser, "#letters-table", |t| {
        t.contains("no pending letters")
    })
    .await;
    snap(browser, "redriven").await;
    let errors: Value = browser
        .execute(
            "return document.querySelectorAll('.error-text:not(:empty)').length",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(errors, json!(0), "the page shows errors");
    settle.shutdown().await.expect("shutdown");
    console.stop().await.expect("stop");
}
