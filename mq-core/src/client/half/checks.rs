//! Check-back on brokers that keep prepared messages themselves: the
//! driver's check stream is put to the application's checker, and each
//! answer goes back to the broker.

use std::sync::Arc;
use std::time::Duration;

use super::{Stop, TransactionChecker, CHECK_LIMIT};
use crate::client::Client;
use crate::driver::HalfOutcome;

pub(super) async fn check_back(
    client: Client,
    group: String,
    checker: Arc<dyn TransactionChecker>,
    mut stop: Stop,
) {
    let driver = client.driver().clone();
    let checks = loop {
        match driver.half_checks(&group).await {
            Ok(checks) => break checks,
            Err(error) => {
                tracing::warn!(%error, %group, "cannot receive half-message checks; retrying");
                if stop.pause_or_stop(Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    loop {
        let check = tokio::select! {
            _ = stop.stopped() => break,
            check = checks.next() => check,
        };
        let Some(check) = check else { break };
        let id = check.token.id;
        let outcome = tokio::time::timeout(CHECK_LIMIT, checker.check(&check.message))
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(%group, %id, "the transaction checker took over {CHECK_LIMIT:?}; asking again later");
                HalfOutcome::Unknown
            });
        if let Err(error) = driver.resolve_half(&group, check.token, outcome).await {
            // Unresolved, it is offered again after the broker's interval.
            tracing::warn!(%error, %group, %id, "answering a half-message check failed");
        }
    }
    if let Err(error) = checks.close().await {
        tracing::debug!(%error, "closing the half-message checks failed");
    }
}
