//! [`Subscription`]: a consumer read as a `Stream` of deliveries.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::driver::RawDelivery;
use crate::driver::Rebalance;
use crate::error::{Error, Result};
use crate::message::Delivery;
use crate::runtime::{delivery_from_raw, serve_rebalance, Settler};

/// What the stream's pending step produced.
enum Step {
    Fetched(Result<Vec<RawDelivery>>),
    Rebalanced(Option<Rebalance>),
}

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
    fetching: Option<BoxFuture<'static, Step>>,
    done: bool,
    /// How long a revocation waits for the caller to settle what it holds.
    revoke_deadline: std::time::Duration,
    /// Whether the driver may still report rebalances.
    rebalances: bool,
}

impl Subscription {
    /// A stream over `settler`'s subscription: a revoked partition is let
    /// go of once the caller has settled what it holds of it, or after
    /// `revoke_deadline`.
    pub(crate) fn new(settler: Arc<Settler>, revoke_deadline: std::time::Duration) -> Self {
        Subscription {
            settler,
            buffer: VecDeque::new(),
            fetching: None,
            done: false,
            revoke_deadline,
            rebalances: true,
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
        self.settler
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
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
                if this.settler.revoked.contains(&raw.token) {
                    // Its partition's next owner gets it.
                    this.settler.settled(&raw.token);
                    continue;
                }
                let group = this.settler.group.clone();
                let delivery = delivery_from_raw(raw, &group, Some(this.settler.clone()));
                return Poll::Ready(Some(Ok(delivery)));
            }
            let settler = this.settler.clone();
            let rebalances = this.rebalances;
            let fetching = this.fetching.get_or_insert_with(|| {
                Box::pin(async move {
                    // Events are taken in the same step as records; see
                    // `runtime::rebalance` for why that order matters.
                    let fetch = async {
                        let room = settler.wait_for_room().await;
                        settler.subscription.fetch(room).await
                    };
                    tokio::select! {
                        event = settler.subscription.rebalance(), if rebalances => Step::Rebalanced(event),
                        fetched = fetch => Step::Fetched(fetched),
                    }
                })
            });
            match fetching.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Rebalanced(event)) => {
                    this.fetching = None;
                    match event {
                        None => this.rebalances = false,
                        Some(event) => {
                            let buffer = &mut this.buffer;
                            let settler = &this.settler;
                            serve_rebalance(settler, event, this.revoke_deadline, |revoked| {
                                buffer.retain(|raw| {
                                    let gone = revoked.iter().any(|tp| raw.token.is_in(tp));
                                    if gone {
                                        settler.settled(&raw.token);
                                    }
                                    !gone
                                });
                            });
                        }
                    }
                }
                Poll::Ready(Step::Fetched(result)) => {
                    this.fetching = None;
                    match result {
                        Ok(mut batch) => {
                            // Counted (and slots taken) from the fetch on,
                            // so a revocation waits for buffered ones too.
                            this.settler.hand_out(&mut batch, |raw| &raw.token);
                            this.settler.handed_out(batch.len());
                            this.buffer.extend(batch);
                        }
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
