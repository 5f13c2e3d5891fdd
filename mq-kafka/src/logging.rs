//! librdkafka's log lines as `tracing` events (target `mq_kafka::librdkafka`),
//! so they reach the application's subscriber with everything else.

use rdkafka::config::RDKafkaLogLevel;

/// Emits one librdkafka log line at the matching level.
pub(crate) fn forward(level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "mq_kafka::librdkafka", facility, "{message}")
        }
        L::Warning => tracing::warn!(target: "mq_kafka::librdkafka", facility, "{message}"),
        L::Notice | L::Info => {
            tracing::info!(target: "mq_kafka::librdkafka", facility, "{message}")
        }
        L::Debug => tracing::debug!(target: "mq_kafka::librdkafka", facility, "{message}"),
    }
}
