//! Listing and aborting producer transactions, to find and release a hung
//! one: a producer that died mid-transaction holds back every
//! `read_committed` consumer of the partitions it wrote to (the last
//! stable offset stays at its first record) until the broker's
//! transaction timeout, which may be long.
//!
//! librdkafka has no admin call for ListTransactions or
//! DescribeTransactions, so listing speaks them itself, encoded by the
//! kafka-protocol crate, over a plain TCP connection to every broker of
//! the cluster metadata: each lists the transactional ids it coordinates
//! and describes them. A broker without either request is
//! `Error::Unsupported` naming it; so is a cluster reached through TLS or
//! SASL (`kafka.security.protocol`), which these connections do not speak.
//!
//! Aborting needs no WriteTxnMarkers: a transactional producer that
//! registers the same id (`init_transactions`) makes the coordinator abort
//! the previous epoch's open transaction before it answers, the way Kafka
//! users unblock a hung transaction. That fences a live producer of the id,
//! as `kafka-transactions.sh abort` does, so only an `Ongoing` transaction
//! is aborted, never an id that is merely registered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    describe_transactions_response, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use mq_core::driver::{TopicPartition, TransactionInfo};
use mq_core::{Error, Result};
use rdkafka::producer::{BaseProducer, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{config_error, KafkaOptions};
use crate::error::{map, BACKEND};
use crate::publish::KafkaProducer;
use crate::topics::blocking;

/// The state of a transaction begun and not yet ending: the one to abort.
const ONGOING: &str = "Ongoing";

/// Largest response accepted, so a garbled length cannot allocate without
/// bound (a describe of thousands of ids stays far below).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Kafka's UNSUPPORTED_VERSION, answered to an ApiVersions request newer
/// than the broker in a body of version 0.
const UNSUPPORTED_VERSION: i16 = 35;

/// The ApiVersions version asked: 3 is the first one Kafka clients send
/// to brokers new enough for ListTransactions (Kafka 3.0).
const API_VERSIONS: i16 = 3;

/// Every transaction the cluster's coordinators know of.
pub(crate) async fn list(
    options: &KafkaOptions,
    producer: &Arc<KafkaProducer>,
) -> Result<Vec<TransactionInfo>> {
    survey(options, producer, None).await
}

/// Aborts the open transaction of `id` by fencing the id, then checks that
/// the coordinator did.
pub(crate) async fn abort(
    options: &KafkaOptions,
    producer: &Arc<KafkaProducer>,
    id: &str,
) -> Result<()> {
    let refusal = match survey(options, producer, Some(id)).await?.first() {
        Some(t) if t.state == ONGOING => None,
        Some(t) if t.open => Some(format!(
            "its transaction is already ending ({}): the coordinator completes it",
            t.state
        )),
        Some(t) => Some(format!(
            "no transaction is open under it (state {})",
            t.state
        )),
        None => Some("the cluster has no transaction under this id".to_owned()),
    };
    if let Some(reason) = refusal {
        return Err(Error::invalid("transactional id", id, reason));
    }
    let fencer: BaseProducer = options.transactional(id).create().map_err(config_error)?;
    let timeout = options.request_timeout;
    blocking(move || fencer.init_transactions(timeout))
        .await?
        .map_err(|e| map(e, "abort transaction (registering its id again)"))?;
    match survey(options, producer, Some(id)).await?.first() {
        Some(t) if t.open => Err(Error::Backend {
            backend: BACKEND,
            message: format!(
                "the transaction of {id:?} is still {} after its id was registered again: \
                 the coordinator did not abort it",
                t.state
            ),
            source: None,
        }),
        _ => Ok(()),
    }
}

/// The transactions of every broker, described; only `wanted`'s when given.
async fn survey(
    options: &KafkaOptions,
    producer: &Arc<KafkaProducer>,
    wanted: Option<&str>,
) -> Result<Vec<TransactionInfo>> {
    if let Some(protocol) = options.native.get("security.protocol") {
        if !protocol.eq_ignore_ascii_case("plaintext") {
            return Err(Error::unsupported(
                "transaction admin over TLS or SASL",
                BACKEND,
            ));
        }
    }
    let brokers = brokers(options, producer).await?;
    // A broker that cannot be asked fails the whole listing: leaving its
    // transactions out could hide the very one an operator looks for.
    let found = futures::future::try_join_all(
        brokers
            .iter()
            .map(|broker| on_broker(options, broker, wanted)),
    )
    .await?;
    // A coordinator moving while this runs may report an id twice.
    let mut seen = HashSet::new();
    Ok(found
        .into_iter()
        .flatten()
        .filter(|t| seen.insert(t.id.clone()))
        .collect())
}

/// One broker of the cluster metadata.
struct Broker {
    id: i32,
    host: String,
    port: u16,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broker {} at {}:{}", self.id, self.host, self.port)
    }
}

/// The brokers rdkafka's metadata names.
async fn brokers(options: &KafkaOptions, producer: &Arc<KafkaProducer>) -> Result<Vec<Broker>> {
    let producer = producer.clone();
    let timeout = options.request_timeout;
    let metadata = blocking(move || producer.client().fetch_metadata(None, timeout))
        .await?
        .map_err(|e| map(e, "cluster metadata"))?;
    metadata
        .brokers()
        .iter()
        .map(|b| {
            let port = u16::try_from(b.port()).map_err(|_| {
                Error::Rejected(format!(
                    "the metadata names broker {} with port {}",
                    b.id(),
                    b.port()
                ))
            })?;
            Ok(Broker {
                id: b.id(),
                host: b.host().to_owned(),
                port,
            })
        })
        .collect()
}

/// The transactions `broker` coordinates (only `wanted`'s when given),
/// listed then described on one connection.
async fn on_broker(
    options: &KafkaOptions,
    broker: &Broker,
    wanted: Option<&str>,
) -> Result<Vec<TransactionInfo>> {
    let mut conn = Connection::open(broker, options).await?;
    let versions = conn.versions().await?;
    let list_version = pick(
        &versions,
        ApiKey::ListTransactions,
        "the ListTransactions request",
    )?;
    let describe_version = pick(
        &versions,
        ApiKey::DescribeTransactions,
        "the DescribeTransactions request",
    )?;
    let listed: ListTransactionsResponse = conn
        .call(
            ApiKey::ListTransactions,
            list_version,
            &ListTransactionsRequest::default(),
        )
        .await?;
    refused(listed.error_code, "ListTransactions", broker)?;
    let ids: Vec<_> = listed
        .transaction_states
        .into_iter()
        .map(|t| t.transactional_id)
        .filter(|id| wanted.is_none_or(|w| *id.0 == *w))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let described: DescribeTransactionsResponse = conn
        .call(
            ApiKey::DescribeTransactions,
            describe_version,
            &DescribeTransactionsRequest::default().with_transactional_ids(ids),
        )
        .await?;
    let mut found = Vec::new();
    for t in described.transaction_states {
        match ResponseError::try_from_code(t.error_code) {
            None => found.push(info(t)),
            // Expired between the listing and the describe.
            Some(ResponseError::TransactionalIdNotFound) => {}
            Some(_) => refused(t.error_code, "DescribeTransactions", broker)?,
        }
    }
    Ok(found)
}

/// A described transaction in the SDK's terms.
fn info(t: describe_transactions_response::TransactionState) -> TransactionInfo {
    let state = t.transaction_state.to_string();
    // Every state between the first record and the markers holds back
    // read_committed consumers.
    let open = matches!(
        state.as_str(),
        ONGOING | "PrepareCommit" | "PrepareAbort" | "PrepareEpochFence"
    );
    let mut info = TransactionInfo::new(t.transactional_id.0.to_string(), state, open);
    if t.producer_id.0 >= 0 {
        info = info.with_producer(t.producer_id.0, t.producer_epoch);
    }
    if let Ok(ms) = u64::try_from(t.transaction_timeout_ms) {
        info = info.with_timeout(Duration::from_millis(ms));
    }
    // The broker keeps the last start time after the end: shown only while open.
    if let (true, Ok(ms)) = (open, u64::try_from(t.transaction_start_time_ms)) {
        info = info.with_started(UNIX_EPOCH + Duration::from_millis(ms));
    }
    info.with_partitions(
        t.topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().filter_map(|p| {
                    u32::try_from(*p)
                        .ok()
                        .map(|p| TopicPartition::new(&*topic.topic.0, p))
                })
            })
            .collect(),
    )
}

/// A broker's error code as an error: retriable ones (a coordinator still
/// loading or moving) as a retryable `Backend` error, others `Rejected`.
fn refused(code: i16, what: &str, broker: &Broker) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) if e.is_retriable() => Err(Error::backend(
            BACKEND,
            format!("{what} on {broker}: {e}, try again"),
            e,
        )),
        Some(e) => Err(Error::Rejected(format!("{what} on {broker}: {e}"))),
    }
}

/// The newest version of `api` both this crate and the broker (its
/// ApiVersions answer) speak, or `Unsupported` naming `name`.
fn pick(versions: &ApiVersionsResponse, api: ApiKey, name: &'static str) -> Result<i16> {
    let ours = api.valid_versions();
    versions
        .api_keys
        .iter()
        .find(|k| k.api_key == api as i16)
        .map(|k| (k.min_version.max(ours.min), k.max_version.min(ours.max)))
        .filter(|(low, high)| low <= high)
        .map(|(_, high)| high)
        .ok_or_else(|| Error::unsupported(name, BACKEND))
}

/// A request-response connection to one broker.
struct Connection<'a> {
    stream: TcpStream,
    broker: &'a Broker,
    timeout: Duration,
    correlation: i32,
}

impl<'a> Connection<'a> {
    async fn open(broker: &'a Broker, options: &KafkaOptions) -> Result<Connection<'a>> {
        let connect = TcpStream::connect((broker.host.as_str(), broker.port));
        let stream = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| Error::Timeout(options.connect_timeout))?
            .map_err(|e| Error::connection(format!("connecting to {broker}"), e))?;
        Ok(Connection {
            stream,
            broker,
            timeout: options.request_timeout,
            correlation: 0,
        })
    }

    /// ApiVersions: which requests, in which versions, the broker speaks.
    async fn versions(&mut self) -> Result<ApiVersionsResponse> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("mq"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self
            .exchange(ApiKey::ApiVersions, API_VERSIONS, &request)
            .await?;
        // A broker older than ApiVersions v3 answers in version 0 with
        // this error first, and is older than ListTransactions too.
        if body.starts_with(&UNSUPPORTED_VERSION.to_be_bytes()) {
            return Err(Error::unsupported("the ListTransactions request", BACKEND));
        }
        let answer = ApiVersionsResponse::decode(&mut body, API_VERSIONS)
            .map_err(|e| self.garbled("ApiVersions", e))?;
        refused(answer.error_code, "ApiVersions", self.broker)?;
        Ok(answer)
    }

    /// Sends `request` as `api` in `version` and decodes the answer.
    async fn call<P: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &impl Encodable,
    ) -> Result<P> {
        let mut body = self.exchange(api, version, request).await?;
        P::decode(&mut body, version).map_err(|e| self.garbled(&format!("{api:?}"), e))
    }

    /// One request and the body of its answer (after the response header),
    /// within the request time-out.
    async fn exchange(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &impl Encodable,
    ) -> Result<Bytes> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("mq")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, api.request_header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| Error::codec(format!("encoding a {api:?} request"), e))?;
        let length = i32::try_from(frame.len() - 4)
            .map_err(|_| Error::codec("a request over 2 GiB", format!("{api:?}")))?;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        let timeout = self.timeout;
        let mut body = tokio::time::timeout(timeout, self.round_trip(&frame))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| self.garbled(&format!("{api:?}"), e))?;
        if header.correlation_id != self.correlation {
            return Err(self.garbled(
                &format!("{api:?}"),
                format!(
                    "answer to request {} where {} was asked",
                    header.correlation_id, self.correlation
                ),
            ));
        }
        Ok(body)
    }

    /// Writes one frame and reads one back.
    async fn round_trip(&mut self, frame: &[u8]) -> Result<Bytes> {
        let broken =
            |e: std::io::Error| Error::connection(format!("talking to {}", self.broker), e);
        self.stream.write_all(frame).await.map_err(broken)?;
        let length = self.stream.read_i32().await.map_err(broken)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|n| (4..=MAX_RESPONSE).contains(n))
            .ok_or_else(|| {
                Error::connection(
                    format!("{} sent a frame of {length} bytes", self.broker),
                    "bad frame length",
                )
            })?;
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.map_err(broken)?;
        Ok(Bytes::from(body))
    }

    /// An answer that cannot be decoded.
    fn garbled(&self, what: &str, e: impl Into<mq_core::error::BoxError>) -> Error {
        Error::codec(format!("decoding a {what} answer of {}", self.broker), e)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    use kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};

    use super::*;

    #[test]
    fn versions_are_the_newest_both_speak() {
        // What noida-db answers: ListTransactions 0-1, DescribeTransactions 0.
        let versions = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ListTransactions as i16)
                .with_max_version(1),
            ApiVersion::default()
                .with_api_key(ApiKey::DescribeTransactions as i16)
                .with_min_version(5)
                .with_max_version(7),
        ]);
        assert_eq!(
            pick(&versions, ApiKey::ListTransactions, "list").unwrap(),
            1
        );
        for api in [ApiKey::DescribeTransactions, ApiKey::WriteTxnMarkers] {
            let err = pick(&versions, api, "the request").unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Unsupported {
                        feature: "the request",
                        backend: "kafka"
                    }
                ),
                "{api:?}: {err:?}"
            );
        }
    }

    #[test]
    fn described_transactions_map_to_infos() {
        let state = |name: &'static str| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("t")))
                .with_transaction_state(StrBytes::from_static_str(name))
                .with_transaction_timeout_ms(60_000)
                .with_transaction_start_time_ms(1_700_000_000_000)
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(2)
                .with_topics(vec![TopicData::default()
                    .with_topic(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![3, -1])])
        };
        let open = info(state("Ongoing"));
        assert!(open.open);
        assert_eq!((open.producer_id, open.producer_epoch), (Some(7), Some(2)));
        assert_eq!(open.timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            open.started,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
        assert_eq!(open.partitions, vec![TopicPartition::new("orders", 3)]);
        assert!(info(state("PrepareCommit")).open);
        let done = info(state("CompleteAbort").with_producer_id(ProducerId(-1)));
        assert!(!done.open);
        assert_eq!((done.started, done.producer_id), (None, None));
    }
}
