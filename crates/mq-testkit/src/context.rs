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

    /// The client's effective capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        self.client.capabilities()
    }
}
