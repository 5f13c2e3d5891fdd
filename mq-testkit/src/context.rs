//! What a scenario works with: a client and names unique to this run.

use mq_core::{Capabilities, Client};
use parking_lot::Mutex;

/// Why a scenario did not run on this backend.
#[derive(Debug)]
pub struct Skip(pub String);

/// A scenario's client and namespace.
pub struct Context {
    /// The client under test.
    pub client: Client,
    run: String,
    topics: Mutex<Vec<String>>,
    groups: Mutex<Vec<String>>,
}

impl Context {
    /// A context whose names carry `run`, a string unique to this test run.
    pub fn new(client: Client, run: String) -> Self {
        Context {
            client,
            run,
            topics: Mutex::default(),
            groups: Mutex::default(),
        }
    }

    /// A topic name unique to this run.
    pub fn topic(&self, name: &str) -> String {
        let topic = format!("t-{}-{name}", self.run);
        self.topics.lock().push(topic.clone());
        topic
    }

    /// A group name unique to this run.
    pub fn group(&self, name: &str) -> String {
        let group = format!("g-{}-{name}", self.run);
        self.groups.lock().push(group.clone());
        group
    }

    /// Deletes every topic this context named, with the dead-letter and
    /// retry topics the runtime derived from it, so test brokers do not
    /// fill up. Failures are ignored: the names are unique to the run.
    pub async fn clean_up(&self) {
        let topics = self.topics.lock().clone();
        let groups = self.groups.lock().clone();
        let driver = self.client.driver();
        for topic in &topics {
            let _ = driver.delete_topic(topic).await;
            let names = &self.capabilities().names;
            let _ = driver.delete_topic(&names.dead_letter_topic(topic)).await;
            for group in &groups {
                let _ = driver
                    .delete_topic(&names.internal("retry", &[group, topic]))
                    .await;
            }
        }
    }

    /// Creates `group` on `topic` the way users do, with
    /// [`Admin::ensure_group`](mq_core::Admin::ensure_group), so messages
    /// published next reach the group on every backend (queue brokers such
    /// as RabbitMQ only route to groups that exist).
    pub async fn join(&self, topic: &str, group: &str) {
        self.client
            .admin()
            .ensure_group(topic, group, mq_core::StartFrom::Earliest)
            .await
            .unwrap_or_else(|e| panic!("creating {group} on {topic}: {e}"));
    }

    /// The client's effective capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        self.client.capabilities()
    }
}
