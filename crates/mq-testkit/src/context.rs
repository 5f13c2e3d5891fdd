//! What a scenario works with: a client and names unique to this run.

use mq_core::{Capabilities, Client};

/// Why a scenario did not run on this backend.
#[derive(Debug)]
pub struct Skip(pub String);

/// A scenario's client and namespace.
pub struct Context {
    /// The client under test.
    pub client: Client,
    run: String,
}

impl Context {
    /// A context whose names carry `run`, a string unique to this test run.
    pub fn new(client: Client, run: String) -> Self {
        Context { client, run }
    }

    /// A topic name unique to this run.
    pub fn topic(&self, name: &str) -> String {
        format!("t-{}-{name}", self.run)
    }

    /// A group name unique to this run.
    pub fn group(&self, name: &str) -> String {
        format!("g-{}-{name}", self.run)
    }

    /// Creates `group` on `topic` by joining and leaving it, so messages
    /// published next reach the group on every backend (queue brokers such
    /// as RabbitMQ only route to groups that exist).
    pub async fn join(&self, topic: &str, group: &str) {
        let subscription = self
            .client
            .consumer(topic, group)
            .subscribe()
            .await
            .unwrap_or_else(|e| panic!("joining {group} on {topic}: {e}"));
        subscription.close().await.expect("leaving the group");
    }

    /// The client's effective capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        self.client.capabilities()
    }
}
