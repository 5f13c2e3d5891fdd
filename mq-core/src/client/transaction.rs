//! [`Transaction`]: all-or-nothing publishing.

use crate::client::Client;
use crate::driver::DriverTransaction;
use crate::error::{Error, Result};
use crate::message::{Message, Receipt};

/// A transaction started by [`Producer::begin`](crate::Producer::begin).
///
/// Messages sent through it are invisible to consumers until
/// [`commit`](Self::commit); after [`abort`](Self::abort), or when the
/// transaction is dropped without commit, they are never delivered.
#[must_use = "a transaction that is dropped without commit is aborted"]
pub struct Transaction {
    client: Client,
    inner: Option<Box<dyn DriverTransaction>>,
}

impl Transaction {
    pub(crate) fn new(client: Client, inner: Box<dyn DriverTransaction>) -> Self {
        Transaction {
            client,
            inner: Some(inner),
        }
    }

    fn inner(&mut self) -> Result<&mut Box<dyn DriverTransaction>> {
        self.inner.as_mut().ok_or(Error::Closed("transaction"))
    }

    /// Stages one message.
    pub async fn send(&mut self, message: Message) -> Result<Receipt> {
        let mut receipts = self.send_batch(vec![message]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::Rejected("the backend returned no receipt".into()))
    }

    /// Stages several messages.
    pub async fn send_batch(&mut self, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        let client = self.client.clone();
        let tx = self.inner()?;
        client.publisher().publish_in(tx.as_mut(), messages).await
    }

    /// Makes every staged message visible at once.
    pub async fn commit(mut self) -> Result<()> {
        let tx = self.inner.take().ok_or(Error::Closed("transaction"))?;
        tx.commit().await
    }

    /// Discards every staged message.
    pub async fn abort(mut self) -> Result<()> {
        let tx = self.inner.take().ok_or(Error::Closed("transaction"))?;
        tx.abort().await
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("open", &self.inner.is_some())
            .finish()
    }
}
