//! [`Subscription`]: a consumer read as a `Stream` of deliveries.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::driver::RawDelivery;
use crate::error::{Error, Result};
use crate::message::Delivery;
use crate::runtime::{delivery_from_raw, Settler};

/// Deliveries of one consumer as a stream. Each must be settled by the
/// caller ([`Delivery::ack`], [`Delivery::nack`], [`Delivery::dead_letter`]);
/// at most `prefetch` are unsettled at once, after which the stream waits.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
/// use futures::StreamExt;
/// client.producer().send(mq_core::Message::new("orders", "hello")).await?;
/// let mut stream = client.consumer("orders", "audit").subscribe().await?;
/// let delivery = stream.next().await.unwrap()?;
/// assert_eq!(&delivery.payload()[..], b"hello");
/// delivery.ack().await?;
/// stream.close().await?;
/// # Ok(()) }
/// ```
pub struct Subscription {
    settler: Arc<Settler>,
    buffer: VecDeque<RawDelivery>,
    fetching: Option<BoxFuture<'static, Result<Vec<RawDelivery>>>>,
    done: bool,
}

impl Subscription {
    pub(crate) fn new(settler: Arc<Settler>) -> Self {
        Subscription {
            settler,
            buffer: VecDeque::new(),
            fetching: None,
            done: false,
        }
    }

    /// The next delivery; `None` after the subscription closed.
    pub async fn next_delivery(&mut self) -> Option<Result<Delivery>> {
        self.next().await
    }

    /// Leaves the group; unsettled deliveries go back to it.
    pub async fn close(mut self) -> Result<()> {
        self.done = true;
        self.fetching = None;
        self.settler.subscription.close().await
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(raw) = this.buffer.pop_front() {
                this.settler.handed_out(1);
                let group = this.settler.group.clone();
                let delivery = delivery_from_raw(raw, &group, Some(this.settler.clone()));
                return Poll::Ready(Some(Ok(delivery)));
            }
            let settler = this.settler.clone();
            let fetching = this.fetching.get_or_insert_with(|| {
                Box::pin(async move {
                    let room = settler.wait_for_room().await;
                    settler.subscription.fetch(room).await
                })
            });
            match fetching.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    this.fetching = None;
                    match result {
                        Ok(batch) => this.buffer.extend(batch),
                        Err(Error::Closed(_)) => {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        Err(error) => return Poll::Ready(Some(Err(error))),
                    }
                }
            }
        }
    }
}
