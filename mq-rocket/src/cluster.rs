//! The driver's view of the cluster: one client instance for requests that
//! need no producer or consumer (routes, offsets, pulls for browsing, ends
//! of half messages, the name servers' key-value store), and the queues of
//! each topic in mq's partition order.
//!
//! **Partitions**: a topic's queues sorted by broker name, then queue id,
//! numbered from 0. On one broker that is the queue id; the producer's key
//! hash and the consumer's partitions both use this numbering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use mq_core::{Error, Result};
use parking_lot::Mutex;
use rocketmq_client_rust::{ClientConfig, ClientInstanceHandle};
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_protocol::code::request_code::RequestCode;
use rocketmq_protocol::protocol::body::kv_table::KVTable;
use rocketmq_protocol::protocol::header::namesrv::kv_config_header::{
    DeleteKVConfigRequestHeader, GetKVConfigRequestHeader, GetKVConfigResponseHeader,
    GetKVListByNamespaceRequestHeader, PutKVConfigRequestHeader,
};
use rocketmq_protocol::protocol::header::query_consumer_offset_request_header::QueryConsumerOffsetRequestHeader;
use rocketmq_protocol::protocol::header::update_consumer_offset_conditional_header::UpdateConsumerOffsetConditionalHeader;
use rocketmq_protocol::protocol::header::update_consumer_offset_header::UpdateConsumerOffsetRequestHeader;
use rocketmq_protocol::protocol::remoting_command_compat::create_request_command;
use rocketmq_protocol::protocol::route::topic_route_data::TopicRouteData;
use rocketmq_protocol::protocol::RemotingCommand;

use crate::error::{code, is_missing, map};
use crate::options::RocketOptions;
use crate::runtime::Runtime;

/// How long a topic's queue list is trusted before it is read again.
const ROUTE_TTL: Duration = Duration::from_secs(10);

/// A topic's queues in partition order, with the brokers' addresses.
#[derive(Debug)]
pub(crate) struct Route {
    /// The queues; a partition is an index here.
    pub(crate) queues: Vec<MessageQueue>,
    /// Master address of each broker name.
    pub(crate) masters: HashMap<CheetahString, CheetahString>,
}

impl Route {
    fn from_data(topic: &str, data: &TopicRouteData) -> Route {
        let mut masters = HashMap::new();
        for broker in &data.broker_datas {
            if let Some(addr) = broker.broker_addrs().get(&0) {
                masters.insert(broker.broker_name().clone(), addr.clone());
            }
        }
        let mut queues: Vec<MessageQueue> = data
            .queue_datas
            .iter()
            .filter(|q| masters.contains_key(&q.broker_name))
            .flat_map(|q| {
                (0..q.write_queue_nums.max(q.read_queue_nums))
                    .map(|id| MessageQueue::from_parts(topic, q.broker_name.clone(), id as i32))
            })
            .collect();
        queues.sort_by(|a, b| {
            (a.broker_name().as_str(), a.queue_id()).cmp(&(b.broker_name().as_str(), b.queue_id()))
        });
        Route { queues, masters }
    }

    /// The partition of `queue`, if it is one of this topic's.
    pub(crate) fn partition_of(&self, queue: &MessageQueue) -> Option<u32> {
        self.queues
            .iter()
            .position(|q| {
                q.broker_name() == queue.broker_name() && q.queue_id() == queue.queue_id()
            })
            .map(|p| p as u32)
    }

    /// The master address of `queue`'s broker.
    pub(crate) fn master_of(&self, queue: &MessageQueue) -> Result<&CheetahString> {
        self.masters.get(queue.broker_name()).ok_or_else(|| {
            Error::connection(
                format!(
                    "broker {} of {} has no master",
                    queue.broker_name(),
                    queue.topic()
                ),
                std::io::Error::other("no master"),
            )
        })
    }
}

/// The cluster client and the route cache.
pub(crate) struct Cluster {
    handle: ClientInstanceHandle,
    routes: Mutex<HashMap<String, (Instant, Arc<Route>)>>,
    timeout: u64,
    name_servers: Vec<CheetahString>,
}

/// Distinguishes the client instances of drivers in one process.
static DOMAINS: AtomicU64 = AtomicU64::new(1);

/// A client identity unique to this process and call: the broker tells
/// group members apart by it, so members in one process must not share it.
pub(crate) fn instance_name(role: &str) -> String {
    format!(
        "mq-{role}-{}-{}",
        std::process::id(),
        DOMAINS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client configuration for `options`' name servers under a fresh identity.
pub(crate) fn client_config(options: &RocketOptions, role: &str) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.set_namesrv_addr(CheetahString::from_string(options.name_servers.clone()));
    config.set_instance_name(CheetahString::from_string(instance_name(role)));
    config.set_mq_client_api_timeout(options.request_millis().clamp(100, 60_000));
    config.set_persist_consumer_offset_interval(
        options.commit_interval.as_millis().clamp(1_000, 60_000) as u32,
    );
    config.set_poll_name_server_interval(10_000);
    config.set_heartbeat_broker_interval(10_000);
    config
}

impl Cluster {
    /// Starts the cluster client; `connect` then checks a name server answers.
    pub(crate) async fn start(runtime: &Runtime, options: &RocketOptions) -> Result<Cluster> {
        let domain = DOMAINS.fetch_add(1, Ordering::Relaxed);
        let handle = ClientInstanceHandle::get_or_create(
            &runtime.client(),
            domain,
            client_config(options, "cluster"),
            None,
        )
        .map_err(|e| map(e, "creating the cluster client"))?;
        handle
            .start()
            .await
            .map_err(|e| map(e, "starting the cluster client"))?;
        Ok(Cluster {
            handle,
            routes: Mutex::default(),
            timeout: options.request_millis(),
            name_servers: options
                .name_servers
                .split(';')
                .map(|a| CheetahString::from_string(a.to_owned()))
                .collect(),
        })
    }

    /// The request time-out in the client's milliseconds.
    pub(crate) fn timeout(&self) -> u64 {
        self.timeout
    }

    /// The client instance, for requests of its own.
    pub(crate) fn handle(&self) -> &ClientInstanceHandle {
        &self.handle
    }

    /// The route of `topic` from the name servers, `None` when it has none.
    pub(crate) async fn fetch_route(&self, topic: &str) -> Result<Option<Arc<Route>>> {
        let broker_topic = crate::names::to_broker(topic);
        match self.handle.topic_route(&broker_topic, self.timeout).await {
            Ok(Some(data)) => {
                let route = Arc::new(Route::from_data(&broker_topic, &data));
                if route.queues.is_empty() {
                    return Ok(None);
                }
                self.routes
                    .lock()
                    .insert(topic.to_owned(), (Instant::now(), route.clone()));
                Ok(Some(route))
            }
            Ok(None) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(map(e, &format!("reading the route of {topic}"))),
        }
    }

    /// The route of `topic`, cached.
    pub(crate) async fn route(&self, topic: &str) -> Result<Option<Arc<Route>>> {
        if let Some((at, route)) = self.routes.lock().get(topic) {
            if at.elapsed() < ROUTE_TTL {
                return Ok(Some(route.clone()));
            }
        }
        self.fetch_route(topic).await
    }

    /// Forgets the cached route of `topic`.
    pub(crate) fn forget(&self, topic: &str) {
        self.routes.lock().remove(topic);
    }

    /// One past the newest message of `queue`.
    pub(crate) async fn max_offset(&self, route: &Route, queue: &MessageQueue) -> Result<i64> {
        self.handle
            .max_offset(route.master_of(queue)?, queue, self.timeout)
            .await
            .map_err(|e| map(e, &format!("reading the end of {queue}")))
    }

    /// The oldest retained message of `queue`.
    pub(crate) async fn min_offset(&self, route: &Route, queue: &MessageQueue) -> Result<i64> {
        self.handle
            .min_offset(route.master_of(queue)?, queue, self.timeout)
            .await
            .map_err(|e| map(e, &format!("reading the start of {queue}")))
    }

    /// `group`'s committed offset on `queue`, `None` when it has none.
    pub(crate) async fn committed(
        &self,
        route: &Route,
        queue: &MessageQueue,
        group: &str,
    ) -> Result<Option<i64>> {
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: CheetahString::from_string(crate::names::to_broker(group)),
            topic: queue.topic().clone(),
            queue_id: queue.queue_id(),
            set_zero_if_not_found: Some(false),
            topic_request_header: None,
        };
        match self
            .handle
            .query_consumer_offset(route.master_of(queue)?, header, self.timeout)
            .await
        {
            Ok(offset) if offset >= 0 => Ok(Some(offset)),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(map(e, &format!("reading {group}'s offset on {queue}"))),
        }
    }

    /// Sets `group`'s committed offset on `queue`.
    pub(crate) async fn commit(
        &self,
        route: &Route,
        queue: &MessageQueue,
        group: &str,
        offset: i64,
    ) -> Result<()> {
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: CheetahString::from_string(crate::names::to_broker(group)),
            topic: queue.topic().clone(),
            queue_id: queue.queue_id(),
            commit_offset: offset,
            topic_request_header: None,
        };
        self.handle
            .update_consumer_offset(route.master_of(queue)?, header, self.timeout)
            .await
            .map_err(|e| map(e, &format!("setting {group}'s offset on {queue}")))
    }

    /// Moves `group`'s committed offset on `queue` to `offset`, backwards
    /// too (a plain commit only moves forwards).
    pub(crate) async fn reposition(
        &self,
        route: &Route,
        queue: &MessageQueue,
        group: &str,
        offset: i64,
    ) -> Result<()> {
        let expected = self.committed(route, queue, group).await?.unwrap_or(-1);
        if expected == offset {
            return Ok(());
        }
        let header = UpdateConsumerOffsetConditionalHeader {
            consumer_group: CheetahString::from_string(crate::names::to_broker(group)),
            topic: queue.topic().clone(),
            queue_id: queue.queue_id(),
            expected_offset: expected,
            new_offset: offset,
        };
        let request = create_request_command(RequestCode::UpdateConsumerOffsetConditional, header);
        let response = self
            .handle
            .invoke_remoting(route.master_of(queue)?, request, self.timeout)
            .await
            .map_err(|e| map(e, &format!("moving {group}'s offset on {queue}")))?;
        if response.code() != 0 {
            return Err(Error::Rejected(format!(
                "moving {group}'s offset on {queue} to {offset}: broker code {} {}",
                response.code(),
                response.remark().map(|r| r.to_string()).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The value of `key` in `namespace` of the name servers' key-value
    /// store, from the first name server that has it; an error only when
    /// none answered.
    pub(crate) async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let (mut failure, mut answered) = (None, false);
        for addr in &self.name_servers {
            let header = GetKVConfigRequestHeader::new(namespace.to_owned(), key.to_owned());
            let request = create_request_command(RequestCode::GetKvConfig, header);
            match self.name_server(addr, request, "reading", key).await {
                Ok(response) => {
                    let value = response
                        .decode_command_custom_header::<GetKVConfigResponseHeader>()
                        .ok()
                        .and_then(|h| h.value);
                    if let Some(value) = value {
                        return Ok(Some(value.to_string()));
                    }
                    answered = true;
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if !answered => Err(e),
            _ => Ok(None),
        }
    }

    /// Sets `key` in `namespace` on every name server; an error only when
    /// none stored it.
    pub(crate) async fn kv_put(&self, namespace: &str, key: &str, value: &str) -> Result<()> {
        let (mut failure, mut stored) = (None, false);
        for addr in &self.name_servers {
            let (namespace, key, value) = (namespace.to_owned(), key.to_owned(), value.to_owned());
            let header = PutKVConfigRequestHeader::new(namespace, key.clone(), value);
            let request = create_request_command(RequestCode::PutKvConfig, header);
            match self.name_server(addr, request, "writing", &key).await {
                Ok(_) => stored = true,
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if !stored => Err(e),
            _ => Ok(()),
        }
    }

    /// The keys of `namespace` on any name server; an error only when none
    /// answered.
    pub(crate) async fn kv_keys(&self, namespace: &str) -> Result<Vec<String>> {
        let (mut failure, mut answered) = (None, false);
        let mut keys = std::collections::BTreeSet::new();
        for addr in &self.name_servers {
            let header = GetKVListByNamespaceRequestHeader::new(namespace.to_owned());
            let request = create_request_command(RequestCode::GetKvlistByNamespace, header);
            match self.name_server(addr, request, "listing", namespace).await {
                Ok(response) => {
                    answered = true;
                    let table = response
                        .get_body()
                        .and_then(|body| serde_json::from_slice::<KVTable>(body).ok());
                    keys.extend(table.into_iter().flat_map(|t| t.table.into_keys()));
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if !answered => Err(e),
            _ => Ok(keys.into_iter().map(|k| k.to_string()).collect()),
        }
    }

    /// Removes `key` from `namespace` on every name server.
    pub(crate) async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()> {
        let mut failure = None;
        for addr in &self.name_servers {
            let header = DeleteKVConfigRequestHeader::new(namespace.to_owned(), key.to_owned());
            let request = create_request_command(RequestCode::DeleteKvConfig, header);
            if let Err(e) = self.name_server(addr, request, "deleting", key).await {
                failure = Some(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Sends a key-value `request` about `key` to the name server at
    /// `addr`; its answer unless it refused (not finding the key is an
    /// answer).
    async fn name_server(
        &self,
        addr: &CheetahString,
        request: RemotingCommand,
        doing: &str,
        key: &str,
    ) -> Result<RemotingCommand> {
        let response = self
            .handle
            .invoke_remoting(addr, request, self.timeout)
            .await
            .map_err(|e| map(e, &format!("{doing} {key} on the name servers")))?;
        match response.code() {
            0 | code::QUERY_NOT_FOUND => Ok(response),
            refused => Err(Error::Rejected(format!(
                "{doing} {key} on the name servers: code {refused} {}",
                response.remark().map(|r| r.to_string()).unwrap_or_default()
            ))),
        }
    }

    /// Stops the cluster client.
    pub(crate) async fn shutdown(&self) {
        self.handle.shutdown_owned().await;
    }
}
