//! A consumer that acknowledges, survives reconnects and skips what it already acknowledged.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use futures::stream::FusedStream;
use futures::{SinkExt, Stream, StreamExt};

use crate::codec::{ConsumerMessage, Incoming, MessageId, Outgoing};
use crate::config::{ReconnectConfig, UnsentPolicy};
use crate::error::Error;
use crate::event::{Listen, Listeners};
use crate::stream::{Connect, ReconnectingStream};

use super::dedup::{Window, IDEMPOTENCY_KEY};

/// How many recent message ids a consumer remembers, in each of its two windows (handed over,
/// and acknowledged), to recognise redeliveries: 65,536.
pub const DEFAULT_REMEMBERED_IDS: usize = 65_536;
/// Bound on the memory of each message-id window: 8 MiB (about 65,000 ids of 32 bytes).
pub const DEFAULT_REMEMBERED_IDS_BYTES: usize = 8 << 20;
/// How many idempotency keys a consumer remembers to drop duplicates: 100,000.
pub const DEFAULT_DEDUP_KEYS: usize = 100_000;
/// Bound on the memory of the idempotency-key window: 16 MiB (about 100,000 keys of 35 bytes
/// with the message id each).
pub const DEFAULT_DEDUP_BYTES: usize = 16 << 20;

/// Settings of a [`Consumer`] beyond those of its connection. Build with
/// [`ConsumerConfig::new`] and the chained setters; a [`ReconnectConfig`] converts into one with
/// the defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    reconnect: ReconnectConfig,
    dedup: bool,
    dedup_keys: usize,
    dedup_bytes: usize,
    remembered_ids: usize,
    remembered_ids_bytes: usize,
    /// Windows shared by every consumer built from this configuration or a clone of it.
    shared: Option<Arc<Mutex<Windows>>>,
}

/// What a consumer remembers to recognise repeats.
struct Windows {
    /// Message ids handed over, whether the application has settled each since (acked or
    /// nacked it), and the fingerprint of the idempotency key each came with: a redelivery of
    /// one it still holds is not handed over again.
    seen: Window<(Held, Option<u64>)>,
    /// Message ids acknowledged, with the fingerprint of the key the acknowledged message
    /// carried; `None` once the id turned out to name another message (the server reused it).
    acked: Window<Option<Option<u64>>>,
    /// Idempotency keys handed over, with the message id of the copy that was.
    keys: Option<Window<MessageId>>,
}

impl fmt::Debug for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Windows")
            .field("seen", &self.seen.len())
            .field("acked", &self.acked.len())
            .field("keys", &self.keys.as_ref().map(Window::len))
            .finish()
    }
}

impl Windows {
    fn new(c: &ConsumerConfig) -> Self {
        Windows {
            seen: Window::new(c.remembered_ids, c.remembered_ids_bytes),
            acked: Window::new(c.remembered_ids, c.remembered_ids_bytes),
            keys: c.dedup.then(|| Window::new(c.dedup_keys, c.dedup_bytes)),
        }
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig::new(ReconnectConfig::default())
    }
}

impl From<ReconnectConfig> for ConsumerConfig {
    fn from(reconnect: ReconnectConfig) -> Self {
        ConsumerConfig::new(reconnect)
    }
}

impl ConsumerConfig {
    /// These connection settings and the defaults: de-duplication by idempotency key on,
    /// [`DEFAULT_DEDUP_KEYS`] keys in at most [`DEFAULT_DEDUP_BYTES`], and
    /// [`DEFAULT_REMEMBERED_IDS`] message ids in at most [`DEFAULT_REMEMBERED_IDS_BYTES`] per
    /// id window.
    ///
    /// The consumer always uses [`UnsentPolicy::Requeue`]: acknowledgements written to a
    /// connection that dies are written again on the next one, so none is left behind where
    /// nobody would take it (a `HandBack` policy in `reconnect` is overridden).
    pub fn new(mut reconnect: ReconnectConfig) -> Self {
        reconnect.unsent_policy = UnsentPolicy::Requeue;
        ConsumerConfig {
            reconnect,
            dedup: true,
            dedup_keys: DEFAULT_DEDUP_KEYS,
            dedup_bytes: DEFAULT_DEDUP_BYTES,
            remembered_ids: DEFAULT_REMEMBERED_IDS,
            remembered_ids_bytes: DEFAULT_REMEMBERED_IDS_BYTES,
            shared: None,
        }
    }

    /// Makes every consumer built from this configuration, or from a clone of it, share one set
    /// of windows: for several consumers of one subscription in one process (a Shared pair),
    /// so that a message redelivered to the other consumer after a drop, or a duplicate that
    /// reaches the other one, is still recognised. Call it after the window settings; the
    /// windows are made here.
    pub fn share_windows(mut self) -> Self {
        self.shared = Some(Arc::new(Mutex::new(Windows::new(&self))));
        self
    }

    /// Whether to drop messages whose idempotency key (see [`IDEMPOTENCY_KEY`]) was already
    /// handed over under another message id. Default: on. Off, every copy the server stores
    /// is handed over (at-least-once).
    pub fn dedup(mut self, on: bool) -> Self {
        self.dedup = on;
        self
    }

    /// How many idempotency keys are remembered, and how many bytes they may take (each costs
    /// its length, the message id's, and about [`ENTRY_OVERHEAD`](super::ENTRY_OVERHEAD)
    /// bytes). A duplicate whose first copy was handed over longer ago than that is handed over
    /// again. Defaults: [`DEFAULT_DEDUP_KEYS`], [`DEFAULT_DEDUP_BYTES`].
    pub fn dedup_window(mut self, keys: usize, bytes: usize) -> Self {
        self.dedup_keys = keys;
        self.dedup_bytes = bytes;
        self
    }

    /// How many message ids are remembered to recognise redeliveries, and how many bytes each of
    /// the two id windows may take. Defaults: [`DEFAULT_REMEMBERED_IDS`],
    /// [`DEFAULT_REMEMBERED_IDS_BYTES`].
    pub fn remembered_ids(mut self, ids: usize, bytes: usize) -> Self {
        self.remembered_ids = ids;
        self.remembered_ids_bytes = bytes;
        self
    }

    /// Replaces the connection settings (the unsent policy stays `Requeue`, see
    /// [`new`](Self::new)). With [`Default`], the same as [`new`](Self::new):
    /// `ConsumerConfig::default().reconnect(rc).dedup_window(…)`.
    pub fn reconnect(mut self, mut reconnect: ReconnectConfig) -> Self {
        reconnect.unsent_policy = UnsentPolicy::Requeue;
        self.reconnect = reconnect;
        self
    }

    /// The connection settings.
    pub fn reconnect_config(&self) -> &ReconnectConfig {
        &self.reconnect
    }
}

/// Counters of a consumer, read with [`Consumer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages handed to the application.
    pub received: u64,
    /// Of those, how many the application had been handed before under the same message id:
    /// redeliveries after a negative acknowledgement. (Redeliveries the consumer did not hand
    /// over, counted below, are not counted here.)
    pub redelivered: u64,
    /// Redeliveries of messages this consumer had already acknowledged (the acknowledgement was
    /// lost in a drop): acknowledged again and not handed over.
    pub skipped: u64,
    /// Copies dropped because a message with the same idempotency key but another message id
    /// was already handed over (stored twice after a producer's re-send): acknowledged and not
    /// handed over.
    pub duplicates_dropped: u64,
    /// Redeliveries of messages the application still holds (handed over, neither
    /// acknowledged nor negatively acknowledged yet), after a drop: not handed over twice; the
    /// application's acknowledgement settles them. Neither acknowledged nor handed over.
    pub held_back: u64,
    /// Acknowledgements queued by the application.
    pub acked: u64,
    /// Negative acknowledgements queued.
    pub nacked: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// What the de-duplication windows hold now, in bytes as counted against their bounds (the
    /// two id windows and the key window together).
    pub window_bytes: u64,
    /// How many entries those windows hold now.
    pub window_entries: u64,
    /// Connections opened so far.
    pub connections: u64,
    /// Acknowledgements queued and not yet flushed to a connection.
    pub queue_depth: u64,
    /// The round trip of the last keepalive ping that was answered, if any was.
    pub last_rtt: Option<std::time::Duration>,
}

/// Receives messages from a subscription and acknowledges them, across reconnects.
///
/// A `Stream` of [`ConsumerMessage`]s; acknowledge each with [`ack`](Self::ack) once it is
/// processed. What is not acknowledged when a connection drops is redelivered by the server on
/// the next one. Frames that do not decode (not JSON, wrong types, bad base64, binary) are
/// reported on the error listeners and skipped.
///
/// # Delivery guarantee: effectively once, within the windows
///
/// Each message is handed to the application once, for one subscription, when its copies are:
/// - **re-sends by a [`Producer`](super::Producer)** that stored it twice (its confirmation was
///   lost in a drop): the copies carry the same idempotency key
///   ([`IDEMPOTENCY_KEY`](super::IDEMPOTENCY_KEY)) under different message ids, and a copy whose
///   key was already handed over is acknowledged and dropped (counted in
///   [`ConsumerStats::duplicates_dropped`]);
/// - **redeliveries of a message this consumer already acknowledged** (the acknowledgement was
///   lost in a drop): acknowledged again and not handed over ([`ConsumerStats::skipped`]).
///
/// A message id is the same message only with the same idempotency key (or both without one):
/// a server that restarted, or a topic that was recreated, can reuse ids, and an id that comes
/// back with another key is a new message, handed over.
///
/// It is at-least-once, not exactly-once, when: the application processes a message and the
/// consumer goes away (a crash) before the acknowledgement is written: the server delivers it
/// again to the next consumer; a redelivery of a message handed over but not yet acknowledged
/// (the application still owns it, or nacked it) is handed over again, by design; a duplicate
/// arrives after its first copy left the window ([`ConsumerConfig::dedup_window`],
/// [`ConsumerConfig::remembered_ids`]); the producer did not set keys, or
/// [`ConsumerConfig::dedup`] is off. Messages without a key (other producers) pass through
/// unchanged.
///
/// A busy Exclusive subscription answers the connection with HTTP 409, which is retried with
/// backoff: a second exclusive consumer takes over once the first one goes away.
///
/// Acknowledgements are written as the consumer is polled; [`flush`](Self::flush) or
/// [`close`](Self::close) writes the remaining ones. The stream ends with `Some(Err(e))` then
/// `None` on a permanent error (HTTP 401, 403, 404, 400) or when retries run out.
pub struct Consumer<F: Connect> {
    stream: ReconnectingStream<F>,
    windows: Arc<Mutex<Windows>>,
    /// Acknowledgements of skipped redeliveries and dropped duplicates, waiting for room in the
    /// queue.
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

    /// A consumer with these settings: a [`ConsumerConfig`], or a [`ReconnectConfig`] for the
    /// connection with the consumer's defaults.
    pub fn with_config(factory: F, config: impl Into<ConsumerConfig>) -> Self {
        let c = config.into();
        let windows = match &c.shared {
            Some(shared) => shared.clone(),
            None => Arc::new(Mutex::new(Windows::new(&c))),
        };
        Consumer {
            stream: ReconnectingStream::with_config(factory, c.reconnect),
            windows,
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
        self.settled(id, Held::Acked);
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
        self.settled(&message.message_id, Held::Nacked);
        self.stats.nacked += 1;
        Ok(())
    }

    /// Opens the connection (subscribing) if none is open, waiting through failed attempts
    /// and backoff. Like a [`ReconnectingStream`], a consumer connects only when first polled;
    /// a new subscription starts at the latest message by default, so await this before
    /// publishing what it should receive. (`on_open` sees nothing until something polls.)
    ///
    /// # Errors
    ///
    /// The error that stopped the consumer.
    pub async fn ready(&mut self) -> Result<(), Error> {
        self.stream.ready().await
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
        let w = self.windows();
        let keys = w.keys.as_ref();
        let bytes = w.seen.bytes() + w.acked.bytes() + keys.map_or(0, Window::bytes);
        let entries = w.seen.len() + w.acked.len() + keys.map_or(0, Window::len);
        drop(w);
        let st = self.stream.stats();
        ConsumerStats {
            reconnects: st.reconnects,
            connections: st.connections,
            queue_depth: st.queue_depth as u64,
            last_rtt: st.last_rtt,
            window_bytes: bytes as u64,
            window_entries: entries as u64,
            ..self.stats
        }
    }

    /// Whether a connection is open.
    pub fn is_open(&self) -> bool {
        self.stream.is_open()
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
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

/// A 64-bit fingerprint of an idempotency key, to tell whether a reused message id names the
/// same message. Not cryptographic: keys are not secrets, and a collision (one in 2^64) would
/// only make a reused id look like the message it named before.
fn fingerprint(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys, so that consumers sharing windows agree.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Where a message handed over stands with the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Handed over; neither acknowledged nor negatively acknowledged yet.
    Holding,
    /// Negatively acknowledged: the server sends it again, and that copy is handed over.
    Nacked,
    /// Acknowledged (also in the acknowledged window).
    Acked,
}

/// What becomes of a message that arrived.
enum Admit {
    /// Handed to the application; `repeat` if it was handed over before under this id.
    Hand { repeat: bool },
    /// Already acknowledged: acknowledge again, do not hand over.
    Reacknowledge,
    /// Another copy of a message handed over under another id: acknowledge, do not hand over.
    Duplicate,
    /// A redelivery of a message the application still holds (handed over, not settled): it
    /// is not handed over twice; the application's acknowledgement or nack will settle it.
    Holding,
}

impl<F: Connect> Consumer<F> {
    /// Checks a message against the windows, and remembers it if it is handed over.
    ///
    /// An id remembered with another idempotency key (or with one where the message has none,
    /// or the reverse) names a different message: a server that restarted, or a topic that was
    /// recreated, reuses ids. It is a new message, handed over, and what the id meant before is
    /// forgotten. Keys are compared by a 64-bit fingerprint.
    fn admit(&self, message: &ConsumerMessage) -> Admit {
        let mut w = self.windows();
        let id = message.message_id.as_str();
        let fingerprint = message
            .properties
            .get(IDEMPOTENCY_KEY)
            .map(|k| fingerprint(k));
        if let Some(acked) = w.acked.get_mut(id) {
            match acked {
                Some(key) if *key == fingerprint => return Admit::Reacknowledge,
                Some(_) => {
                    tracing::debug!(id = %message.message_id, "an acknowledged id came back with another idempotency key: a new message");
                    *acked = None;
                }
                None => {}
            }
        }
        if let (Some(keys), Some(key)) = (&mut w.keys, message.properties.get(IDEMPOTENCY_KEY)) {
            match keys.get(key) {
                Some(first) if first != &message.message_id => return Admit::Duplicate,
                Some(_) => {}
                None => {
                    keys.insert(key, message.message_id.clone());
                }
            }
        }
        match w.seen.get_mut(id) {
            Some(seen) if seen.1 != fingerprint => {
                *seen = (Held::Holding, fingerprint);
                Admit::Hand { repeat: false }
            }
            Some((held @ (Held::Nacked | Held::Acked), _)) => {
                *held = Held::Holding;
                Admit::Hand { repeat: true }
            }
            Some((Held::Holding, _)) => Admit::Holding,
            None => {
                w.seen.insert(id, (Held::Holding, fingerprint));
                Admit::Hand { repeat: false }
            }
        }
    }

    /// The application settled a message: remember how.
    fn settled(&self, id: &MessageId, how: Held) {
        let mut w = self.windows();
        // The key of the message acknowledged; unknown if it already left the window.
        let mut key = None;
        if let Some((held, fingerprint)) = w.seen.get_mut(id.as_str()) {
            *held = how;
            key = *fingerprint;
        }
        if how == Held::Acked {
            match w.acked.get_mut(id.as_str()) {
                Some(acked) => *acked = Some(key),
                None => {
                    w.acked.insert(id.as_str(), Some(key));
                }
            }
        }
    }
}

impl<F: Connect> Listen for Consumer<F> {
    fn listeners(&self) -> Listeners {
        self.stream.listeners()
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
            match this.admit(&message) {
                Admit::Hand { repeat } => {
                    if repeat {
                        this.stats.redelivered += 1;
                    }
                }
                Admit::Reacknowledge => {
                    tracing::debug!(id = %message.message_id, "redelivery of an acknowledged message; acknowledging again");
                    this.stats.skipped += 1;
                    this.reacks.push_back(message.message_id);
                    continue;
                }
                Admit::Duplicate => {
                    tracing::debug!(id = %message.message_id, "duplicate by idempotency key; acknowledging it");
                    this.stats.duplicates_dropped += 1;
                    this.reacks.push_back(message.message_id);
                    continue;
                }
                Admit::Holding => {
                    tracing::debug!(id = %message.message_id, "redelivery of a message the application holds; not handed over twice");
                    this.stats.held_back += 1;
                    continue;
                }
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
