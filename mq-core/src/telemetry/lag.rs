//! The consumer lag gauge: a running consumer samples its group's lag.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute as semconv;
use tokio::sync::watch;

use super::{messaging_system, Telemetry};
use crate::driver::Driver;

/// Reports the lag of `group` on `topic` every interval until `stop`.
pub(crate) fn spawn_lag_reporter(
    telemetry: Arc<Telemetry>,
    driver: Arc<dyn Driver>,
    topic: String,
    group: String,
    mut stop: watch::Receiver<bool>,
) {
    let Some(interval) = telemetry.lag_interval() else {
        return;
    };
    let system = messaging_system(driver.backend());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {}
            }
            let lags = match driver.lag(&topic, &group).await {
                Ok(lags) => lags,
                Err(error) => {
                    tracing::debug!(%error, topic, group, "lag sample failed");
                    continue;
                }
            };
            for partition in lags {
                telemetry.metrics().lag.record(
                    partition.lag,
                    &[
                        KeyValue::new(semconv::MESSAGING_SYSTEM, system),
                        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.clone()),
                        KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.clone()),
                        KeyValue::new(
                            semconv::MESSAGING_DESTINATION_PARTITION_ID,
                            partition.partition.to_string(),
                        ),
                    ],
                );
            }
        }
    });
}
