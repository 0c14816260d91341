//! A producer that confirms every message and re-sends what was not confirmed.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::codec::{AckResult, Incoming, MessageId, Outgoing, ProducerAck, Publish};
use crate::config::{ReconnectConfig, UnsentPolicy};
use crate::error::Error;
use crate::event::{Listen, Listeners};
use crate::stream::{Connect, ReconnectingStream};

use super::dedup::IDEMPOTENCY_KEY;

/// Default number of messages that may be in flight (sent, not yet confirmed): 1000, the Pulsar
/// WebSocket API's default `maxPendingMessages`.
pub const DEFAULT_MAX_PENDING: usize = 1000;

/// Default bound on a producer's shutdown: 30 s. See [`ProducerConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a message was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The server refused the message (`"result": "send-error:N"`): 3 = not JSON, 7 = bad payload
    /// or event time, 8 = the broker failed (timeout, queue full). Not retried.
    #[error("server refused the message (send-error:{}): {message}", code.map_or_else(|| "?".to_string(), |c| c.to_string()))]
    Rejected {
        /// The `N` of `send-error:N`.
        code: Option<u32>,
        /// The server's explanation.
        message: String,
    },
    /// The connection stopped for good (a permanent error such as HTTP 401, or the retry cap)
    /// before the message was confirmed. The stream's error is the
    /// [`source`](std::error::Error::source).
    #[error("producer stopped before confirmation")]
    Stopped(#[source] Error),
    /// The producer was closed before the message was confirmed.
    #[error("producer closed before confirmation")]
    Closed,
    /// The producer shut down ([`Producer::close`] was called, or every handle was dropped)
    /// and its [drain timeout](ProducerConfig::drain_timeout) expired before the server confirmed
    /// this message. The message **may or may not have been stored**: it may have reached the
    /// server with its confirmation lost, or never have been written. Publish it again if it
    /// must be stored (at the risk of a duplicate).
    #[error(
        "producer shut down before confirmation (drain timeout expired): \
         the message may or may not have been stored"
    )]
    Unconfirmed,
    /// [`Producer::close`] (or a [`flush`](Producer::flush) waiting while the producer shut
    /// down): the [drain timeout](ProducerConfig::drain_timeout) expired with `unconfirmed`
    /// messages still unconfirmed. Each of them resolved to [`ProducerError::Unconfirmed`]; they
    /// may or may not have been stored.
    #[error(
        "drain timeout expired with {unconfirmed} message(s) unconfirmed; \
         they may or may not have been stored"
    )]
    DrainTimeout {
        /// How many messages were not confirmed when the drain timeout expired.
        unconfirmed: usize,
    },
}

/// Settings of a [`Producer`] beyond those of its connection.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    reconnect: ReconnectConfig,
    max_pending: usize,
    drain_timeout: Duration,
    idempotency_keys: bool,
    producer_id: Option<String>,
}

impl From<ReconnectConfig> for ProducerConfig {
    fn from(reconnect: ReconnectConfig) -> Self {
        ProducerConfig::new(reconnect)
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig::new(ReconnectConfig::default())
    }
}

impl ProducerConfig {
    /// These connection settings, the default window ([`DEFAULT_MAX_PENDING`]) and the default
    /// drain timeout ([`DEFAULT_DRAIN_TIMEOUT`]).
    ///
    /// The producer always uses [`UnsentPolicy::HandBack`]: it re-sends by itself.
    pub fn new(mut reconnect: ReconnectConfig) -> Self {
        reconnect.unsent_policy = UnsentPolicy::HandBack;
        ProducerConfig {
            reconnect,
            max_pending: DEFAULT_MAX_PENDING,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            idempotency_keys: true,
            producer_id: None,
        }
    }

    /// Whether every message gets an idempotency key (the property
    /// [`IDEMPOTENCY_KEY`](super::IDEMPOTENCY_KEY), `<producer id>-<sequence number>`), so that
    /// a [`Consumer`](super::Consumer) hands a message stored twice to the application once.
    /// Default: on. A key the application set on a message is kept either way.
    pub fn idempotency_keys(mut self, on: bool) -> Self {
        self.idempotency_keys = on;
        self
    }

    /// The producer's identity in its idempotency keys. Default: 16 random hex digits per
    /// `Producer`. Set it to keep keys stable across processes, for example for a process that
    /// re-publishes from its own outbox after a restart in the same order.
    pub fn producer_id(mut self, id: impl Into<String>) -> Self {
        self.producer_id = Some(id.into());
        self
    }

    /// Replaces the connection settings (the unsent policy stays `HandBack`, see
    /// [`new`](Self::new)). With [`Default`], the same as [`new`](Self::new):
    /// `ProducerConfig::default().reconnect(rc).max_pending(…)`.
    pub fn reconnect(mut self, mut reconnect: ReconnectConfig) -> Self {
        reconnect.unsent_policy = UnsentPolicy::HandBack;
        self.reconnect = reconnect;
        self
    }

    /// How many messages may await confirmation at once; [`Producer::send`] waits for room
    /// beyond that. Default: 1000. Values below 1 are raised to 1.
    ///
    /// Keep it at or below the server's queue for the producer,
    /// [`ProducerOptions::max_pending_messages`](super::ProducerOptions::max_pending_messages)
    /// (1000 when unset): a server whose queue is full refuses a message with `send-error:8`,
    /// which the producer reports as [`ProducerError::Rejected`] and does not retry.
    /// [`Producer::for_endpoint`] does that by itself.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// How long a shutting-down producer keeps trying to get its messages confirmed. Default:
    /// [`DEFAULT_DRAIN_TIMEOUT`] (30 s).
    ///
    /// The time starts when [`Producer::close`] is called or when the last handle is dropped.
    /// Until it runs out, the producer goes on as usual: it reconnects, re-sends and waits for
    /// confirmations. If messages are still unconfirmed when it runs out, each resolves to
    /// [`ProducerError::Unconfirmed`], `close()` returns [`ProducerError::DrainTimeout`], and the
    /// producer drops its connection and stops for good: it never connects again.
    /// `Duration::ZERO` gives up on whatever is unconfirmed as soon as the shutdown starts;
    /// `Duration::MAX` waits for ever.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// Counters of a producer, read with [`Producer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Messages handed to [`Producer::send`].
    pub sent: u64,
    /// Messages the server confirmed.
    pub confirmed: u64,
    /// Messages the server refused.
    pub rejected: u64,
    /// Messages written again after a reconnect because they were not confirmed.
    pub resent: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Confirmations that arrived for a message already confirmed (its first confirmation was
    /// lost in a drop, so the server stored it twice).
    pub duplicate_confirmations: u64,
    /// The most messages that were awaiting confirmation at once (never above the window).
    pub peak_in_flight: u64,
    /// Messages awaiting confirmation now.
    pub in_flight: u64,
    /// Connections opened so far.
    pub connections: u64,
    /// The round trip of the last keepalive ping that was answered, if any was.
    pub last_rtt: Option<Duration>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    confirmed: AtomicU64,
    rejected: AtomicU64,
    resent: AtomicU64,
    duplicates: AtomicU64,
    peak_in_flight: AtomicU64,
    in_flight: AtomicU64,
    connections: AtomicU64,
    /// Nanoseconds plus one; 0 for none.
    last_rtt: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// Why the producer stopped, once it has.
    failure: Mutex<Option<ProducerError>>,
}

impl Shared {
    fn stopped(&self) -> ProducerError {
        self.failure
            .lock()
            .expect("producer state lock")
            .clone()
            .unwrap_or(ProducerError::Closed)
    }
}

enum Command {
    Send {
        message: Publish,
        reply: oneshot::Sender<Result<MessageId, ProducerError>>,
        permit: OwnedSemaphorePermit,
    },
    Flush(oneshot::Sender<Result<(), ProducerError>>),
    Close(oneshot::Sender<Result<(), ProducerError>>),
    Ready(oneshot::Sender<Result<(), ProducerError>>),
}

/// Publishes messages and confirms each one.
///
/// Every message gets a unique `context` (any context the caller set is replaced), and
/// [`send`](Self::send) resolves when the server's acknowledgement for that context arrives, so
/// many messages can be in flight at once (up to [`ProducerConfig::max_pending`]) and are matched
/// to their confirmations by context, not by arrival order.
///
/// # Delivery guarantee: at least once to the server, once to the application
///
/// When the connection drops, every message not yet confirmed is written again on the next
/// connection, in its original order, before anything newer: the first copy of every message
/// reaches the server in publish order. A message whose confirmation was lost in the drop is
/// therefore stored twice. Nothing accepted is lost: a message is either confirmed, refused by
/// the server ([`ProducerError::Rejected`]), or, if the producer stops for good, reported as
/// [`ProducerError::Stopped`] or [`ProducerError::Unconfirmed`].
///
/// Every message carries an idempotency key ([`IDEMPOTENCY_KEY`](super::IDEMPOTENCY_KEY),
/// `<producer id>-<sequence number>`), set once when it is accepted and the same in every
/// re-send, so that a [`Consumer`](super::Consumer) hands a message stored twice to the
/// application once (see its guarantee). [`ProducerConfig::idempotency_keys`] turns that off,
/// [`ProducerConfig::producer_id`] sets the identity, and a key the application set on a
/// message is kept.
///
/// # Shutdown
///
/// The producer runs in a tokio task; cloning a `Producer` gives another handle to the same one.
/// When every handle is dropped, it goes on until the messages in flight are confirmed, then
/// closes the connection and ends. [`close`](Self::close) does the same and waits for it. Both
/// are bounded by the [drain timeout](ProducerConfig::drain_timeout) (default 30 s): if it
/// expires first, for instance because the server is unreachable, every unconfirmed message
/// resolves to [`ProducerError::Unconfirmed`] (it may or may not have been stored), `close()`
/// returns [`ProducerError::DrainTimeout`], and the task drops its connection and ends; it never
/// reconnects after that.
#[derive(Clone)]
pub struct Producer {
    commands: mpsc::UnboundedSender<Command>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
    listeners: Listeners,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Starts a producer over connections from `factory` (see [`Connect`]), with default
    /// settings. Must be called within a tokio runtime. It connects on first use (see
    /// [`ready`](Self::ready)), in its own task.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the producer spawns its task on the current one), with the
    /// message "Producer must be created inside a Tokio runtime".
    #[track_caller]
    pub fn new<F>(factory: F) -> Self
    where
        F: Connect + Send + 'static,
        F::Transport: Send,
        F::Future: Send,
    {
        Self::with_config(factory, ProducerConfig::default())
    }

    /// Starts a producer on a GDN / Pulsar producer endpoint, with its window following the
    /// server's queue: at most the endpoint's `maxPendingMessages`
    /// ([`ProducerOptions::max_pending_messages`](super::ProducerOptions::max_pending_messages),
    /// 1000 when unset), whatever [`ProducerConfig::max_pending`] says, so that the server
    /// never refuses a message because its queue is full. Must be called within a tokio runtime.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    #[track_caller]
    pub fn for_endpoint(endpoint: super::Endpoint, config: impl Into<ProducerConfig>) -> Self {
        let mut config = config.into();
        // The server's default queue is the same size as the default window.
        let server_queue = endpoint
            .max_pending_messages()
            .map_or(DEFAULT_MAX_PENDING, |n| n.max(1) as usize);
        if config.max_pending > server_queue {
            tracing::debug!(
                window = config.max_pending,
                server_queue,
                "the producer's window follows the server's queue"
            );
            config.max_pending = server_queue;
        }
        Self::with_config(move || endpoint.connect(), config)
    }

    /// Starts a producer with these settings. Must be called within a tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the producer spawns its task on the current one), with the
    /// message "Producer must be created inside a Tokio runtime".
    #[track_caller]
    pub fn with_config<F>(factory: F, config: impl Into<ProducerConfig>) -> Self
    where
        F: Connect + Send + 'static,
        F::Transport: Send,
        F::Future: Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            panic!(
                "stream_websocket::gdn::Producer must be created inside a Tokio runtime: \
                 it runs in a task spawned on the current runtime"
            );
        };
        let config = config.into();
        let stream = ReconnectingStream::with_config(factory, config.reconnect);
        let listeners = stream.listeners();
        let (commands, rx) = mpsc::unbounded_channel();
        let window = Arc::new(Semaphore::new(config.max_pending));
        let shared = Arc::new(Shared::default());
        let task = Task {
            stream,
            rx,
            intake_closed: false,
            pending: InFlightLog::new(),
            next_seq: 0,
            next_to_send: 0,
            connection: 0,
            flushes: Vec::new(),
            close: None,
            drain_timeout: config.drain_timeout,
            drain: None,
            key_prefix: config.idempotency_keys.then(|| {
                let id = config
                    .producer_id
                    .unwrap_or_else(|| format!("{:016x}", crate::backoff::Rng::entropy_seed()));
                format!("{id}-")
            }),
            started: false,
            ready: Vec::new(),
            window: window.clone(),
            shared: shared.clone(),
        };
        runtime.spawn(task.run());
        Producer {
            commands,
            window,
            shared,
            listeners,
        }
    }

    /// Publishes a message and waits for the server's confirmation.
    ///
    /// Waits first for room in the window if [`max_pending`](ProducerConfig::max_pending)
    /// messages are already in flight. Messages go out in the order `send` is first polled; to
    /// pipeline, poll many `send` futures together (e.g. `futures::future::join_all`) or use
    /// [`enqueue`](Self::enqueue).
    ///
    /// # Errors
    ///
    /// [`ProducerError::Rejected`] if the server refused it, [`ProducerError::Stopped`] if the
    /// producer stopped for good first, [`ProducerError::Closed`] if it was closed,
    /// [`ProducerError::Unconfirmed`] if it was shutting down and its
    /// [drain timeout](ProducerConfig::drain_timeout) expired before the confirmation.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the message was queued does not withdraw it: it is still sent
    /// and confirmed, the confirmation is just not observed.
    pub async fn send(&self, message: impl Into<Publish>) -> Result<MessageId, ProducerError> {
        self.enqueue(message).await?.await
    }

    /// Queues a message (waiting for room in the window) and returns a [`Receipt`] that resolves
    /// when it is confirmed. Messages go out in the order they were enqueued.
    ///
    /// # Errors
    ///
    /// [`ProducerError::Stopped`] or [`ProducerError::Closed`] if the producer no longer runs.
    pub async fn enqueue(&self, message: impl Into<Publish>) -> Result<Receipt, ProducerError> {
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.shared.stopped())?;
        let (reply, rx) = oneshot::channel();
        let command = Command::Send {
            message: message.into(),
            reply,
            permit,
        };
        self.commands
            .send(command)
            .map_err(|_| self.shared.stopped())?;
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt {
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Opens the connection if none is open yet, and waits until one is. A producer connects
    /// on first use (this, a send, a flush or a close), like a stream or a consumer; listeners
    /// subscribed before then see its first open.
    ///
    /// # Errors
    ///
    /// [`ProducerError::Stopped`] or [`ProducerError::Closed`] if the producer stopped first.
    pub async fn ready(&self) -> Result<(), ProducerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Ready(tx))
            .map_err(|_| self.shared.stopped())?;
        rx.await.unwrap_or_else(|_| Err(self.shared.stopped()))
    }

    /// Waits until every message sent before this call is confirmed (or refused).
    ///
    /// # Errors
    ///
    /// [`ProducerError::Stopped`] or [`ProducerError::Closed`] if the producer stopped first;
    /// [`ProducerError::DrainTimeout`] if it was shutting down (another handle called
    /// [`close`](Self::close)) and its drain timeout expired first.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .map_err(|_| self.shared.stopped())?;
        rx.await.unwrap_or_else(|_| Err(self.shared.stopped()))
    }

    /// Waits for every message in flight to be confirmed, then closes the connection. Other
    /// handles to this producer can send no more.
    ///
    /// Bounded by the [drain timeout](ProducerConfig::drain_timeout) (default 30 s), which starts
    /// now: see [Shutdown](Self#shutdown).
    ///
    /// # Errors
    ///
    /// [`ProducerError::DrainTimeout`] with the number of messages left unconfirmed if the
    /// drain timeout expired first; [`ProducerError::Stopped`] with the error that stopped the
    /// producer, if it stopped for good before everything was confirmed.
    pub async fn close(self) -> Result<(), ProducerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Close(tx))
            .map_err(|_| self.shared.stopped())?;
        rx.await.unwrap_or_else(|_| Err(self.shared.stopped()))
    }

    /// The counters so far.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.shared.counters;
        ProducerStats {
            sent: c.sent.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            reconnects: c.connections.load(Ordering::Relaxed).saturating_sub(1),
            duplicate_confirmations: c.duplicates.load(Ordering::Relaxed),
            peak_in_flight: c.peak_in_flight.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            last_rtt: match c.last_rtt.load(Ordering::Relaxed) {
                0 => None,
                n => Some(Duration::from_nanos(n - 1)),
            },
        }
    }
}

impl Listen for Producer {
    fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }
}

/// Resolves to the message id once the server confirmed the message, or to the
/// [`ProducerError`] that settled it otherwise (see [`Producer::send`]).
#[derive(Debug)]
#[must_use = "a receipt does nothing unless awaited; dropping it does not withdraw the message"]
pub struct Receipt {
    rx: oneshot::Receiver<Result<MessageId, ProducerError>>,
    shared: Arc<Shared>,
}

impl Future for Receipt {
    type Output = Result<MessageId, ProducerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.shared.stopped())),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct InFlight {
    message: Publish,
    reply: oneshot::Sender<Result<MessageId, ProducerError>>,
    /// Holds a window slot until the message is confirmed.
    _permit: OwnedSemaphorePermit,
}

/// The messages in flight by sequence number. Numbers are given out consecutively and most
/// confirmations come in order, so this is a ring of slots starting at the oldest unconfirmed
/// number: inserting, confirming and finding the next to write are O(1) in the usual case,
/// without a tree's allocations and pointer chasing (this runs once per message).
#[derive(Debug)]
struct InFlightLog<T> {
    /// Slot `i` holds sequence number `base + i`; `None` once confirmed out of order. The first
    /// slot, if any, is always occupied.
    slots: VecDeque<Option<T>>,
    base: u64,
    len: usize,
}

impl<T> InFlightLog<T> {
    fn new() -> Self {
        InFlightLog {
            slots: VecDeque::new(),
            base: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds the next sequence number, which must be one past the last one added (the first may
    /// be any).
    fn push(&mut self, seq: u64, value: T) {
        if self.slots.is_empty() {
            self.base = seq;
        }
        debug_assert_eq!(seq, self.base + self.slots.len() as u64);
        self.slots.push_back(Some(value));
        self.len += 1;
    }

    fn remove(&mut self, seq: u64) -> Option<T> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let value = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    /// The oldest sequence number in flight.
    fn first(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.base)
    }

    /// The first entry at or after `seq`.
    fn next_from(&self, seq: u64) -> Option<(u64, &T)> {
        let start = usize::try_from(seq.saturating_sub(self.base)).ok()?;
        self.slots
            .iter()
            .enumerate()
            .skip(start)
            .find_map(|(i, slot)| Some((self.base + i as u64, slot.as_ref()?)))
    }

    /// How many entries are before `seq`.
    fn count_before(&self, seq: u64) -> usize {
        let end = usize::try_from(seq.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.slots.iter().take(end).filter(|s| s.is_some()).count()
    }

    /// Empties it, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.len = 0;
        self.slots.drain(..).flatten()
    }
}

/// The producer's task: owns the connection, writes pending messages in order and matches
/// confirmations to them.
struct Task<F: Connect> {
    stream: ReconnectingStream<F>,
    rx: mpsc::UnboundedReceiver<Command>,
    intake_closed: bool,
    /// Messages not yet confirmed, by sequence number (which is also their context).
    pending: InFlightLog<InFlight>,
    next_seq: u64,
    /// The lowest sequence number not yet written to the current connection.
    next_to_send: u64,
    /// The connection the writes so far went to (0: none yet).
    connection: u64,
    /// Flush waiters: resolved once every message up to the sequence number is settled.
    flushes: Vec<(u64, oneshot::Sender<Result<(), ProducerError>>)>,
    close: Option<oneshot::Sender<Result<(), ProducerError>>>,
    drain_timeout: Duration,
    /// Runs from the moment the producer starts shutting down (`close()`, or every handle
    /// dropped); when it fires, whatever is unconfirmed is given up.
    drain: Option<Pin<Box<Sleep>>>,
    /// `<producer id>-`, the start of every idempotency key; `None` when keys are off.
    key_prefix: Option<String>,
    /// A command came: the producer connects from then on (not before, so that listeners
    /// subscribed right after `Producer::new` see the first open).
    started: bool,
    /// `ready()` callers, answered once a connection is open.
    ready: Vec<oneshot::Sender<Result<(), ProducerError>>>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl<F: Connect> Task<F> {
    async fn run(mut self) {
        futures::future::poll_fn(|cx| self.poll(cx)).await;
        tracing::debug!("producer task ended");
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            self.take_commands(cx);
            if !self.started {
                if self.intake_closed {
                    // Every handle dropped before any use: nothing to send, nothing to open.
                    self.fail(ProducerError::Closed);
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
            if self.drain_expired(cx) {
                self.give_up();
                return Poll::Ready(());
            }

            // A new connection: everything unconfirmed goes out again, oldest first.
            if self.stream.is_open() && self.stream.connections() != self.connection {
                if self.connection != 0 {
                    let resent = self.pending.count_before(self.next_to_send) as u64;
                    let c = &self.shared.counters;
                    c.resent.fetch_add(resent, Ordering::Relaxed);
                }
                self.connection = self.stream.connections();
                self.shared
                    .counters
                    .connections
                    .store(self.connection, Ordering::Relaxed);
                self.next_to_send = self.pending.first().unwrap_or(self.next_seq);
                // The stream handed back what it had not flushed; it is all still pending here.
                drop(self.stream.take_unsent());
            }
            if self.stream.is_open() {
                self.write(cx);
            }

            match self.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Incoming::Ack(ack)))) => {
                    self.confirm(ack);
                    continue;
                }
                Poll::Ready(Some(Ok(other))) => {
                    tracing::debug!(frame = ?other, "producer ignores a frame that is not an ack");
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.fail(ProducerError::Stopped(e));
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    // Closed by us (below), so everything was settled.
                    self.fail(ProducerError::Closed);
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            self.settle_flushes();
            self.publish_stats();
            if self.stream.is_open() {
                for tx in self.ready.drain(..) {
                    let _ = tx.send(Ok(()));
                }
            }

            if self.stream.is_open() && self.stream.connections() != self.connection {
                continue; // the stream just connected: write before waiting
            }
            let done_accepting = self.intake_closed || self.close.is_some();
            if done_accepting && self.pending.is_empty() {
                let closed = futures::ready!(self.stream.poll_close_unpin(cx));
                if let Some(tx) = self.close.take() {
                    let _ = tx.send(closed.or_else(|e| match e {
                        Error::Unsent(_) => Ok(()),
                        e => Err(ProducerError::Stopped(e)),
                    }));
                }
                self.fail(ProducerError::Closed);
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
    }

    /// Copies the connection's counters where the handles read them.
    fn publish_stats(&self) {
        let st = self.stream.stats();
        let c = &self.shared.counters;
        c.in_flight
            .store(self.pending.len() as u64, Ordering::Relaxed);
        if let Some(rtt) = st.last_rtt {
            let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX - 1);
            c.last_rtt.store(nanos + 1, Ordering::Relaxed);
        }
    }

    /// Whether the producer is shutting down (closed, or every handle dropped) with messages
    /// still unconfirmed after the drain timeout. Starts the timeout the first time it finds
    /// the producer shutting down.
    fn drain_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !(self.intake_closed || self.close.is_some()) {
            return false;
        }
        let timeout = self.drain_timeout;
        let drain = self
            .drain
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // With nothing unconfirmed, the close under way is bounded by `close_timeout` alone.
        drain.as_mut().poll(cx).is_ready() && !self.pending.is_empty()
    }

    /// The drain timeout expired: every unconfirmed message, flush and `close()` learns so, and
    /// the task ends, dropping its connection (it never reconnects after this).
    fn give_up(&mut self) {
        let unconfirmed = self.pending.len();
        tracing::warn!(
            unconfirmed,
            timeout = ?self.drain_timeout,
            "producer drain timeout expired; giving up on unconfirmed messages"
        );
        for in_flight in self.pending.drain() {
            let _ = in_flight.reply.send(Err(ProducerError::Unconfirmed));
        }
        let expired = ProducerError::DrainTimeout { unconfirmed };
        for (_, tx) in self.flushes.drain(..) {
            let _ = tx.send(Err(expired.clone()));
        }
        if let Some(tx) = self.close.take() {
            let _ = tx.send(Err(expired));
        }
        // Anything sent from another handle after this is told the producer is closed.
        self.fail(ProducerError::Closed);
    }

    fn take_commands(&mut self, cx: &mut Context<'_>) {
        while !self.intake_closed {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Command::Send {
                    mut message,
                    reply,
                    permit,
                })) => {
                    self.started = true;
                    if self.close.is_some() {
                        let _ = reply.send(Err(ProducerError::Closed));
                        continue;
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    message.context = Some(seq.to_string());
                    if let Some(prefix) = &self.key_prefix {
                        // Set once, here: every re-send carries the same key.
                        message
                            .properties
                            .entry(IDEMPOTENCY_KEY.to_owned())
                            .or_insert_with(|| format!("{prefix}{seq}"));
                    }
                    self.pending.push(
                        seq,
                        InFlight {
                            message,
                            reply,
                            _permit: permit,
                        },
                    );
                    let in_flight = self.pending.len() as u64;
                    self.shared
                        .counters
                        .peak_in_flight
                        .fetch_max(in_flight, Ordering::Relaxed);
                }
                Poll::Ready(Some(Command::Flush(tx))) => {
                    self.started = true;
                    self.flushes.push((self.next_seq, tx));
                }
                Poll::Ready(Some(Command::Ready(tx))) => {
                    self.started = true;
                    self.ready.push(tx);
                }
                Poll::Ready(Some(Command::Close(tx))) => {
                    self.started = true;
                    // No more sends: fail the ones still waiting for a window slot.
                    self.window.close();
                    self.close = Some(tx);
                }
                Poll::Ready(None) => self.intake_closed = true,
                Poll::Pending => break,
            }
        }
    }

    /// Whether the stream is open on the connection the writes so far went to. Writing is only
    /// allowed then: while disconnected, the stream would queue a message for the next
    /// connection, ahead of the older unconfirmed ones that are re-sent from `pending`.
    fn on_tracked_connection(&self) -> bool {
        self.stream.is_open() && self.stream.connections() == self.connection
    }

    /// Writes pending messages not yet written to this connection, in order. Stops at the first
    /// sign of a loss (a failed `start_send`, or a `poll_ready` that found the connection gone,
    /// or even reconnected): after a loss, everything unconfirmed goes out again from `pending`,
    /// oldest first, once the task has seen the new connection.
    fn write(&mut self, cx: &mut Context<'_>) {
        let mut wrote = false;
        while let Some((seq, in_flight)) = self.pending.next_from(self.next_to_send) {
            if !self.on_tracked_connection() {
                break;
            }
            match self.stream.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                // Errors surface through the stream side.
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
            // `poll_ready` may have read a Close, an EOF or a keepalive timeout, and answered
            // Ready with nothing open (or with a new connection opened meanwhile).
            if !self.on_tracked_connection() {
                break;
            }
            let item = Outgoing::Publish(in_flight.message.clone());
            if self.stream.start_send_unpin(item).is_err() {
                break;
            }
            self.next_to_send = seq + 1;
            wrote = true;
        }
        if wrote {
            // Pending is fine: the stream keeps flushing as it is polled.
            let _ = self.stream.poll_flush_unpin(cx);
        }
    }

    fn confirm(&mut self, ack: ProducerAck) {
        let Some(seq) = ack.context.as_deref().and_then(|c| c.parse::<u64>().ok()) else {
            tracing::warn!(?ack, "acknowledgement without a context of ours; ignored");
            return;
        };
        let c = &self.shared.counters;
        let Some(in_flight) = self.pending.remove(seq) else {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let result = match ack.result {
            AckResult::Ok(id) => {
                c.confirmed.fetch_add(1, Ordering::Relaxed);
                Ok(id)
            }
            AckResult::Failed { code, message } => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                Err(ProducerError::Rejected { code, message })
            }
        };
        let _ = in_flight.reply.send(result);
    }

    fn settle_flushes(&mut self) {
        let oldest = self.pending.first().unwrap_or(u64::MAX);
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].0 <= oldest {
                let (_, tx) = self.flushes.swap_remove(i);
                let _ = tx.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    /// Stops for good: every waiter learns why.
    fn fail(&mut self, error: ProducerError) {
        *self.shared.failure.lock().expect("producer state lock") = Some(error.clone());
        self.window.close();
        for in_flight in self.pending.drain() {
            let _ = in_flight.reply.send(Err(error.clone()));
        }
        for (_, tx) in self.flushes.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        for tx in self.ready.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Send { reply, .. } => drop(reply.send(Err(error.clone()))),
                Command::Flush(tx) | Command::Ready(tx) => drop(tx.send(Err(error.clone()))),
                Command::Close(tx) => drop(tx.send(Ok(()))),
            }
        }
        if let Some(tx) = self.close.take() {
            let _ = tx.send(match error {
                ProducerError::Stopped(_) => Err(error),
                _ => Ok(()),
            });
        }
    }
}

impl<F: Connect> Drop for Task<F> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.fail(ProducerError::Closed);
        }
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Producer>();
    is_send::<Receipt>();
}

#[cfg(test)]
mod tests {
    use super::InFlightLog;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn in_order_and_out_of_order_confirmations() {
        let mut log = InFlightLog::new();
        assert_eq!((log.first(), log.next_from(0)), (None, None));
        for seq in 5..10 {
            log.push(seq, seq * 10);
        }
        assert_eq!((log.len(), log.first()), (5, Some(5)));
        assert_eq!(log.remove(7), Some(70));
        assert_eq!(log.remove(7), None);
        assert_eq!(log.next_from(7), Some((8, &80)));
        assert_eq!(log.next_from(0), Some((5, &50)));
        assert_eq!(log.count_before(9), 3);
        assert_eq!(log.remove(5), Some(50));
        assert_eq!(log.remove(6), Some(60));
        // 7 was gone already: the oldest is now 8.
        assert_eq!((log.len(), log.first()), (2, Some(8)));
        assert_eq!(
            (log.remove(4), log.remove(10), log.remove(u64::MAX)),
            (None, None, None)
        );
        assert_eq!(log.drain().collect::<Vec<_>>(), [80, 90]);
        assert!(log.is_empty());
        log.push(10, 100);
        assert_eq!(log.first(), Some(10));
    }

    proptest! {
        /// Any mix of pushes and removals matches an ordered map.
        #[test]
        fn behaves_like_an_ordered_map(ops in proptest::collection::vec((any::<bool>(), 0u64..40), 0..200)) {
            let mut log = InFlightLog::new();
            let mut model = BTreeMap::new();
            let mut next = 3u64;
            for (push, pick) in ops {
                if push {
                    log.push(next, next);
                    model.insert(next, next);
                    next += 1;
                } else {
                    let seq = pick + 3;
                    prop_assert_eq!(log.remove(seq), model.remove(&seq));
                }
                prop_assert_eq!(log.len(), model.len());
                prop_assert_eq!(log.first(), model.keys().next().copied());
                let from = pick + 2;
                prop_assert_eq!(log.next_from(from), model.range(from..).next().map(|(k, v)| (*k, v)));
                prop_assert_eq!(log.count_before(from), model.range(..from).count());
            }
            prop_assert_eq!(log.drain().collect::<Vec<_>>(), model.into_values().collect::<Vec<_>>());
        }
    }
}
