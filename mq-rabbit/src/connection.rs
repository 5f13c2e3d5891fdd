//! The one AMQP connection of a driver, re-established with backoff when lost.
//!
//! Everything that uses the broker asks [`Connector::connection`] for the
//! live connection; after a loss the first caller reconnects (the others
//! wait for it) and each user re-creates what it had on its own channels:
//! the publisher its confirm channel, subscriptions their topology and
//! consumers. The generation number tells users that the connection changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use mq_core::driver::Backoff;
use mq_core::{Error, Result};
use tokio::time::Instant;

use crate::error::map;
use crate::options::Options;

/// A connection and its generation (1 for the first, +1 per reconnect).
#[derive(Clone)]
pub(crate) struct Live {
    pub connection: Arc<Connection>,
    pub generation: u64,
}

pub(crate) struct Connector {
    /// The URL with the password: handed to lapin only, never shown.
    url: String,
    /// The URL as shown in messages, password replaced.
    shown: String,
    options: Options,
    live: tokio::sync::Mutex<Option<Live>>,
    closed: AtomicBool,
}

impl Connector {
    /// Connects once; a failure is returned as is (wrong credentials, a
    /// missing vhost and an unreachable broker each have their own error).
    pub(crate) async fn open(url: String, shown: String, options: Options) -> Result<Arc<Self>> {
        let connector = Arc::new(Connector {
            url,
            shown,
            options,
            live: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let connection = connector.connect_once().await?;
        *connector.live.lock().await = Some(Live {
            connection: Arc::new(connection),
            generation: 1,
        });
        Ok(connector)
    }

    async fn connect_once(&self) -> Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("mq-rabbit {}", std::process::id()).into());
        let timeout = self.options.connect_timeout;
        match tokio::time::timeout(timeout, Connection::connect(&self.url, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(map(error, &format!("connecting to {}", self.shown))),
            Err(_) => Err(Error::Connection {
                message: format!("connecting to {} timed out after {timeout:?}", self.shown),
                source: None,
            }),
        }
    }

    /// The live connection, reconnecting with exponential backoff (until
    /// `deadline`) when it was lost. Refusals (credentials, vhost) end the
    /// attempts at once.
    pub(crate) async fn connection(&self, deadline: Instant) -> Result<Live> {
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_ref() {
            if current.connection.status().connected() {
                return Ok(current.clone());
            }
        }
        let generation = live.as_ref().map_or(0, |l| l.generation) + 1;
        let backoff = Backoff::new(Duration::from_millis(50), self.options.max_backoff);
        let mut failures = 0;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed("rabbitmq driver"));
            }
            match self.connect_once().await {
                Ok(connection) => {
                    tracing::info!(generation, url = %self.shown, "connected to RabbitMQ");
                    let fresh = Live {
                        connection: Arc::new(connection),
                        generation,
                    };
                    *live = Some(fresh.clone());
                    return Ok(fresh);
                }
                Err(error) if !error.is_retryable() => return Err(error),
                Err(error) => {
                    failures += 1;
                    let Some(pause) = backoff.within(failures, deadline) else {
                        return Err(error);
                    };
                    tracing::warn!(%error, ?pause, "reconnecting to RabbitMQ");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// A new channel on the live connection.
    pub(crate) async fn channel(&self, deadline: Instant) -> Result<(Channel, u64)> {
        let live = self.connection(deadline).await?;
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(|e| map(e, "opening a channel"))?;
        Ok((channel, live.generation))
    }

    /// Runs `call` until it succeeds, fails for another reason than a lost
    /// connection, or `publish_timeout` has passed. For declarations and
    /// joins, which are idempotent: a connection lost in the middle (also
    /// one the broker closed after a crash) is re-established by the next
    /// try's first use of the broker.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = self.deadline();
        let backoff = Backoff::new(Duration::from_millis(20), self.options.max_backoff);
        let mut failures = 0;
        loop {
            match call().await {
                Err(error @ Error::Connection { .. }) if !self.is_closed() => {
                    failures += 1;
                    let Some(pause) = backoff.within(failures, deadline) else {
                        return Err(error);
                    };
                    tracing::debug!(%error, ?pause, "trying again on a new connection");
                    tokio::time::sleep(pause).await;
                }
                done => return done,
            }
        }
    }

    /// A deadline `publish_timeout` from now, the default patience of calls.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.options.publish_timeout
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; later calls fail with `Closed`.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(live) = self.live.lock().await.take() {
            if live.connection.status().connected() {
                if let Err(error) = live.connection.close(200, "bye".into()).await {
                    tracing::debug!(%error, "closing the RabbitMQ connection");
                }
            }
        }
    }
}
