//! librdkafka errors as `mq_core::Error`s a caller can act on.

use std::time::Duration;

use mq_core::Error;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The backend name in errors and telemetry.
pub(crate) const BACKEND: &str = "kafka";

/// Maps an rdkafka error met while doing `what`.
pub(crate) fn map(error: KafkaError, what: &str) -> Error {
    let Some(code) = error.rdkafka_error_code() else {
        return Error::backend(BACKEND, what.to_owned(), error);
    };
    if unsupported(code, &error) {
        return Error::Unsupported {
            feature: feature_of(what),
            backend: BACKEND,
        };
    }
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => {
            Error::Timeout(TIMEOUT_HINT)
        }
        C::MessageSizeTooLarge | C::InvalidMessageSize => Error::Rejected(format!(
            "{what}: the broker refused the message as too large ({error})"
        )),
        C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve
        | C::BrokerNotAvailable
        | C::NetworkException
        | C::NotCoordinator
        | C::CoordinatorNotAvailable
        | C::NotLeaderForPartition
        | C::LeaderNotAvailable => Error::connection(format!("{what}: {error}"), error),
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::InvalidTopic
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::PolicyViolation
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::InvalidArgument => Error::Rejected(format!("{what}: {error}")),
        C::ProducerFenced | C::InvalidProducerEpoch | C::Fenced => Error::Rejected(format!(
            "{what}: this producer was fenced by a newer one with the same transactional.id \
             or group generation ({error})"
        )),
        _ => Error::backend(BACKEND, what.to_owned(), error),
    }
}

/// What [`Error::Timeout`] reports when librdkafka timed out on its own
/// schedule (`message.timeout.ms`, `request.timeout.ms`).
const TIMEOUT_HINT: Duration = Duration::from_secs(30);

/// Whether the broker's answer means it lacks the feature (transactions on
/// a broker without them, an API version it does not speak).
fn unsupported(code: RDKafkaErrorCode, error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::TransactionalIdAuthorizationFailed
            | C::UnsupportedVersion
            | C::UnsupportedFeature
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
    ) || error.to_string().contains("not supported by broker")
}

/// The feature named in an `Unsupported` error for a failed `what`.
fn feature_of(what: &str) -> &'static str {
    if what.contains("transaction") || what.contains("offsets") {
        "transactions"
    } else if what.contains("topic") {
        "topic administration"
    } else {
        "this broker's protocol version"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let e = map(
            KafkaError::ConsumerCommit(RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
            "init transactions",
        );
        assert!(
            matches!(
                e,
                Error::Unsupported {
                    feature: "transactions",
                    ..
                }
            ),
            "{e}"
        );
        let e = map(
            KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
            "connect",
        );
        assert!(matches!(e, Error::Connection { .. }), "{e}");
        let e = map(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            "publish",
        );
        assert!(matches!(e, Error::Timeout(_)), "{e}");
    }
}
