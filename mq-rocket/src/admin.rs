//! Topics and groups through RocketMQ's admin API, and lag and group
//! positions through the brokers' offsets.
//!
//! - **Topics** are created on every master broker of the cluster with
//!   `partitions` read and write queues; `ensure_topic` waits until the
//!   name servers route the topic, so a publish right after it succeeds.
//! - **Groups**: `ensure_group` creates the subscription group on every
//!   master and commits a start offset on each queue where the group has
//!   none (the oldest retained message for `Earliest`, the end for
//!   `Latest`), without joining it.
//! - **Lag** is, per queue, the end offset minus the group's committed
//!   offset (everything retained while it has none): unread plus in
//!   flight, since members commit only what the application acked.

use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use mq_core::driver::{PartitionLag, StartFrom, TopicInfo, TopicSpec};
use mq_core::{Error, Result};
use rocketmq_client_rust::{DefaultMQAdminExt, MQAdminMutationExt, MQAdminReadExt};
use rocketmq_model::topic::TopicConfig;
use rocketmq_protocol::protocol::subscription::subscription_group_config::SubscriptionGroupConfig;
use tokio::sync::OnceCell;

use crate::cluster::{instance_name, Cluster, Route};
use crate::error::{is_missing, map};
use crate::names;
use crate::options::RocketOptions;
use crate::runtime::Runtime;

/// Read and write permission (RocketMQ's `PermName`).
const PERM_READ_WRITE: u32 = 6;

/// The admin client, started on first use (most clients never need it).
pub(crate) struct Admin {
    /// Written only to shut it down.
    ext: OnceCell<tokio::sync::RwLock<DefaultMQAdminExt>>,
    options: RocketOptions,
}

impl Admin {
    pub(crate) fn new(options: RocketOptions) -> Admin {
        Admin {
            ext: OnceCell::new(),
            options,
        }
    }

    async fn ext(
        &self,
        runtime: &Runtime,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, DefaultMQAdminExt>> {
        let ext = self
            .ext
            .get_or_try_init(|| async {
                let mut ext = DefaultMQAdminExt::with_admin_ext_group(
                    runtime.client(),
                    CheetahString::from_string(instance_name("admin")),
                );
                ext.set_namesrv_addr(CheetahString::from_string(
                    self.options.name_servers.clone(),
                ));
                ext.client_config_mut()
                    .set_instance_name(CheetahString::from_string(instance_name("admin")));
                MQAdminReadExt::start(&mut ext)
                    .await
                    .map_err(|e| map(e, "starting the admin client"))?;
                Ok::<_, Error>(tokio::sync::RwLock::new(ext))
            })
            .await?;
        Ok(ext.read().await)
    }

    /// Master addresses of every broker of the cluster.
    async fn masters(&self, runtime: &Runtime) -> Result<Vec<(CheetahString, CheetahString)>> {
        let info = self
            .ext(runtime)
            .await?
            .examine_broker_cluster_info()
            .await
            .map_err(|e| map(e, "reading the cluster"))?;
        let mut out: Vec<(CheetahString, CheetahString)> = info
            .broker_addr_table
            .unwrap_or_default()
            .into_values()
            .filter_map(|data| {
                let addr = data.broker_addrs().get(&0)?.clone();
                Some((CheetahString::from_string(data.cluster().to_owned()), addr))
            })
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(Error::connection(
                format!(
                    "the name servers {} know no broker",
                    self.options.name_servers
                ),
                std::io::Error::other("no broker registered"),
            ));
        }
        Ok(out)
    }

    /// Creates `topic` with `spec.partitions` queues unless it has a route.
    pub(crate) async fn ensure_topic(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
        topic: &str,
        spec: &TopicSpec,
    ) -> Result<std::sync::Arc<Route>> {
        names::check_topic(topic)?;
        if spec.retention.is_some() {
            return Err(Error::unsupported(
                "retention per topic",
                crate::error::BACKEND,
            ));
        }
        if let Some(route) = cluster.route(topic).await? {
            return Ok(route);
        }
        let ext = self.ext(runtime).await?;
        for (_, addr) in self.masters(runtime).await? {
            let mut config = TopicConfig::new(names::to_broker(topic));
            config.read_queue_nums = spec.partitions.max(1);
            config.write_queue_nums = spec.partitions.max(1);
            config.perm = PERM_READ_WRITE;
            ext.upsert_topic_config(addr, config)
                .await
                .map_err(|e| map(e, &format!("creating topic {topic}")))?;
        }
        // The broker registers the topic with the name servers on its own
        // schedule; until then producers and consumers find no route.
        let deadline = Instant::now() + self.options.request_timeout;
        loop {
            if let Some(route) = cluster.fetch_route(topic).await? {
                return Ok(route);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(self.options.request_timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The route of `topic`, creating it with the default queue count.
    pub(crate) async fn route_or_create(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
        topic: &str,
    ) -> Result<std::sync::Arc<Route>> {
        if let Some(route) = cluster.route(topic).await? {
            return Ok(route);
        }
        self.ensure_topic(
            runtime,
            cluster,
            topic,
            &TopicSpec::new(self.options.partitions),
        )
        .await
    }

    /// Deletes `topic` from the brokers and the name servers.
    pub(crate) async fn delete_topic(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
        topic: &str,
    ) -> Result<()> {
        cluster.forget(topic);
        if names::check_topic(topic).is_err() || cluster.fetch_route(topic).await?.is_none() {
            return Ok(());
        }
        let ext = self.ext(runtime).await?;
        let mut clusters: Vec<CheetahString> = self
            .masters(runtime)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        clusters.dedup();
        for name in clusters {
            match ext
                .remove_topic(CheetahString::from_string(names::to_broker(topic)), name)
                .await
            {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(map(e, &format!("deleting topic {topic}"))),
            }
        }
        cluster.forget(topic);
        Ok(())
    }

    /// Every topic mq can use (not RocketMQ's own), with its queue count.
    pub(crate) async fn list_topics(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
    ) -> Result<Vec<TopicInfo>> {
        let list = self
            .ext(runtime)
            .await?
            .fetch_all_topic_list()
            .await
            .map_err(|e| map(e, "listing topics"))?;
        let info = self
            .ext(runtime)
            .await?
            .examine_broker_cluster_info()
            .await
            .map_err(|e| map(e, "reading the cluster"))?;
        let mut own: Vec<String> = Vec::new();
        for (name, data) in info.broker_addr_table.unwrap_or_default() {
            own.push(name.to_string());
            own.push(data.cluster().to_owned());
        }
        let mut out = Vec::new();
        for name in list.topic_list {
            if names::is_broker_topic(&name) || own.iter().any(|o| o == name.as_str()) {
                continue;
            }
            let name = names::from_broker(&name);
            if let Some(route) = cluster.route(&name).await? {
                out.push(TopicInfo::new(name, route.queues.len() as u32));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The groups that consumed or were created on `topic`.
    pub(crate) async fn list_groups(&self, runtime: &Runtime, topic: &str) -> Result<Vec<String>> {
        let groups = match self
            .ext(runtime)
            .await?
            .query_topic_consume_by_who(CheetahString::from_string(names::to_broker(topic)))
            .await
        {
            Ok(list) => list.group_list,
            Err(e) if is_missing(&e) => Default::default(),
            Err(e) => return Err(map(e, &format!("listing the groups of {topic}"))),
        };
        let mut out: Vec<String> = groups
            .into_iter()
            .map(|g| g.to_string())
            .filter(|g| !g.starts_with("CID_RMQ_SYS") && !g.starts_with("TOOLS_CONSUMER"))
            .map(|g| names::from_broker(&g))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Creates `group` on `topic` where it has no position yet.
    pub(crate) async fn ensure_group(
        &self,
        runtime: &Runtime,
        cluster: &Cluster,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<()> {
        names::check_group(group)?;
        let route = self.route_or_create(runtime, cluster, topic).await?;
        let ext = self.ext(runtime).await?;
        for addr in route.masters.values() {
            let mut config =
                SubscriptionGroupConfig::new(CheetahString::from_string(names::to_broker(group)));
            // The core retries and dead-letters itself; the broker's own
            // retries only serve consumers that give a message back.
            config.set_retry_max_times(i32::MAX);
            ext.upsert_subscription_group(addr.clone(), config)
                .await
                .map_err(|e| map(e, &format!("creating group {group}")))?;
        }
        for queue in &route.queues {
            if cluster.committed(&route, queue, group).await?.is_some() {
                continue;
            }
            let at = match start {
                StartFrom::Earliest => cluster.min_offset(&route, queue).await?,
                StartFrom::Latest => cluster.max_offset(&route, queue).await?,
            };
            cluster.commit(&route, queue, group, at).await?;
        }
        Ok(())
    }

    /// How many members of `group` are online.
    pub(crate) async fn members(&self, runtime: &Runtime, group: &str) -> Result<usize> {
        match self
            .ext(runtime)
            .await?
            .examine_consumer_connection_info(
                CheetahString::from_string(names::to_broker(group)),
                None,
            )
            .await
        {
            Ok(connections) => Ok(connections.get_connection_set().len()),
            // The broker answers "not online" with an error code.
            Err(_) => Ok(0),
        }
    }

    /// Backlog per partition of `topic` for `group`.
    pub(crate) async fn lag(
        &self,
        cluster: &Cluster,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionLag>> {
        let Some(route) = cluster.route(topic).await? else {
            return Err(Error::invalid("topic", topic, "does not exist"));
        };
        let mut out = Vec::with_capacity(route.queues.len());
        for (partition, queue) in route.queues.iter().enumerate() {
            let end = cluster.max_offset(&route, queue).await?.max(0) as u64;
            let committed = cluster.committed(&route, queue, group).await?;
            let from = match committed {
                Some(c) => c.max(0) as u64,
                None => cluster.min_offset(&route, queue).await?.max(0) as u64,
            };
            out.push(
                PartitionLag::new(partition as u32, end.saturating_sub(from))
                    .with_offsets(end, committed.map(|c| c.max(0) as u64)),
            );
        }
        Ok(out)
    }

    /// Stops the admin client, if it was started.
    pub(crate) async fn shutdown(&self) {
        if let Some(ext) = self.ext.get() {
            MQAdminReadExt::shutdown(&mut *ext.write().await).await;
        }
    }
}
