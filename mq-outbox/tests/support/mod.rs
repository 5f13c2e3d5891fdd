//! What the outbox tests share: a scratch PostgreSQL database per test,
//! SQLite files, backends to relay to, and reading back what was published.

// Each test file uses a part of this module.
#![allow(dead_code)]

pub mod writers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use mq_core::{Client, Config, StartFrom};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool, SqlitePool};

/// The server tests use: `MQ_TEST_POSTGRES_URL`, else the local default.
pub fn postgres_url() -> String {
    std::env::var("MQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// Whether CI asked for brokers (and databases) to be mandatory.
pub fn required() -> bool {
    std::env::var("MQ_REQUIRE_BROKERS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A database created for one test, dropped by [`Scratch::drop`].
pub struct Scratch {
    pub pool: PgPool,
    /// A URL naming the scratch database, for child processes.
    pub url: String,
    name: String,
    admin: PgPool,
}

/// A fresh PostgreSQL database with the outbox tables, or `None` (with the
/// reason printed) when no server answers and none is required.
pub async fn postgres(test: &str) -> Option<Scratch> {
    let url = postgres_url();
    let options = match PgConnectOptions::from_str(&url) {
        Ok(options) => options,
        Err(error) => panic!("MQ_TEST_POSTGRES_URL {url:?} does not parse: {error}"),
    };
    let admin = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        Err(error) if !required() => {
            eprintln!("skipping {test}: no PostgreSQL at {url} ({error}); set MQ_TEST_POSTGRES_URL or start one");
            return None;
        }
        Err(error) => {
            panic!("MQ_REQUIRE_BROKERS=1 but PostgreSQL at {url} is unreachable: {error}")
        }
    };
    let name = format!("mq_outbox_{}_{}", test, uuid::Uuid::now_v7().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the scratch database");
    let options = options.database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(options.clone())
        .await
        .expect("connect to the scratch database");
    mq_outbox::postgres::migrate(&pool).await.expect("migrate");
    Some(Scratch {
        pool,
        url: options.to_url_lossy().to_string(),
        name,
        admin,
    })
}

impl Scratch {
    /// Another pool on the same database, as another process would have.
    pub async fn other_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(10)
            .connect(&self.url)
            .await
            .expect("connect again")
    }

    /// Drops the database (its connections are closed first).
    pub async fn drop(self) {
        self.pool.close().await;
        let _ = self
            .admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await;
    }
}

/// A new directory for SQLite files and native logs, kept for inspection.
pub fn fresh_dir(name: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("mq-outbox-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
        .keep()
}

/// A migrated SQLite database in `dir`.
pub async fn sqlite(dir: &std::path::Path) -> SqlitePool {
    let pool = mq_outbox::sqlite::open(dir.join("app.db"))
        .await
        .expect("open sqlite");
    mq_outbox::sqlite::migrate(&pool).await.expect("migrate");
    pool
}

/// A client on the native engine in `dir` (acks after fsync).
pub async fn native(dir: &std::path::Path) -> Client {
    let config = Config::from_url(&format!("native://{}", dir.display())).expect("native url");
    Client::new(
        mq_native::NativeDriver::open(&config)
            .await
            .expect("open native"),
    )
}

/// One published message as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub key: Option<String>,
    pub payload: String,
    pub id: String,
}

/// Everything in `topic`, read by a fresh group from the start, until
/// `expected` messages came and then `quiet` passed without more.
pub async fn read_all(client: &Client, topic: &str, expected: usize, quiet: Duration) -> Vec<Got> {
    let group = format!("verify-{}", uuid::Uuid::now_v7().simple());
    let mut stream = client
        .consumer(topic, group.as_str())
        .start_from(StartFrom::Earliest)
        .prefetch(1000)
        .subscribe()
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let wait = if got.len() >= expected {
            quiet
        } else {
            Duration::from_secs(5)
        };
        if tokio::time::Instant::now() > deadline {
            break;
        }
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(delivery))) => {
                let message = delivery.message();
                got.push(Got {
                    key: message.key().map(str::to_owned),
                    payload: message.payload_str().expect("utf-8").to_owned(),
                    id: message.id().map(|id| id.to_string()).unwrap_or_default(),
                });
                delivery.ack().await.expect("ack");
            }
            Ok(Some(Err(error))) => panic!("consuming {topic}: {error}"),
            Ok(None) => break,
            Err(_) if got.len() >= expected => break,
            Err(_) => {}
        }
    }
    stream.close().await.expect("close");
    got
}

/// Payloads per key, in the order they were published.
pub fn by_key(got: &[Got]) -> HashMap<String, Vec<String>> {
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for g in got {
        keys.entry(g.key.clone().unwrap_or_default())
            .or_default()
            .push(g.payload.clone());
    }
    keys
}

/// `got` without repeats of a message id (the copies a crash may cause),
/// keeping each message's first delivery.
pub fn first_copies(got: &[Got]) -> Vec<Got> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|g| seen.insert(g.id.clone()))
        .cloned()
        .collect()
}
