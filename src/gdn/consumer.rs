//! A consumer that acknowledges, survives reconnects and skips what it already acknowledged.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::stream::FusedStream;
use futures::{SinkExt, Stream, StreamExt};

use crate::codec::{ConsumerMessage, Incoming, MessageId, Outgoing};
use crate::config::{ReconnectConfig, UnsentPolicy};
use crate::error::Error;
use crate::event::{CloseEvent, Event, Listener, OpenEvent, ReconnectingEvent};
use crate::stream::{Connect, ReconnectingStream};

/// How many recent message ids a consumer remembers to recognise redeliveries: 65,536.
pub const DEFAULT_REMEMBERED_IDS: usize = 65_536;

/// Counters of a consumer, read with [`Consumer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages yielded to the application.
    pub received: u64,
    /// Of those, how many had been delivered before (the server redelivered them because they
    /// were not acknowledged before a drop, or after a negative acknowledgement).
    pub redelivered: u64,
    /// Messages redelivered although this consumer had already acknowledged them (the ack was
    /// lost in a drop): acknowledged again and not yielded.
    pub skipped: u64,
    /// Acknowledgements queued.
    pub acked: u64,
    /// Negative acknowledgements queued.
    pub nacked: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
}

/// A bounded set of recent ids (oldest forgotten first).
#[derive(Debug)]
struct RecentIds {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Adds the id; false if it was already there.
    fn insert(&mut self, id: &MessageId) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.clone());
        self.order.push_back(id.clone());
        true
    }

    fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(id)
    }
}

/// Receives messages from a subscription and acknowledges them, across reconnects.
///
/// A `Stream` of [`ConsumerMessage`]s; acknowledge each with [`ack`](Self::ack) once it is
/// processed. What is not acknowledged when a connection drops is redelivered by the server on
/// the next one (at-least-once). A message this consumer already acknowledged but whose
/// acknowledgement was lost in the drop is acknowledged again and not yielded twice (among the
/// last [`DEFAULT_REMEMBERED_IDS`] ids).
///
/// A busy Exclusive subscription answers the connection with HTTP 409, which is retried with
/// backoff: a second exclusive consumer takes over once the first one goes away. Frames that do
/// not decode (not JSON, wrong types, bad base64, binary) are reported on the error listeners and
/// skipped.
///
/// Acknowledgements are written as the consumer is polled; [`flush`](Self::flush) or
/// [`close`](Self::close) writes the remaining ones. The stream ends with `Some(Err(e))` then
/// `None` on a permanent error (HTTP 401, 403, 404, 400) or when retries run out.
pub struct Consumer<F: Connect> {
    stream: ReconnectingStream<F>,
    seen: RecentIds,
    acked: RecentIds,
    /// Re-acknowledgements of skipped redeliveries, waiting for room in the queue.
    reacks: VecDeque<MessageId>,
    stats: ConsumerStats,
}

impl<F: Connect> fmt::Debug for Consumer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<F: Connect> Consumer<F> {
    /// A consumer over connections from `factory`, with default settings.
    pub fn new(factory: F) -> Self {
        Self::with_config(factory, ReconnectConfig::default())
    }

    /// A consumer with these connection settings.
    ///
    /// The consumer always uses [`UnsentPolicy::Requeue`]: acknowledgements written to a
    /// connection that dies are written again on the next one, so none is left behind where
    /// nobody would take it (a `HandBack` policy in `config` is overridden).
    pub fn with_config(factory: F, mut config: ReconnectConfig) -> Self {
        config.unsent_policy = UnsentPolicy::Requeue;
        Consumer {
            stream: ReconnectingStream::with_config(factory, config),
            seen: RecentIds::new(DEFAULT_REMEMBERED_IDS),
            acked: RecentIds::new(DEFAULT_REMEMBERED_IDS),
            reacks: VecDeque::new(),
            stats: ConsumerStats::default(),
        }
    }

    /// Acknowledges a message: the server will not deliver it again.
    ///
    /// # Errors
    ///
    /// The error that stopped the consumer, if it stopped (the message is then redelivered to the
    /// subscription's next consumer).
    pub async fn ack(&mut self, message: &ConsumerMessage) -> Result<(), Error> {
        self.ack_id(&message.message_id).await
    }

    /// Acknowledges a message by id.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack).
    pub async fn ack_id(&mut self, id: &MessageId) -> Result<(), Error> {
        self.stream.feed(Outgoing::Ack(id.clone())).await?;
        self.acked.insert(id);
        self.stats.acked += 1;
        Ok(())
    }

    /// Negatively acknowledges a message: the server redelivers it after its negative-ack delay
    /// (Pulsar 2.7 and later; older servers treat this as an acknowledgement).
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack).
    pub async fn nack(&mut self, message: &ConsumerMessage) -> Result<(), Error> {
        self.stream
            .feed(Outgoing::Nack(message.message_id.clone()))
            .await?;
        self.stats.nacked += 1;
        Ok(())
    }

    /// Waits until every acknowledgement queued so far is written to a live connection.
    ///
    /// # Errors
    ///
    /// The error that stopped the consumer, if it stopped.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await
    }

    /// Writes the queued acknowledgements (if connected), then closes the connection.
    ///
    /// # Errors
    ///
    /// [`Error::Unsent`] if acknowledgements could not be written (those messages will be
    /// redelivered).
    pub async fn close(&mut self) -> Result<(), Error> {
        self.stream.close().await
    }

    /// The connection settings in use.
    pub fn config(&self) -> &ReconnectConfig {
        self.stream.config()
    }

    /// The counters so far.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            reconnects: self.stream.connections().saturating_sub(1),
            ..self.stats
        }
    }

    /// Whether a connection is open.
    pub fn is_open(&self) -> bool {
        self.stream.is_open()
    }

    /// Listens to every connection event, in order.
    pub fn events(&self) -> Listener<Event> {
        self.stream.events()
    }
    /// Listens to connection opens.
    pub fn on_open(&self) -> Listener<OpenEvent> {
        self.stream.on_open()
    }
    /// Listens to connection closes.
    pub fn on_close(&self) -> Listener<CloseEvent> {
        self.stream.on_close()
    }
    /// Listens to errors, including frames that did not decode.
    pub fn on_error(&self) -> Listener<Error> {
        self.stream.on_error()
    }
    /// Listens to scheduled reconnects.
    pub fn on_reconnecting(&self) -> Listener<ReconnectingEvent> {
        self.stream.on_reconnecting()
    }

    /// Queues waiting re-acknowledgements while there is room.
    fn push_reacks(&mut self, cx: &mut Context<'_>) {
        while let Some(id) = self.reacks.front() {
            match self.stream.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) | Poll::Pending => return,
            }
            if self
                .stream
                .start_send_unpin(Outgoing::Ack(id.clone()))
                .is_err()
            {
                return;
            }
            self.reacks.pop_front();
        }
    }
}

impl<F: Connect> Unpin for Consumer<F> {}

impl<F: Connect> Stream for Consumer<F> {
    type Item = Result<ConsumerMessage, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            this.push_reacks(cx);
            let message = match ready!(this.stream.poll_next_unpin(cx)) {
                Some(Ok(Incoming::Message(m))) => m,
                Some(Ok(other)) => {
                    tracing::debug!(frame = ?other, "consumer ignores a frame that is not a message");
                    continue;
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            };
            if this.acked.contains(&message.message_id) {
                tracing::debug!(id = %message.message_id, "redelivery of an acknowledged message; acknowledging again");
                this.stats.skipped += 1;
                this.reacks.push_back(message.message_id);
                continue;
            }
            let first_time = this.seen.insert(&message.message_id);
            if !first_time || message.redelivery_count > 0 {
                this.stats.redelivered += 1;
            }
            this.stats.received += 1;
            return Poll::Ready(Some(Ok(message)));
        }
    }
}

impl<F: Connect> FusedStream for Consumer<F> {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::new(2);
        let (a, b, c) = (
            MessageId::new("a"),
            MessageId::new("b"),
            MessageId::new("c"),
        );
        assert!(r.insert(&a));
        assert!(!r.insert(&a));
        assert!(r.insert(&b));
        assert!(r.insert(&c));
        assert!(!r.contains(&a));
        assert!(r.contains(&b) && r.contains(&c));
    }
}
