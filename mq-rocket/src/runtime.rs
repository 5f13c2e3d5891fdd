//! The client runtime every RocketMQ client of one driver runs on.
//!
//! The client never uses the caller's Tokio runtime: it wants an owner
//! ([`RuntimeOwner`]) with its own worker threads and blocking lanes.
//! Listeners run on the metadata lane; a consumer's listener here waits
//! for the application's ack (see the subscription), so that lane gets
//! room for many waiting calls and a long task time-out instead of the
//! default profile's few calls (4 on 2 cores, 16 queued), past which the
//! client sends messages to retry without running the listener.

use std::sync::Arc;
use std::time::Duration;

use mq_core::{Error, Result};
use parking_lot::Mutex;
use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig, TelemetryHandle};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

use crate::error::BACKEND;

/// Listener calls that may wait at once, across the driver's consumers.
const LISTENER_LANE: usize = 256;

/// The runtime owner and the client runtime made from it.
pub(crate) struct Runtime {
    owner: Mutex<Option<RuntimeOwner>>,
    client: Arc<ClientRuntime>,
}

impl Runtime {
    /// A fresh owner with worker threads of its own.
    pub(crate) fn start() -> Result<Self> {
        let parallelism = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let mut config = RuntimeConfig::for_parallelism("mq-rocket", parallelism);
        config.max_blocking_threads = LISTENER_LANE * 2;
        let lanes = &mut config.blocking_lane_policies;
        lanes.metadata_io.max_concurrency = LISTENER_LANE;
        lanes.metadata_io.max_queue_depth = LISTENER_LANE * 16;
        lanes.metadata_io.queue_timeout = Duration::from_secs(3600);
        lanes.metadata_io.task_timeout = Duration::from_secs(30 * 24 * 3600);
        lanes.metadata_io.warn_after = Duration::from_secs(3600);
        lanes.storage_io.max_queue_depth = LISTENER_LANE * 4;
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| Error::backend(BACKEND, "invalid client runtime profile", e))?
            .build()
            .map_err(|e| Error::backend(BACKEND, "cannot start the client runtime", e))?;
        let client = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig {
                shutdown_timeout: Duration::from_secs(10),
                ..ClientRuntimeConfig::default()
            },
            TelemetryHandle::default(),
        )
        .map_err(|e| crate::error::map(e, "starting the client runtime"))?;
        Ok(Runtime {
            owner: Mutex::new(Some(owner)),
            client,
        })
    }

    /// The client runtime, for builders.
    pub(crate) fn client(&self) -> Arc<ClientRuntime> {
        self.client.clone()
    }

    /// Stops the clients' background work and the owner's threads.
    pub(crate) async fn shutdown(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(15), self.client.shutdown()).await;
        if let Some(owner) = self.owner.lock().take() {
            // Never blocks: the caller is inside a Tokio runtime.
            let _ = owner.shutdown_background();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.get_mut().take() {
            let _ = owner.shutdown_background();
        }
    }
}
