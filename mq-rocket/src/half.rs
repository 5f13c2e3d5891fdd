//! Half messages on RocketMQ's transactional producer.
//!
//! - **Publish**: one transactional producer per producer group, started on
//!   first use (the broker asks a running producer of the group about
//!   prepared messages). Its local-transaction callback answers `UNKNOWN`:
//!   the outcome comes later, from [`Halves::resolve`].
//! - **Resolve**: an `END_TRANSACTION` request sent two-way to the
//!   message's broker, so `resolve_half` returns once the broker has
//!   committed or dropped it. The handle carries what the request needs
//!   (broker, prepared-queue and commit-log offsets, message and
//!   transaction ids). The first outcome per message stands: a repeat in
//!   this process changes nothing (the broker itself would write a second
//!   committed copy).
//! - **Check-back**: the broker asks the group's producer about prepared
//!   messages left unresolved past `transactionTimeout`; the check callback
//!   (synchronous, on a client thread) answers `UNKNOWN` at once and puts a
//!   [`HalfCheck`] on the group's stream, whose answer comes back through
//!   `resolve_half`. Checks of messages already resolved here are not put
//!   to the application again. With no stream open the check is dropped:
//!   the broker asks again after `transactionCheckInterval`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use cheetah_string::CheetahString;
use mq_core::driver::{DriverHalfChecks, HalfCheck, HalfOutcome, HalfToken};
use mq_core::{Error, Message, MessageId, Receipt, Result};
use parking_lot::Mutex;
use rocketmq_client_rust::{LocalTransactionState, TransactionListener, TransactionMQProducer};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::sys_flag::message_sys_flag::MessageSysFlag;
use rocketmq_protocol::code::request_code::RequestCode;
use rocketmq_protocol::protocol::header::end_transaction_request_header::EndTransactionRequestHeader;
use rocketmq_protocol::protocol::remoting_command_compat::create_request_command;
use rocketmq_protocol::rpc::rpc_request_header::RpcRequestHeader;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cluster::{client_config, Cluster};
use crate::codec;
use crate::error::{map, BACKEND};
use crate::options::RocketOptions;
use crate::runtime::Runtime;

/// A topic every broker routes (the auto-create key topic).
const ROUTE_SEED: &str = "TBW102";

/// Outcomes remembered per process, to keep the first one (oldest dropped).
const REMEMBERED: usize = 100_000;

/// What `END_TRANSACTION` needs, as the token's bytes.
#[derive(Serialize, Deserialize)]
struct Handle {
    topic: String,
    broker: String,
    addr: String,
    queue_offset: i64,
    commit_log_offset: i64,
    msg_id: String,
    transaction_id: Option<String>,
    from_check: bool,
}

/// One producer group's producer and check stream.
struct Group {
    producer: TransactionMQProducer,
    checks: Arc<Checks>,
}

/// The check stream's shared end.
struct Checks {
    sender: mpsc::Sender<HalfCheck>,
    receiver: tokio::sync::Mutex<mpsc::Receiver<HalfCheck>>,
    open: std::sync::atomic::AtomicUsize,
    resolved: Arc<Mutex<Resolved>>,
}

/// Outcomes given in this process.
#[derive(Default)]
struct Resolved {
    outcomes: HashMap<MessageId, HalfOutcome>,
    order: VecDeque<MessageId>,
}

impl Resolved {
    fn first(&mut self, id: MessageId, outcome: HalfOutcome) -> bool {
        if self.outcomes.contains_key(&id) {
            return false;
        }
        self.outcomes.insert(id, outcome);
        self.order.push_back(id);
        if self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
        true
    }
}

/// The transactional callbacks of one group.
struct Callbacks {
    checks: Arc<Checks>,
}

impl TransactionListener for Callbacks {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        _arg: Option<&(dyn std::any::Any + Send + Sync)>,
    ) -> LocalTransactionState {
        LocalTransactionState::Unknown
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let checks = &self.checks;
        if checks.open.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return LocalTransactionState::Unknown;
        }
        let topic: Arc<str> = Arc::from(crate::names::from_broker(msg.message.topic().as_str()));
        let message = codec::decode(&topic, msg);
        let Some(id) = message.id() else {
            return LocalTransactionState::Unknown;
        };
        if checks.resolved.lock().outcomes.contains_key(&id) {
            return LocalTransactionState::Unknown;
        }
        let times: u32 = msg
            .message
            .property("TRANSACTION_CHECK_TIMES")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        let handle = Handle {
            topic: msg.message.topic().to_string(),
            broker: msg.broker_name.to_string(),
            addr: msg.store_host.to_string(),
            queue_offset: msg.queue_offset,
            commit_log_offset: msg.commit_log_offset,
            msg_id: msg
                .message
                .property("UNIQ_KEY")
                .unwrap_or(msg.msg_id.as_str())
                .to_owned(),
            transaction_id: msg.message.transaction_id().map(str::to_owned),
            from_check: true,
        };
        let Ok(bytes) = serde_json::to_vec(&handle) else {
            return LocalTransactionState::Unknown;
        };
        let _ = checks.sender.try_send(HalfCheck {
            message,
            token: HalfToken::new(id, bytes),
            prior_checks: times.saturating_sub(1),
        });
        LocalTransactionState::Unknown
    }
}

/// The half-message producers of one driver, by producer group.
pub(crate) struct Halves {
    groups: tokio::sync::Mutex<HashMap<String, Arc<Group>>>,
    resolved: Arc<Mutex<Resolved>>,
    options: RocketOptions,
}

impl Halves {
    pub(crate) fn new(options: RocketOptions) -> Halves {
        Halves {
            groups: Default::default(),
            resolved: Default::default(),
            options,
        }
    }

    async fn group(&self, runtime: &Runtime, group: &str) -> Result<Arc<Group>> {
        crate::names::check_group(group)?;
        let mut groups = self.groups.lock().await;
        if let Some(g) = groups.get(group) {
            return Ok(g.clone());
        }
        let (sender, receiver) = mpsc::channel(4096);
        let checks = Arc::new(Checks {
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
            open: Default::default(),
            resolved: self.resolved.clone(),
        });
        let mut producer = TransactionMQProducer::builder(runtime.client())
            .client_config(client_config(&self.options, "half"))
            .name_server_addr(self.options.name_servers.clone())
            .producer_group(crate::names::to_broker(group))
            .send_msg_timeout(self.options.request_millis() as u32)
            .max_message_size(self.options.max_message_bytes as u32 + 64 * 1024)
            .transaction_listener(Callbacks {
                checks: checks.clone(),
            })
            // A producer registers with the brokers it has routes to, by
            // its heartbeats; one that has sent nothing yet would know none,
            // and the broker would find nobody of the group to ask. The
            // default topic every broker serves gives it the brokers.
            .topics(vec![ROUTE_SEED])
            .check_thread_pool_min_size(1)
            .check_thread_pool_max_size(4)
            .build();
        producer
            .start()
            .await
            .map_err(|e| map(e, &format!("starting the half-message producer of {group}")))?;
        let g = Arc::new(Group { producer, checks });
        groups.insert(group.to_owned(), g.clone());
        Ok(g)
    }

    /// Publishes `message` prepared for `group`.
    pub(crate) async fn publish(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
        group: &str,
        message: Message,
    ) -> Result<(Receipt, HalfToken)> {
        let g = self.group(runtime, group).await?;
        let id = message
            .id()
            .ok_or_else(|| Error::invalid("message", message.topic(), "has no id"))?;
        let topic = message.topic_arc().clone();
        let encoded = codec::encode(&message)?;
        let sent = g
            .producer
            .send_message_in_transaction::<(), _>(encoded, None)
            .await
            .map_err(|e| map(e, &format!("publishing a half message to {topic}")))?;
        let result = sent.send_result.ok_or_else(|| {
            Error::backend(
                BACKEND,
                "a half message had no send result",
                std::io::Error::other("none"),
            )
        })?;
        let queue = result.message_queue.clone().ok_or_else(|| {
            Error::backend(
                BACKEND,
                "a half message had no queue",
                std::io::Error::other("none"),
            )
        })?;
        let route = cluster
            .route(&topic)
            .await?
            .ok_or_else(|| Error::invalid("topic", &*topic, "has no route"))?;
        let offset_id = result.offset_msg_id.clone().unwrap_or_default();
        let commit_log_offset = commit_log_offset(&offset_id).ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("unreadable offset message id {offset_id:?}"),
                std::io::Error::other("bad id"),
            )
        })?;
        let handle = Handle {
            topic: queue.topic().to_string(),
            broker: queue.broker_name().to_string(),
            addr: route.master_of(&queue)?.to_string(),
            queue_offset: result.queue_offset as i64,
            commit_log_offset,
            msg_id: result
                .msg_id
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            transaction_id: result.transaction_id.clone(),
            from_check: false,
        };
        let bytes = serde_json::to_vec(&handle).map_err(Error::json)?;
        let mut receipt = Receipt::new(id, topic, route.partition_of(&queue).unwrap_or(0), None);
        receipt.broker_id = result.msg_id.as_ref().map(|m| m.to_string());
        Ok((receipt, HalfToken::new(id, bytes)))
    }

    /// Commits or rolls back the prepared message of `token`.
    pub(crate) async fn resolve(
        &self,
        cluster: &Cluster,
        group: &str,
        token: HalfToken,
        outcome: HalfOutcome,
    ) -> Result<()> {
        let flag = match outcome {
            HalfOutcome::Unknown => return Ok(()),
            HalfOutcome::Commit => MessageSysFlag::TRANSACTION_COMMIT_TYPE,
            HalfOutcome::Rollback => MessageSysFlag::TRANSACTION_ROLLBACK_TYPE,
        };
        let handle: Handle = serde_json::from_slice(&token.handle).map_err(|e| {
            Error::invalid(
                "half token",
                format!("{} bytes", token.handle.len()),
                e.to_string(),
            )
        })?;
        if self.resolved.lock().outcomes.contains_key(&token.id) {
            return Ok(());
        }
        let header = EndTransactionRequestHeader {
            topic: CheetahString::from_string(handle.topic.clone()),
            producer_group: CheetahString::from_string(crate::names::to_broker(group)),
            tran_state_table_offset: handle.queue_offset,
            commit_log_offset: handle.commit_log_offset,
            commit_or_rollback: flag,
            from_transaction_check: handle.from_check,
            msg_id: CheetahString::from_string(handle.msg_id.clone()),
            transaction_id: handle
                .transaction_id
                .clone()
                .map(CheetahString::from_string),
            rpc_request_header: RpcRequestHeader {
                broker_name: Some(CheetahString::from_string(handle.broker.clone())),
                ..Default::default()
            },
        };
        let addr = match cluster
            .route(&crate::names::from_broker(&handle.topic))
            .await?
        {
            Some(route) => route
                .masters
                .get(handle.broker.as_str())
                .map(|a| a.to_string())
                .unwrap_or(handle.addr.clone()),
            None => handle.addr.clone(),
        };
        let request = create_request_command(RequestCode::EndTransaction, header);
        let response = cluster
            .handle()
            .invoke_remoting(
                &CheetahString::from_string(addr),
                request,
                self.options.request_millis(),
            )
            .await
            .map_err(|e| map(e, &format!("resolving half message {}", token.id)))?;
        if response.code() != 0 {
            return Err(Error::Rejected(format!(
                "resolving half message {} as {}: broker code {} {}",
                token.id,
                outcome.as_str(),
                response.code(),
                response.remark().map(|r| r.to_string()).unwrap_or_default()
            )));
        }
        self.resolved.lock().first(token.id, outcome);
        Ok(())
    }

    /// The check stream of `group` (starting its producer).
    pub(crate) async fn checks(
        &self,
        runtime: &Runtime,
        group: &str,
    ) -> Result<Box<dyn DriverHalfChecks>> {
        let g = self.group(runtime, group).await?;
        g.checks
            .open
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(Box::new(CheckStream {
            checks: g.checks.clone(),
            closed: Default::default(),
        }))
    }

    /// Stops every group's producer.
    pub(crate) async fn shutdown(&self) {
        let groups: Vec<Arc<Group>> = self.groups.lock().await.drain().map(|(_, g)| g).collect();
        for g in groups {
            if let Ok(mut g) = Arc::try_unwrap(g) {
                g.producer.shutdown().await;
            }
        }
    }
}

/// The commit-log offset in an offset message id (hex: the broker's
/// address, then the offset's 8 bytes).
fn commit_log_offset(offset_msg_id: &str) -> Option<i64> {
    let hex = offset_msg_id.get(offset_msg_id.len().checked_sub(16)?..)?;
    u64::from_str_radix(hex, 16).ok().map(|v| v as i64)
}

/// A check stream handed to the core.
struct CheckStream {
    checks: Arc<Checks>,
    closed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl DriverHalfChecks for CheckStream {
    async fn next(&self) -> Option<HalfCheck> {
        loop {
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
            let mut receiver = self.checks.receiver.lock().await;
            // Re-checks for a close now and then.
            match tokio::time::timeout(std::time::Duration::from_millis(200), receiver.recv()).await
            {
                Ok(Some(check)) => return Some(check),
                Ok(None) => return None,
                Err(_) => continue,
            }
        }
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.checks
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for CheckStream {
    fn drop(&mut self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.checks
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_offset_ids() {
        assert_eq!(
            commit_log_offset("7F00000100002A9F00000000000004D2"),
            Some(1234)
        );
        assert_eq!(commit_log_offset("short"), None);
    }

    #[test]
    fn first_outcome_stands() {
        let mut r = Resolved::default();
        let id = MessageId::from_uuid(uuid::Uuid::now_v7());
        assert!(r.first(id, HalfOutcome::Commit));
        assert!(!r.first(id, HalfOutcome::Rollback));
        assert_eq!(r.outcomes[&id], HalfOutcome::Commit);
    }
}
