//! Running scenarios: fresh clients, skip rules, broker discovery.

use std::future::Future;
use std::pin::Pin;

use mq_core::{Client, Config};

use crate::context::{Context, Skip};

/// How a scenario ended (failures panic, as in any test).
#[derive(Debug)]
pub enum Outcome {
    /// Everything it checks held.
    Passed,
    /// It could not run here; the reason names the missing capability.
    Skipped(String),
}

/// Whether CI asked for brokers to be mandatory (`MQ_REQUIRE_BROKERS=1`).
pub fn require_brokers() -> bool {
    std::env::var("MQ_REQUIRE_BROKERS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Connects to the broker named by env var `env` (or `default_url`) with
/// `connect`. On failure prints why and returns `None` so the test skips, or
/// panics when [`require_brokers`] is set.
pub async fn connect_or_skip<F, Fut>(env: &str, default_url: &str, connect: F) -> Option<Client>
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let url = std::env::var(env).unwrap_or_else(|_| default_url.to_owned());
    let config = match Config::from_url(&url) {
        Ok(c) => c,
        Err(e) => panic!("{env} is not a valid URL: {e}"),
    };
    let shown = config.to_string();
    match connect(config).await {
        Ok(client) => Some(client),
        Err(error) if require_brokers() => {
            panic!("MQ_REQUIRE_BROKERS=1 but the broker at {shown} is unreachable: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: no broker at {shown} ({error}); set {env} or start it");
            None
        }
    }
}

/// Runs one scenario on a fresh client from `factory`; prints skips.
pub async fn run_scenario<F, Fut, S>(name: &str, factory: F, scenario: S) -> Outcome
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Client>>,
    S: for<'a> FnOnce(&'a Context) -> Pin<Box<dyn Future<Output = Result<(), Skip>> + Send + 'a>>,
{
    let Some(client) = factory().await else {
        return Outcome::Skipped("no broker".into());
    };
    let run = uuid::Uuid::now_v7().simple().to_string();
    let ctx = Context::new(client, run[run.len() - 12..].to_owned());
    let result = scenario(&ctx).await;
    ctx.clean_up().await;
    let _ = ctx.client.close().await;
    match result {
        Ok(()) => Outcome::Passed,
        Err(Skip(reason)) => {
            eprintln!("SKIPPED {name}: {reason}");
            Outcome::Skipped(reason)
        }
    }
}
