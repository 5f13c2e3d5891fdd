//! [`Client`]: the handle applications hold.

use std::sync::Arc;

use crate::client::coalesce::Coalescing;
use crate::client::publish::{Outlet, Publisher};
use crate::client::{Admin, ConsumerBuilder, Producer};
use crate::delay::DelayEmulator;
use crate::driver::{Capabilities, Driver, Support};
use crate::error::Result;
use crate::message::IntoName;

/// A connection to one backend. Cheap to clone; clones share the connection.
///
/// Made by `mq::connect(url)` or, for a driver at hand, [`Client::new`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// use mq_core::{Client, Message};
/// let client = Client::new(mq_core::memory::MemoryDriver::new());
/// let receipt = client.producer().send(Message::new("orders", "hello")).await?;
/// assert_eq!(&*receipt.topic, "orders");
/// client.close().await
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) capabilities: Capabilities,
    pub(crate) publisher: Publisher,
    pub(crate) coalescing: Coalescing,
    pub(crate) background: crate::client::half::Background,
    #[cfg(feature = "otel")]
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
}

impl Client {
    /// Wraps a driver. The core emulates delay and per-group redelivery
    /// delays where the driver lacks them.
    pub fn new(driver: impl Driver) -> Self {
        Self::from_arc(Arc::new(driver))
    }

    /// Wraps a shared driver.
    pub fn from_arc(driver: Arc<dyn Driver>) -> Self {
        Self::build(
            driver,
            Coalescing::default(),
            #[cfg(feature = "otel")]
            Arc::new(crate::telemetry::Telemetry::global()),
        )
    }

    /// The same client reporting through `telemetry` instead of the global
    /// OpenTelemetry providers. Call it before using the client.
    #[cfg(feature = "otel")]
    pub fn with_telemetry(self, telemetry: crate::telemetry::Telemetry) -> Self {
        Self::build(
            self.inner.driver.clone(),
            self.inner.coalescing,
            Arc::new(telemetry),
        )
    }

    /// The same client coalescing individual sends as `coalescing` says
    /// ([`Coalescing::off`] to send each alone). Call it before using the
    /// client.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mq_core::Result<()> {
    /// use std::time::Duration;
    /// use mq_core::{Client, Coalescing, Message};
    /// let client = Client::new(mq_core::memory::MemoryDriver::new())
    ///     .with_coalescing(Coalescing::default().with_linger(Duration::from_millis(1)));
    /// let sends = (0..100).map(|i| {
    ///     let producer = client.producer();
    ///     async move { producer.send(Message::new("clicks", i.to_string())).await }
    /// });
    /// for receipt in futures::future::join_all(sends).await {
    ///     receipt?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_coalescing(self, coalescing: Coalescing) -> Self {
        Self::build(
            self.inner.driver.clone(),
            coalescing,
            #[cfg(feature = "otel")]
            self.inner.telemetry.clone(),
        )
    }

    fn build(
        driver: Arc<dyn Driver>,
        coalescing: Coalescing,
        #[cfg(feature = "otel")] telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Self {
        let native = driver.capabilities();
        let mut capabilities = native.clone();
        if capabilities.delay == Support::Unsupported {
            capabilities.delay = Support::Emulated;
            capabilities.delay_precision = DelayEmulator::PRECISION;
        }
        if capabilities.redelivery_delay == Support::Unsupported {
            capabilities.redelivery_delay = Support::Emulated;
        }
        if capabilities.half_messages == Support::Unsupported {
            capabilities.half_messages = Support::Emulated;
        }
        let outlet = Arc::new(Outlet::new(
            driver.clone(),
            capabilities.clone(),
            coalescing,
            #[cfg(feature = "otel")]
            telemetry.clone(),
        ));
        let fixed_levels = native.delay_model != crate::driver::DelayModel::Arbitrary;
        let delay = (native.delay != Support::Native || fixed_levels)
            .then(|| DelayEmulator::new(outlet.clone()));
        let publisher = Publisher::new(outlet, capabilities.clone(), delay);
        Client {
            inner: Arc::new(ClientInner {
                driver,
                capabilities,
                publisher,
                coalescing,
                background: crate::client::half::Background::new(),
                #[cfg(feature = "otel")]
                telemetry,
            }),
        }
    }

    /// The backend's name (`memory`, `native`, `kafka`, ...).
    pub fn backend(&self) -> &'static str {
        self.inner.driver.backend()
    }

    /// How this client coalesces individual sends.
    pub fn coalescing(&self) -> Coalescing {
        self.inner.coalescing
    }

    /// What this client can do on its backend: native, emulated or unsupported, and limits.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// A producer. Cheap; make as many as convenient.
    pub fn producer(&self) -> Producer {
        Producer {
            client: self.clone(),
        }
    }

    /// Starts configuring a consumer of `topic` in `group`.
    pub fn consumer(&self, topic: impl IntoName, group: impl IntoName) -> ConsumerBuilder {
        ConsumerBuilder::new(
            self.clone(),
            topic.into_name().to_string(),
            group.into_name().to_string(),
        )
    }

    /// Topic management and lag.
    pub fn admin(&self) -> Admin {
        Admin {
            client: self.clone(),
        }
    }

    /// The driver underneath, for backend-specific tools and tests.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.inner.driver
    }

    /// Stops background work (half-message checks, the delay forwarder)
    /// and closes the driver.
    pub async fn close(&self) -> Result<()> {
        self.inner.background.shutdown().await;
        self.inner.publisher.shutdown().await;
        self.inner.driver.close().await
    }

    pub(crate) fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
