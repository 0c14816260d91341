//! [`ReconnectingStream`]: the auto-reconnecting `Stream` + `Sink`.
//!
//! # How it works
//!
//! One state machine, driven from inside `poll_next` and the `Sink` methods (no background task).
//! Its states are the variants of `State`, each holding what it needs, and `Core::transition` is
//! the one `match` that moves between them:
//!
//! ```text
//!            ┌───────────── retry, delay 0 ─────────────┐
//!            ▼                                          │
//!   ┌───▶ Idle ─attempt─▶ Connecting ─opened─▶ Open ─lost┴─▶ Backoff ─attempt─▶ Connecting …
//!   │                      │      ▲ retry, delay > 0 ─────┘  │      │
//!   │                      └──failed/timeout──▶ (retry) ─────┘      │ lost later (messages
//!   │                                           │                   ▼ still waiting)
//!   │ reconnect()            permanent error,   │            Open { lost } ─settle─▶ as "lost"
//!   │ (unless closed)        retry cap reached  ▼
//!   └──────────────────────────────────────── Done ◀─close done/timeout── Closing ◀─close()─ Open
//! ```
//!
//! | from | on | to |
//! |---|---|---|
//! | `Idle`, `Backoff` (delay passed) | attempt | `Connecting` |
//! | `Connecting` | opened | `Open` |
//! | `Connecting` | failed, timed out | `Idle` (retry now), `Backoff` (retry later), `Done` |
//! | `Open` | lost | `Idle`, `Backoff`, `Done`, as above |
//! | `Open` | lost later | `Open { lost }`, until the stream side has taken what the connection delivered (the sink side settles it at once) |
//! | `Open` | close | `Closing`, bounded by `close_timeout`, then `Done` |
//! | `Idle`, `Backoff`, `Connecting`, `Open { lost }` | close | `Done` |
//! | any but `Closing` and a closed `Done` | reconnect | `Idle` |
//!
//! Whichever side is polled drives everything: connecting, backoff timers, keepalive pings,
//! reading (so pongs and closes are seen even by a sink-only user) and writing the queue. When the
//! two halves are used from different tasks (`StreamExt::split`), every inner poll uses a waker that
//! wakes both tasks, so neither misses a state change made by the other.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::stream::FusedStream;
use futures::task::AtomicWaker;
use futures::{Sink, Stream, TryFutureExt};
use tokio::time::{sleep, sleep_until, Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use crate::backoff::{Backoff, Rng};
use crate::codec::{Codec, PulsarCodec};
use crate::config::{ReconnectConfig, UnsentPolicy};
use crate::error::{Chain, Disposition, Error};
use crate::event::{
    CloseEvent, Event, EventHub, GaveUpEvent, Listen, Listeners, OpenEvent, ReconnectingEvent,
};

/// A WebSocket connection as the stream uses it: a `Stream` of messages and a `Sink` for them,
/// with tungstenite's error type. `tokio_tungstenite::WebSocketStream` over any I/O is one.
pub trait Transport:
    Stream<Item = Result<Message, tungstenite::Error>>
    + Sink<Message, Error = tungstenite::Error>
    + Unpin
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin
{
}

/// Opens a fresh connection; called once per attempt.
///
/// Implemented for every closure `FnMut() -> impl Future<Output = Result<T, E>>` where `T` is a
/// [`Transport`] and `E: Into<Error>`, so a factory is usually just
/// `|| stream_websocket::connect(url.clone())`. Because it runs on every attempt, it can build a
/// new URL, fetch a new one-time password or set new headers each time. An error of your own
/// (an `anyhow::Error`, a message) becomes a retried [`Error::Factory`] with [`Error::factory`].
///
/// # Sending something first on every connection
///
/// APIs that want a subscribe or login frame first after every (re)connect get it from the
/// factory: it opens the socket, sends the frame, and only then returns the connection. The
/// `connect_timeout` covers the whole future, frame included, and items queued on the stream go
/// out only after it returned, so the frame is always first.
///
/// ```no_run
/// use futures::SinkExt;
/// use stream_websocket::tungstenite::Message;
/// use stream_websocket::{connect, Error, RawCodec, ReconnectConfig, ReconnectingStream};
///
/// # async fn run() -> Result<(), Error> {
/// let factory = || async {
///     let mut ws = connect("wss://feed.example.com/v1").await?;
///     ws.send(Message::text(r#"{"op":"subscribe","channel":"trades"}"#))
///         .await
///         .map_err(Error::from)?;
///     Ok::<_, Error>(ws)
/// };
/// let stream = ReconnectingStream::with_codec(factory, ReconnectConfig::default(), RawCodec);
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
///
/// To name the type of a stream in a struct, box the factory: [`BoxConnect`].
pub trait Connect {
    /// The connection it opens.
    type Transport: Transport;
    /// The attempt in progress.
    type Future: Future<Output = Result<Self::Transport, Error>>;

    /// Starts one attempt.
    fn connect(&mut self) -> Self::Future;
}

/// A boxed connection factory, for naming the type of a stream, producer or consumer in a
/// struct: `ReconnectingStream<BoxConnect>` or `Consumer<BoxConnect>`. Make one with
/// [`boxed`].
pub type BoxConnect<T = crate::WsStream> =
    Box<dyn FnMut() -> futures::future::BoxFuture<'static, Result<T, Error>> + Send>;

/// Boxes a factory closure into a [`BoxConnect`].
///
/// ```no_run
/// use stream_websocket::{boxed, connect, BoxConnect, ReconnectingStream};
///
/// struct Feed {
///     stream: ReconnectingStream<BoxConnect>,
/// }
/// let url = "wss://feed.example.com/v1".to_string();
/// let feed = Feed {
///     stream: ReconnectingStream::new(boxed(move || connect(url.clone()))),
/// };
/// # drop(feed);
/// ```
pub fn boxed<F, Fut, T, E>(mut factory: F) -> BoxConnect<T>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<Error> + 'static,
{
    Box::new(move || {
        let attempt = factory();
        Box::pin(async move { attempt.await.map_err(Into::into) })
    })
}

impl<F, Fut, T, E> Connect for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    T: Transport,
    E: Into<Error>,
{
    type Transport = T;
    type Future = futures::future::MapErr<Fut, fn(E) -> Error>;

    fn connect(&mut self) -> Self::Future {
        self().map_err(Into::into as fn(E) -> Error)
    }
}

/// The two tasks that may wait on the stream: the one polling the `Stream` side and the one
/// polling the `Sink` side. Inner futures and the transport get a waker that wakes both.
#[derive(Debug, Default)]
struct WakerPair {
    read: AtomicWaker,
    write: AtomicWaker,
    /// How many times it was woken: see `ReconnectingStream::poll_with`.
    wakes: AtomicUsize,
}

impl Wake for WakerPair {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Counted before either task runs, so the poll a wake causes sees it.
        self.wakes.fetch_add(1, Ordering::Release);
        self.read.wake();
        self.write.wake();
    }
}

/// Counters of a [`ReconnectingStream`], read with [`stats`](ReconnectingStream::stats). The
/// producer's and the consumer's stats carry the connection counters too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Connections opened so far.
    pub connections: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Messages yielded by the stream side.
    pub messages_in: u64,
    /// Items written to a connection whose flush completed (written, not necessarily received:
    /// see the sink's guarantee).
    pub messages_out: u64,
    /// Items accepted and not yet flushed: queued, or written and awaiting their flush.
    pub queue_depth: usize,
    /// Items handed back and not yet taken (see `take_unsent`).
    pub unsent: usize,
    /// The round trip of the last keepalive ping that was answered, if any was.
    pub last_rtt: Option<Duration>,
}

/// An auto-reconnecting WebSocket: a [`Stream`] of decoded messages and a [`Sink`] of outgoing
/// items that survives disconnects.
///
/// `F` is the connection factory ([`Connect`]); `C` the [`Codec`], by default [`PulsarCodec`]
/// (GDN / Pulsar JSON frames: yields [`Incoming`](crate::Incoming), accepts
/// [`Outgoing`](crate::Outgoing)).
///
/// Nothing happens until the stream is first polled (either side); then it connects, and
/// reconnects with backoff whenever the connection is lost, until
/// [`close`](futures::SinkExt::close) is called, an error classified as permanent occurs, or the
/// retry cap is reached. To open the first connection before anything else (for example, so that
/// a subscription exists before messages are published), await
/// [`ready`](Self::ready): listeners such as `on_open` see nothing until something polls.
///
/// # Stream
///
/// Yields `Ok(item)` for each decoded message. A message that does not decode is reported on the
/// error listeners and skipped. The stream ends with `Some(Err(e))` followed by `None` when it
/// stops on an error (a permanent failure such as HTTP 401, or [`Error::GaveUp`]), and with just
/// `None` after `close()`. It is fused: `None` forever after.
///
/// # Sink
///
/// Accepted items wait in a bounded queue (`queue_capacity`) while disconnected and are written
/// in order once a connection is open. A full queue makes `poll_ready` return `Pending`.
/// `poll_flush` completes once everything accepted so far has been written and flushed to a live
/// connection (it waits through reconnects). That means written to the connection's socket, not
/// received by the peer: if the connection dies after the flush, what was flushed into it is not
/// sent again. For delivery the server confirms, use [`gdn::Producer`](crate::gdn::Producer). Items written to a connection that dies before the
/// flush completes are re-queued in order (at-least-once) or handed back, as
/// [`UnsentPolicy`] says. Nothing is dropped silently: items left when the stream closes or gives
/// up are returned by [`take_unsent`](Self::take_unsent).
///
/// `close()` stops reconnecting at once (also during a backoff wait or a connect), writes the
/// queue if a connection is open, sends a Close frame and flushes, bounded by `close_timeout`. It
/// never opens a connection: call `flush()` first to wait for queued items to be written. It
/// returns [`Error::Unsent`] if items were left, which [`take_unsent`](Self::take_unsent) returns.
/// After `start_send` is refused (the stream closed or stopped), the refused item is also kept
/// there.
///
/// # Cancel safety
///
/// `StreamExt::next` is cancel safe. `SinkExt::send` is not: if its future is dropped before
/// `poll_ready` succeeded, the item is lost with it. Use `poll_ready`/`start_send` or `feed`
/// plus `flush` where that matters.
///
/// # Keepalive
///
/// While open, a Ping goes out every `ping_interval`; if no frame at all arrives within
/// `pong_timeout` of a ping, the connection is dropped as dead and reconnected. Keepalive runs
/// whenever either side is polled. A sink-only user that is idle between sends is covered at the
/// next send: its flush notices the stale deadline before anything is flushed, and what the send
/// wrote goes out again on the next connection. Messages read ahead and waiting unread are not
/// taken as a sign of life: once the read-ahead bound is full, reading pauses, and a peer that
/// answers no ping within `pong_timeout` is dropped as dead whatever waits unread (see
/// [`read_ahead`](crate::ReconnectConfigBuilder::read_ahead)).
///
/// # Frames sent before a failure
///
/// When a write fails or keepalive gives up on a connection, the frames the peer had already
/// sent and the transport still holds are read first (up to another `read_ahead_bytes`), so
/// they reach the stream side before the connection is dropped.
pub struct ReconnectingStream<F: Connect, C: Codec = PulsarCodec> {
    core: Core<F, C>,
    /// Wakes both sides: what inner futures and the transport are polled with.
    proxy: Waker,
}

// The stream never pins its factory, codec or transport in place (futures are boxed), so it can
// move freely whatever they are.
impl<F: Connect, C: Codec> Unpin for ReconnectingStream<F, C> {}

impl<F: Connect> ReconnectingStream<F, PulsarCodec> {
    /// A stream with the default configuration and the GDN / Pulsar codec.
    pub fn new(factory: F) -> Self {
        Self::with_config(factory, ReconnectConfig::default())
    }

    /// A stream with this configuration and the GDN / Pulsar codec.
    pub fn with_config(factory: F, config: ReconnectConfig) -> Self {
        Self::with_codec(factory, config, PulsarCodec)
    }
}

impl<F: Connect, C: Codec> ReconnectingStream<F, C> {
    /// A stream with this configuration and codec.
    pub fn with_codec(factory: F, config: ReconnectConfig, codec: C) -> Self {
        let backoff = match config.seed {
            Some(seed) => Backoff::new(config.backoff, seed),
            None => Backoff::new(config.backoff, Rng::entropy_seed()).with_shared_spread(),
        };
        let wakers = Arc::new(WakerPair::default());
        let proxy = Waker::from(wakers.clone());
        ReconnectingStream {
            core: Core {
                factory,
                codec,
                wakers,
                events: EventHub::new(config.event_capacity),
                backoff,
                state: State::Idle,
                queue: VecDeque::new(),
                unflushed: Vec::new(),
                unsent: Vec::new(),
                inbound: Inbound::default(),
                connections: 0,
                messages_in: 0,
                messages_out: 0,
                last_rtt: None,
                config,
            },
            proxy,
        }
    }

    /// Opens the connection if none is open (waiting through failed attempts and backoff, as
    /// any poll does) and writes what is queued: `flush()` under a name that says what it is for
    /// when nothing is queued yet.
    ///
    /// # Errors
    ///
    /// The error that stopped the stream (a permanent failure, [`Error::GaveUp`]), or
    /// [`Error::Closed`].
    pub async fn ready(&mut self) -> Result<(), Error> {
        futures::SinkExt::flush(self).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StreamStats {
        self.core.stats()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ReconnectConfig {
        &self.core.config
    }

    /// Whether a live connection is open right now.
    pub fn is_open(&self) -> bool {
        matches!(self.core.state, State::Open { lost: None, .. })
    }

    /// How many connections have been opened so far.
    pub fn connections(&self) -> u64 {
        self.core.connections
    }

    /// Retries made since the schedule last started over (a connection that made progress,
    /// or stayed up `min_uptime`, starts it over).
    pub fn retries(&self) -> u32 {
        self.core.backoff.retries()
    }

    /// The minimum backoff delay this instance drew.
    pub fn min_delay(&self) -> Duration {
        self.core.backoff.min_delay()
    }

    /// Outgoing items accepted but not yet flushed to a connection.
    pub fn pending(&self) -> usize {
        self.core.queue.len() + self.core.unflushed.len()
    }

    /// Takes back the items that will not be sent: those left when the stream closed or stopped,
    /// and, under [`UnsentPolicy::HandBack`], those whose connection died. In the order they were
    /// accepted.
    ///
    /// Until they are taken, items handed back count against `queue_capacity`: a full list makes
    /// `poll_ready` wait, and taking it wakes the task waiting there.
    pub fn take_unsent(&mut self) -> Vec<C::Out> {
        let unsent = mem::take(&mut self.core.unsent);
        if !unsent.is_empty() {
            self.proxy.wake_by_ref();
        }
        unsent
    }

    /// Drops the current connection (if any) and connects again at once with a fresh retry count.
    /// Also revives a stream that gave up or stopped on an error; not one that was closed.
    pub fn reconnect(&mut self) {
        self.core
            .transition(Transition::Reconnect, &mut Context::from_waker(&self.proxy));
        self.proxy.wake_by_ref();
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.core.codec
    }
}

impl<F: Connect, C: Codec> Listen for ReconnectingStream<F, C> {
    fn listeners(&self) -> Listeners {
        Listeners::new(&self.core.events)
    }
}

impl<F: Connect, C: Codec> fmt::Debug for ReconnectingStream<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.core;
        f.debug_struct("ReconnectingStream")
            .field("state", &c.state.name())
            .field("connections", &c.connections)
            .field("retries", &c.backoff.retries())
            .field("queued", &c.queue.len())
            .field("unflushed", &c.unflushed.len())
            .field("unsent", &c.unsent.len())
            .finish_non_exhaustive()
    }
}

impl<F: Connect, C: Codec> ReconnectingStream<F, C> {
    /// Polls `f` with the proxy waker, registering the caller's waker on `side` only when the
    /// answer is `Pending` (a `Ready` answer needs no waker, and registering on every message
    /// costs atomic read-modify-writes that showed in the throughput).
    ///
    /// Sound because of the wake count: a wake between the first poll and the registration
    /// went to the old waker, but it counted first, so `f` runs once more, now with the waker
    /// in place; any later wake reaches it. One more run at most, so a poll that wakes itself
    /// (a yield) still returns.
    #[inline(always)]
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        mut f: impl FnMut(&mut Core<F, C>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let wakers = &self.core.wakers;
        let wakes = wakers.wakes.load(Ordering::Acquire);
        let mut proxy = Context::from_waker(&self.proxy);
        if let Poll::Ready(v) = f(&mut self.core, &mut proxy) {
            return Poll::Ready(v);
        }
        let wakers = &self.core.wakers;
        match side {
            Side::Read => wakers.read.register(cx.waker()),
            Side::Write => wakers.write.register(cx.waker()),
        }
        if wakers.wakes.load(Ordering::Acquire) == wakes {
            return Poll::Pending;
        }
        f(&mut self.core, &mut proxy)
    }
}

/// Which side of the stream a task polls, for the waker it waits with.
#[derive(Clone, Copy)]
enum Side {
    Read,
    Write,
}

impl<F: Connect, C: Codec> Stream for ReconnectingStream<F, C> {
    type Item = Result<C::Item, Error>;

    // Inlined into the caller, a message read on the fast path reaches it without a round trip
    // through memory.
    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = this.poll_with(cx, Side::Read, Core::poll_next);
        if let Poll::Ready(Some(Ok(_))) = polled {
            this.core.messages_in += 1;
        }
        polled
    }
}

impl<F: Connect, C: Codec> FusedStream for ReconnectingStream<F, C> {
    fn is_terminated(&self) -> bool {
        matches!(
            self.core.state,
            State::Done(Ended {
                terminated: true,
                ..
            })
        )
    }
}

impl<F: Connect, C: Codec> Sink<C::Out> for ReconnectingStream<F, C> {
    type Error = Error;

    // Inlined, like `poll_next`: both are called once per item.
    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.core.has_room_now() {
            return Poll::Ready(Ok(()));
        }
        this.poll_with(cx, Side::Write, Core::poll_ready)
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: C::Out) -> Result<(), Error> {
        self.get_mut().core.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_with(cx, Side::Write, Core::poll_flush)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_with(cx, Side::Write, Core::poll_close)
    }
}

/// Where the stream is. Everything a transition depends on lives in its variant, and
/// [`Core::transition`] is the only place that moves from one to another.
enum State<T, Fut> {
    /// About to start an attempt.
    Idle,
    /// Waiting out a backoff delay.
    Backoff(Pin<Box<Sleep>>),
    /// An attempt is in flight.
    Connecting {
        fut: Pin<Box<tracing::instrument::Instrumented<Fut>>>,
        deadline: Pin<Box<Sleep>>,
    },
    /// Connected. `lost`: the connection failed while messages it delivered still wait for the
    /// stream side; the loss is handled once they are handed over, or at once by the sink side.
    Open { conn: Conn<T>, lost: Option<Lost> },
    /// `close()` was called on an open connection: writing what is queued, then the Close
    /// frame, until `deadline` (`close_timeout`).
    Closing {
        conn: Conn<T>,
        deadline: Pin<Box<Sleep>>,
        close_sent: bool,
    },
    /// Finished: closed, stopped on an error, or gave up.
    Done(Ended),
}

/// How a finished stream ended, and what it has told its user so far.
struct Ended {
    /// Why it stopped; `None` after `close()`.
    error: Option<Error>,
    /// The stream side has yielded `error` (or had none to yield).
    reported: bool,
    /// The stream side has yielded `None`.
    terminated: bool,
    /// `close()` was called: `reconnect()` does not revive it.
    closed: bool,
}

impl Ended {
    fn new(error: Option<Error>, closed: bool) -> Self {
        Ended {
            reported: error.is_none(),
            error,
            terminated: false,
            closed,
        }
    }
}

/// What moves the state machine: see [`Core::transition`].
enum Transition<T> {
    /// Start an attempt (from `Idle`, or `Backoff` once its delay passed).
    Attempt,
    /// The attempt succeeded.
    Opened(T),
    /// The attempt failed or timed out.
    AttemptFailed(Error),
    /// The open connection is over; the loss is handled now.
    Lost(Lost),
    /// The open connection is over, but the loss waits (see `State::Open`).
    LostLater(Lost),
    /// The pending loss of `State::Open` is handled now.
    SettleLoss,
    /// `close()` was called.
    Close,
    /// The closing handshake finished, failed or timed out.
    CloseDone,
    /// `reconnect()` was called.
    Reconnect,
}

impl<T> Transition<T> {
    fn name(&self) -> &'static str {
        match self {
            Transition::Attempt => "attempt",
            Transition::Opened(_) => "opened",
            Transition::AttemptFailed(_) => "attempt failed",
            Transition::Lost(_) => "lost",
            Transition::LostLater(_) => "lost later",
            Transition::SettleLoss => "settle loss",
            Transition::Close => "close",
            Transition::CloseDone => "close done",
            Transition::Reconnect => "reconnect",
        }
    }
}

impl<T, Fut> State<T, Fut> {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Backoff(_) => "backoff",
            State::Connecting { .. } => "connecting",
            State::Open { lost: None, .. } => "open",
            State::Open { lost: Some(_), .. } => "open (lost)",
            State::Closing { .. } => "closing",
            State::Done(_) => "done",
        }
    }

    /// Whether the sink refuses items: closing or done.
    fn is_stopped(&self) -> bool {
        matches!(self, State::Closing { .. } | State::Done(_))
    }
}

struct Conn<T> {
    transport: T,
    number: u64,
    opened_at: Instant,
    keepalive: Option<Keepalive>,
    /// Something was written since the last completed flush.
    needs_flush: bool,
    /// The peer's Close frame, once received: (code, reason).
    close_frame: Option<(Option<CloseCode>, String)>,
    /// The peer sent something the codec counts as progress (see `Codec::is_progress`): when
    /// the connection ends, the reconnect schedule starts over.
    progress: bool,
    /// Messages the stream side read one at a time since keepalive and the queue were last
    /// serviced. It reads so only while this is below `read_ahead`, so that keepalive is
    /// checked at least that often. (The sink side needs no such count: `start_send` only
    /// queues, and a flush, or `poll_ready` once `queue_capacity` items wait, services the
    /// connection.)
    direct_reads: usize,
    /// Items written to it whose flush completed.
    flushed: u64,
}

impl<T> Conn<T> {
    /// Whether servicing it would write something: queued items, a flush or a ping.
    fn has_writes<O>(&self, queue: &VecDeque<O>) -> bool {
        !queue.is_empty() || self.needs_flush || self.keepalive.as_ref().is_some_and(|k| k.ping_due)
    }
}

/// `at + after`, or a point some thirty years away where that overflows (as tokio's `sleep`
/// does), so that any duration setting works.
fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// Ping schedule and dead-connection detection for one connection.
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    next_ping: Instant,
    /// When the oldest ping not yet followed by any inbound frame was sent.
    outstanding: Option<Instant>,
    ping_due: bool,
    /// When the last ping was written, until its pong arrives.
    ping_sent: Option<Instant>,
    /// The round trip of the last ping answered.
    last_rtt: Option<Duration>,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        let next_ping = later(now, interval);
        Keepalive {
            interval,
            timeout,
            timer: Box::pin(sleep_until(next_ping)),
            next_ping,
            outstanding: None,
            ping_due: false,
            ping_sent: None,
            last_rtt: None,
        }
    }

    /// Fires due pings and reports a connection with no frame within `timeout` of a ping.
    fn poll(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if let Some(since) = self.outstanding {
                if now >= later(since, self.timeout) {
                    return Err(Error::KeepaliveTimeout(self.timeout));
                }
            }
            if now >= self.next_ping {
                self.ping_due = true;
                self.next_ping = later(now, self.interval);
                self.outstanding.get_or_insert(now);
            }
            let deadline = match self.outstanding {
                Some(since) => later(since, self.timeout).min(self.next_ping),
                None => self.next_ping,
            };
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    /// A pong arrived: the round trip of the ping it answers.
    fn pong(&mut self) {
        if let Some(sent) = self.ping_sent.take() {
            self.last_rtt = Some(sent.elapsed());
        }
    }

    /// Any inbound frame proves the connection alive.
    fn alive(&mut self) {
        self.outstanding = None;
    }
}

struct Core<F: Connect, C: Codec> {
    factory: F,
    codec: C,
    /// Behind the proxy waker that inner futures and the transport get.
    wakers: Arc<WakerPair>,
    config: ReconnectConfig,
    events: EventHub,
    backoff: Backoff,
    state: State<F::Transport, F::Future>,
    /// Accepted, not yet written.
    queue: VecDeque<C::Out>,
    /// Written to the current connection, not yet flushed.
    unflushed: Vec<C::Out>,
    /// Handed back to the caller.
    unsent: Vec<C::Out>,
    /// Decoded, not yet yielded.
    inbound: Inbound<C::Item>,
    connections: u64,
    /// Items yielded by the stream side.
    messages_in: u64,
    /// Items flushed to connections that are gone (the open one counts its own).
    messages_out: u64,
    /// The round trip of the last ping answered, on any connection.
    last_rtt: Option<Duration>,
}

/// What servicing an open connection reads first.
#[derive(Clone, Copy)]
enum Read {
    /// Until one decoded message waits (or the transport has nothing more).
    One,
    /// Until the read-ahead limit is reached (or the transport has nothing more).
    Ahead,
    /// Nothing: the caller just found the transport empty, and it will wake us.
    Nothing,
}

/// How much may wait decoded in [`Inbound`]: `read_ahead` messages and `read_ahead_bytes`.
#[derive(Clone, Copy, Debug)]
struct ReadLimit {
    messages: usize,
    bytes: usize,
}

impl ReadLimit {
    fn of(config: &ReconnectConfig) -> Self {
        ReadLimit {
            messages: config.read_ahead,
            bytes: config.read_ahead_bytes,
        }
    }
}

/// Decoded messages waiting for the stream side, with the size of the frame each came in.
struct Inbound<T> {
    items: VecDeque<(T, usize)>,
    /// The sum of the frame sizes of `items`.
    bytes: usize,
}

impl<T> Default for Inbound<T> {
    fn default() -> Self {
        Inbound {
            items: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T> Inbound<T> {
    #[inline]
    fn pop(&mut self) -> Option<T> {
        let (item, len) = self.items.pop_front()?;
        self.bytes -= len;
        Some(item)
    }

    fn push(&mut self, item: T, len: usize) {
        self.bytes += len;
        self.items.push_back((item, len));
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `limit` is reached: no more is read until the stream side takes some.
    fn is_full(&self, limit: ReadLimit) -> bool {
        self.items.len() >= limit.messages || self.bytes >= limit.bytes
    }
}

/// How servicing an open connection went.
enum Lost {
    /// The peer sent a Close frame, or the stream ended after one.
    Clean,
    /// The connection failed.
    Error(Error),
}

impl<F: Connect, C: Codec> Core<F, C> {
    // ----- the state machine -----------------------------------------------------------------

    /// Every change of state. The side effects of each (events, logs, the queue, the backoff)
    /// are in the helpers it calls, which return the next state.
    fn transition(&mut self, t: Transition<F::Transport>, cx: &mut Context<'_>) {
        let from = mem::replace(&mut self.state, State::Idle);
        let from_name = from.name();
        self.state = match (from, t) {
            (State::Idle | State::Backoff(_), Transition::Attempt) => self.start_attempt(),
            (State::Connecting { .. }, Transition::Opened(transport)) => self.opened(transport),
            (State::Connecting { .. }, Transition::AttemptFailed(e)) => self.attempt_failed(e, cx),
            (State::Open { conn, .. }, Transition::Lost(lost)) => {
                self.connection_lost(conn, lost, false, cx)
            }
            (State::Closing { conn, .. }, Transition::Lost(lost)) => {
                self.connection_lost(conn, lost, true, cx)
            }
            (State::Open { conn, lost: None }, Transition::LostLater(lost)) => {
                // The stream side hands over what the connection delivered first.
                cx.waker().wake_by_ref();
                State::Open {
                    conn,
                    lost: Some(lost),
                }
            }
            (
                State::Open {
                    conn,
                    lost: Some(lost),
                },
                Transition::SettleLoss,
            ) => self.connection_lost(conn, lost, false, cx),
            // `close()`: nothing reopens. An open connection closes its handshake first; one
            // that is already lost, a backoff wait or a connect in flight simply end.
            (State::Open { conn, lost: None }, Transition::Close) => {
                tracing::debug!("close requested");
                State::Closing {
                    conn,
                    deadline: Box::pin(sleep(self.config.close_timeout)),
                    close_sent: false,
                }
            }
            (
                State::Open {
                    conn,
                    lost: Some(lost),
                },
                Transition::Close,
            ) => self.connection_lost(conn, lost, true, cx),
            (State::Idle | State::Backoff(_) | State::Connecting { .. }, Transition::Close) => {
                tracing::debug!(state = from_name, "close requested");
                self.finish(None, cx)
            }
            (State::Done(mut ended), Transition::Close) => {
                ended.closed = true;
                State::Done(ended)
            }
            (State::Closing { conn, .. }, Transition::CloseDone) => {
                self.retire(&conn);
                self.finish(None, cx)
            }
            // `reconnect()`: drop what there is and start again with a fresh retry count, unless
            // the stream is being or was closed.
            (
                from @ (State::Closing { .. } | State::Done(Ended { closed: true, .. })),
                Transition::Reconnect,
            ) => from,
            (from, Transition::Reconnect) => self.manual_reconnect(from),
            (from, t) => {
                // Not a transition of this machine: nothing changes.
                debug_assert!(false, "no transition from {} on {}", from.name(), t.name());
                from
            }
        };
        if self.state.name() != from_name {
            tracing::trace!(from = from_name, to = self.state.name(), "state");
        }
    }

    // ----- the Stream side -------------------------------------------------------------------

    /// The stream side. This side needs one message at a time, so it reads just that: handing
    /// each message over before the transport reads on lets a transport that lends its read
    /// buffer to the messages (tungstenite does) keep reusing one large buffer, where holding a
    /// batch of them would force it into small reads and copies. Keepalive and the queue are
    /// serviced whenever the transport has nothing more, whenever something is to be written,
    /// and at least every `read_ahead` messages, as often as when a batch of `read_ahead` was
    /// read ahead.
    #[inline(always)]
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<C::Item, Error>>> {
        // The common cases, kept small: a message read ahead, or, open and nothing waiting
        // either way, a message in the transport.
        if let Some(item) = self.inbound.pop() {
            return Poll::Ready(Some(Ok(item)));
        }
        let mut read = None;
        if let State::Open { conn, lost: None } = &mut self.state {
            if conn.direct_reads < self.config.read_ahead {
                if conn.has_writes(&self.queue) {
                    return self.poll_next_slow(cx, None);
                }
                match read_next(conn, &mut self.codec, &self.events, cx) {
                    Poll::Ready(Ok((item, _))) => {
                        conn.direct_reads += 1;
                        return Poll::Ready(Some(Ok(item)));
                    }
                    // Nothing there: the transport will wake us.
                    Poll::Pending => read = Some(Read::Nothing),
                    Poll::Ready(Err(lost)) => self.transition(Transition::Lost(lost), cx),
                }
            }
        }
        self.poll_next_slow(cx, read)
    }

    /// Everything else on the stream side. `read`: what the fast path already found out about
    /// the transport.
    #[inline(never)]
    fn poll_next_slow(
        &mut self,
        cx: &mut Context<'_>,
        mut read: Option<Read>,
    ) -> Poll<Option<Result<C::Item, Error>>> {
        loop {
            if let Some(item) = self.inbound.pop() {
                return Poll::Ready(Some(Ok(item)));
            }
            let read = match &mut self.state {
                State::Done(ended) => {
                    if !ended.reported {
                        ended.reported = true;
                        if let Some(e) = ended.error.clone() {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    ended.terminated = true;
                    return Poll::Ready(None);
                }
                State::Closing { .. } => {
                    // Let a close in progress finish when the user polls only this side.
                    ready!(self.poll_close(cx)).ok();
                    continue;
                }
                // Everything the connection delivered was handed over: now its loss.
                State::Open { lost: Some(_), .. } => {
                    self.transition(Transition::SettleLoss, cx);
                    continue;
                }
                State::Open { conn, lost: None } => match read.take() {
                    Some(read) => read,
                    // Anything to write goes out (and keepalive is checked) before the next
                    // message is handed over, as when all reading went through `service`.
                    None if conn.direct_reads < self.config.read_ahead
                        && !conn.has_writes(&self.queue) =>
                    {
                        match read_next(conn, &mut self.codec, &self.events, cx) {
                            // `inbound` is empty: this is the next message in order.
                            Poll::Ready(Ok((item, _))) => {
                                conn.direct_reads += 1;
                                return Poll::Ready(Some(Ok(item)));
                            }
                            Poll::Pending => Read::Nothing,
                            Poll::Ready(Err(lost)) => {
                                self.transition(Transition::Lost(lost), cx);
                                continue;
                            }
                        }
                    }
                    None => Read::One,
                },
                State::Idle | State::Backoff(_) | State::Connecting { .. } => {
                    // Connect (or wait); once open, read as above.
                    ready!(self.poll_open(cx));
                    continue;
                }
            };
            if let Err(lost) = self.service(cx, read) {
                let t = if self.inbound.is_empty() {
                    Transition::Lost(lost)
                } else {
                    Transition::LostLater(lost)
                };
                self.transition(t, cx);
                continue;
            }
            if self.inbound.is_empty() {
                return Poll::Pending;
            }
        }
    }

    // ----- the Sink side ---------------------------------------------------------------------

    /// The sink's answer once the stream is closing or done.
    fn stopped_error(&self) -> Error {
        match &self.state {
            State::Done(Ended { error: Some(e), .. }) => e.clone(),
            _ => Error::Closed,
        }
    }

    /// Items handed back count against the bound until they are taken, so that under
    /// [`UnsentPolicy::HandBack`] a user who never takes them cannot pile them up.
    fn has_room(&self) -> bool {
        self.queue.len() + self.unflushed.len() + self.unsent.len() < self.config.queue_capacity
    }

    /// `poll_ready`'s answer when it is `Ready(Ok)` without any work: nothing to handle first and
    /// room in the queue.
    #[inline]
    fn has_room_now(&self) -> bool {
        !matches!(
            self.state,
            State::Open { lost: Some(_), .. } | State::Closing { .. } | State::Done(_)
        ) && self.has_room()
    }

    /// The sink side does not wait for the reader: a pending loss is handled at once (the
    /// messages the connection delivered stay in `inbound` for the stream side).
    fn settle_loss(&mut self, cx: &mut Context<'_>) {
        if let State::Open { lost: Some(_), .. } = self.state {
            self.transition(Transition::SettleLoss, cx);
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.settle_loss(cx);
        loop {
            if self.state.is_stopped() {
                return Poll::Ready(Err(self.stopped_error()));
            }
            if self.has_room() {
                return Poll::Ready(Ok(()));
            }
            // Full: push the queue out, which needs a connection.
            if !ready!(self.poll_open(cx)) {
                continue;
            }
            if let Err(lost) = self.service(cx, Read::Ahead) {
                self.transition(Transition::Lost(lost), cx);
                continue;
            }
            if !self.has_room() {
                return Poll::Pending;
            }
        }
    }

    /// An accepted item waits in the queue; it is written when either side next services the
    /// connection (a flush, a full queue, or the stream side). Refused once the stream is
    /// closing or done.
    #[inline]
    fn start_send(&mut self, item: C::Out) -> Result<(), Error> {
        if self.state.is_stopped() {
            // Refused, but not lost: the caller gets it back from take_unsent().
            self.unsent.push(item);
            return Err(self.stopped_error());
        }
        self.queue.push_back(item);
        Ok(())
    }

    /// The open connection failed on the write side (or keepalive gave up on it): reads what
    /// the transport already holds into `inbound`, so that the messages the peer sent before the
    /// failure still reach the stream side. Stops when nothing more is there, at the end of the
    /// transport, or once another `read_ahead_bytes` was read. (Not at `read_ahead` messages:
    /// what a dead connection holds is finite, and anything left unread here is lost.)
    #[cold]
    #[inline(never)]
    fn salvage_reads(&mut self, cx: &mut Context<'_>) {
        let State::Open { conn, .. } = &mut self.state else {
            return;
        };
        let cap = ReadLimit {
            messages: usize::MAX,
            bytes: self
                .inbound
                .bytes
                .saturating_add(self.config.read_ahead_bytes),
        };
        // How the connection ends does not matter here: it already failed.
        let _ = read_available(
            conn,
            &mut self.inbound,
            cap,
            &mut self.codec,
            &self.events,
            cx,
        );
        if !self.inbound.is_full(cap) {
            return;
        }
        tracing::warn!(
            messages = self.inbound.len(),
            "stopped reading a failed connection at the read-ahead byte limit; later frames are lost with it"
        );
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.settle_loss(cx);
        loop {
            if self.state.is_stopped() {
                return Poll::Ready(Err(self.stopped_error()));
            }
            if !ready!(self.poll_open(cx)) {
                continue;
            }
            if let Err(lost) = self.service(cx, Read::Ahead) {
                self.transition(Transition::Lost(lost), cx);
                continue;
            }
            let State::Open { conn, .. } = &self.state else {
                continue;
            };
            if self.queue.is_empty() && !conn.needs_flush {
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !matches!(
            self.state,
            State::Closing { .. } | State::Done(Ended { closed: true, .. })
        ) {
            self.transition(Transition::Close, cx);
        }
        loop {
            let State::Closing { deadline, .. } = &mut self.state else {
                // Done.
                return Poll::Ready(if self.unsent.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Unsent(self.unsent.len()))
                });
            };
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("closing handshake timed out");
                self.transition(Transition::CloseDone, cx);
                continue;
            }
            match ready!(self.poll_closing(cx)) {
                Ok(()) => {}
                Err(Lost::Error(e)) => {
                    tracing::debug!(error = %Chain(&e), "connection failed while closing")
                }
                Err(Lost::Clean) => {}
            }
            self.transition(Transition::CloseDone, cx);
        }
    }

    /// Writes the queue, then the Close frame, then waits for the transport to close.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        let State::Closing {
            conn, close_sent, ..
        } = &mut self.state
        else {
            return Poll::Ready(Ok(()));
        };
        if !*close_sent {
            write_queue(
                conn,
                &mut self.queue,
                &mut self.unflushed,
                &mut self.codec,
                cx,
            )
            .map_err(Lost::Error)?;
            if !self.queue.is_empty() || conn.needs_flush {
                return Poll::Pending;
            }
            ready!(Pin::new(&mut conn.transport).poll_ready(cx)).map_err(lost_from)?;
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            Pin::new(&mut conn.transport)
                .start_send(Message::Close(Some(frame)))
                .map_err(lost_from)?;
            *close_sent = true;
        }
        ready!(Pin::new(&mut conn.transport).poll_close(cx)).map_err(lost_from)?;
        Poll::Ready(Ok(()))
    }

    // ----- the lifecycle ---------------------------------------------------------------------

    /// Drives connecting and backoff. `Ready(true)`: a connection is open (or closing);
    /// `Ready(false)`: the stream is done; `Pending`: waiting for a timer or the factory.
    ///
    /// One call starts at most [`ATTEMPTS_PER_POLL`] attempts: after that many failed at once
    /// it yields (waking itself), as tokio's cooperative budget would, so a factory that fails
    /// immediately never keeps the caller's task from the executor.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut attempts = 0;
        loop {
            let outcome = match &mut self.state {
                State::Open { .. } | State::Closing { .. } => return Poll::Ready(true),
                State::Done(_) => return Poll::Ready(false),
                State::Idle => Transition::Attempt,
                State::Backoff(delay) => {
                    ready!(delay.as_mut().poll(cx));
                    Transition::Attempt
                }
                State::Connecting { fut, deadline } => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(transport)) => Transition::Opened(transport),
                    Poll::Ready(Err(e)) => Transition::AttemptFailed(e),
                    Poll::Pending => {
                        ready!(deadline.as_mut().poll(cx));
                        let timeout = self.config.connect_timeout;
                        Transition::AttemptFailed(Error::ConnectTimeout(timeout))
                    }
                },
            };
            if let Transition::Attempt = outcome {
                if attempts == ATTEMPTS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                attempts += 1;
            }
            self.transition(outcome, cx);
        }
    }

    fn start_attempt(&mut self) -> State<F::Transport, F::Future> {
        let attempt = self.backoff.retries();
        let connection = self.connections + 1;
        let span = tracing::info_span!("ws_connect", attempt, connection);
        span.in_scope(|| tracing::debug!("connecting"));
        let fut = self.factory.connect().instrument(span);
        State::Connecting {
            fut: Box::pin(fut),
            deadline: Box::pin(sleep(self.config.connect_timeout)),
        }
    }

    fn opened(&mut self, transport: F::Transport) -> State<F::Transport, F::Future> {
        self.connections += 1;
        let now = Instant::now();
        let keepalive = self
            .config
            .ping_interval
            .map(|every| Keepalive::new(every, self.config.pong_timeout, now));
        let attempt = self.backoff.retries();
        tracing::info!(connection = self.connections, attempt, "connected");
        self.events.emit(Event::Open(OpenEvent {
            connection: self.connections,
            attempt,
        }));
        State::Open {
            conn: Conn {
                transport,
                number: self.connections,
                opened_at: now,
                keepalive,
                needs_flush: false,
                close_frame: None,
                progress: false,
                direct_reads: 0,
                flushed: 0,
            },
            lost: None,
        }
    }

    fn attempt_failed(
        &mut self,
        error: Error,
        cx: &mut Context<'_>,
    ) -> State<F::Transport, F::Future> {
        tracing::warn!(error = %Chain(&error), attempt = self.backoff.retries(), "connection attempt failed");
        self.events.emit(Event::Error(error.clone()));
        let plan = self.plan(error);
        self.follow(plan, cx)
    }

    /// The connection is over: report it, release what it held, and plan what follows (just
    /// stopping, if `closing`).
    fn connection_lost(
        &mut self,
        conn: Conn<F::Transport>,
        lost: Lost,
        closing: bool,
        cx: &mut Context<'_>,
    ) -> State<F::Transport, F::Future> {
        // The transport is dropped with `conn`: its wakers die with it, so wake both sides.
        cx.waker().wake_by_ref();
        self.retire(&conn);
        let (code, reason) = conn.close_frame.clone().unwrap_or((None, String::new()));
        let (failed, cause) = match lost {
            Lost::Clean => (
                false,
                Error::ConnectionClosed {
                    code,
                    reason: reason.clone(),
                },
            ),
            Lost::Error(e) => (true, e),
        };
        if failed {
            tracing::warn!(connection = conn.number, error = %Chain(&cause), "connection lost");
        } else {
            tracing::info!(connection = conn.number, ?code, "connection closed by peer");
        }
        self.release_unflushed();
        // Reset on evidence: a connection the peer made progress on starts the schedule over,
        // however short it lived (unless the server asked for time with 1013); one that proved
        // nothing must have stayed up for `min_uptime`.
        let uptime = conn.opened_at.elapsed();
        let try_later = cause.close_code() == Some(CloseCode::Again);
        if (conn.progress && !try_later) || uptime >= self.config.min_uptime {
            self.backoff.restart(uptime);
        }
        let plan = if closing {
            Plan::Closed
        } else {
            self.plan(cause.clone())
        };
        // A failure is an error event; so is a close that ends the stream or should alarm.
        if failed || matches!(plan, Plan::Stop(_)) || cause.is_alarming_close() {
            self.events.emit(Event::Error(cause.clone()));
        }
        self.events.emit(Event::Close(CloseEvent {
            connection: conn.number,
            code,
            reason,
            reconnect: matches!(plan, Plan::Retry(_)),
            error: Some(cause),
            progress: conn.progress,
        }));
        drop(conn);
        self.follow(plan, cx)
    }

    fn follow(&mut self, plan: Plan, cx: &mut Context<'_>) -> State<F::Transport, F::Future> {
        match plan {
            Plan::Retry(delay) => self.schedule(delay),
            Plan::Stop(error) => self.finish(Some(error), cx),
            Plan::GiveUp { attempts, cause } => {
                tracing::warn!(attempts, "retry cap reached; giving up");
                self.events.emit(Event::GaveUp(GaveUpEvent {
                    attempts,
                    last_error: cause.clone(),
                }));
                let error = Error::GaveUp {
                    attempts,
                    last: Box::new(cause),
                };
                self.finish(Some(error), cx)
            }
            Plan::Closed => self.finish(None, cx),
        }
    }

    /// What follows a failure: classification, then the backoff (which may give up).
    fn plan(&mut self, cause: Error) -> Plan {
        if self.config.disposition(&cause) == Disposition::Stop {
            tracing::warn!(error = %Chain(&cause), "permanent error; not reconnecting");
            return Plan::Stop(cause);
        }
        match self.backoff.next_delay() {
            Some(delay) => {
                let max = self.config.backoff.max_delay;
                Plan::Retry(delay.max(cause.wait_at_least(self.backoff.min_delay(), max)))
            }
            None => Plan::GiveUp {
                attempts: self.backoff.retries(),
                cause,
            },
        }
    }

    fn schedule(&mut self, delay: Duration) -> State<F::Transport, F::Future> {
        let attempt = self.backoff.retries();
        tracing::info!(attempt, delay_ms = delay.as_millis() as u64, "reconnecting");
        self.events
            .emit(Event::Reconnecting(ReconnectingEvent { attempt, delay }));
        if delay.is_zero() {
            State::Idle
        } else {
            State::Backoff(Box::pin(sleep(delay)))
        }
    }

    /// Ends the stream. Whatever was not sent is handed back. `error`: `None` when closed.
    fn finish(
        &mut self,
        error: Option<Error>,
        cx: &mut Context<'_>,
    ) -> State<F::Transport, F::Future> {
        self.release_unflushed();
        self.unsent.extend(self.queue.drain(..));
        cx.waker().wake_by_ref();
        let closed = error.is_none();
        State::Done(Ended::new(error, closed))
    }

    /// Keeps what the stats need of a connection that is going away.
    fn retire(&mut self, conn: &Conn<F::Transport>) {
        self.messages_out += conn.flushed;
        if let Some(rtt) = conn.keepalive.as_ref().and_then(|ka| ka.last_rtt) {
            self.last_rtt = Some(rtt);
        }
    }

    /// The counters so far.
    fn stats(&self) -> StreamStats {
        let conn = match &self.state {
            State::Open { conn, .. } | State::Closing { conn, .. } => Some(conn),
            _ => None,
        };
        StreamStats {
            connections: self.connections,
            reconnects: self.connections.saturating_sub(1),
            messages_in: self.messages_in,
            messages_out: self.messages_out + conn.map_or(0, |c| c.flushed),
            queue_depth: self.queue.len() + self.unflushed.len(),
            unsent: self.unsent.len(),
            last_rtt: conn
                .and_then(|c| c.keepalive.as_ref())
                .and_then(|ka| ka.last_rtt)
                .or(self.last_rtt),
        }
    }

    /// Items written to a connection that is gone: re-queue (in order, ahead of newer ones) or
    /// hand back, as configured.
    fn release_unflushed(&mut self) {
        match self.config.unsent_policy {
            UnsentPolicy::Requeue => {
                while let Some(item) = self.unflushed.pop() {
                    self.queue.push_front(item);
                }
            }
            UnsentPolicy::HandBack => {
                self.unsent.append(&mut self.unflushed);
                self.unsent.extend(self.queue.drain(..));
            }
        }
    }

    /// `reconnect()` from any state but closing or closed: the next poll starts an attempt.
    fn manual_reconnect(
        &mut self,
        from: State<F::Transport, F::Future>,
    ) -> State<F::Transport, F::Future> {
        tracing::info!(state = from.name(), "manual reconnect");
        if let State::Open { conn, .. } = from {
            self.retire(&conn);
            self.release_unflushed();
            self.events.emit(Event::Close(CloseEvent {
                connection: conn.number,
                code: None,
                reason: String::new(),
                reconnect: true,
                error: None,
                progress: conn.progress,
            }));
        }
        self.backoff.reset();
        State::Idle
    }

    // ----- an open connection ----------------------------------------------------------------

    /// Reads what is there (as `read` says), checks keepalive, and writes the queue.
    ///
    /// Messages read ahead are not taken as a sign of life: once `read_ahead` is full, reading
    /// pauses, and a peer that answers no ping within `pong_timeout` counts as gone, whatever
    /// waits unread. When keepalive or a write fails, what the transport still holds (frames the
    /// peer sent before the failure) is read into `inbound` first, so that none of it is lost.
    fn service(&mut self, cx: &mut Context<'_>, read: Read) -> Result<(), Lost> {
        let State::Open { conn, .. } = &mut self.state else {
            return Ok(());
        };
        conn.direct_reads = 0;
        let limit = ReadLimit::of(&self.config);
        let until = match read {
            Read::One => Some(ReadLimit {
                messages: 1,
                bytes: usize::MAX,
            }),
            Read::Ahead => Some(limit),
            Read::Nothing => None,
        };
        if let Some(until) = until {
            read_available(
                conn,
                &mut self.inbound,
                until,
                &mut self.codec,
                &self.events,
                cx,
            )?;
        }
        let serviced = match &mut conn.keepalive {
            Some(ka) => ka.poll(cx),
            None => Ok(()),
        }
        .and_then(|()| {
            write_queue(
                conn,
                &mut self.queue,
                &mut self.unflushed,
                &mut self.codec,
                cx,
            )
        });
        if let Err(e) = serviced {
            self.salvage_reads(cx);
            return Err(Lost::Error(e));
        }
        Ok(())
    }
}

/// How many connection attempts one poll may start before it yields: the first, and one
/// immediate retry (a first reconnect whose window is zero, or drew zero).
const ATTEMPTS_PER_POLL: u32 = 2;

/// What follows a failure.
enum Plan {
    /// Reconnect after this delay.
    Retry(Duration),
    /// Stop on this (permanent) error.
    Stop(Error),
    /// The retry cap is reached.
    GiveUp { attempts: u32, cause: Error },
    /// `close()` was called: just stop.
    Closed,
}

fn lost_from(e: tungstenite::Error) -> Lost {
    Lost::Error(e.into())
}

/// Reads until the transport has nothing more or `inbound` is full.
fn read_available<T: Transport, C: Codec>(
    conn: &mut Conn<T>,
    inbound: &mut Inbound<C::Item>,
    limit: ReadLimit,
    codec: &mut C,
    events: &EventHub,
    cx: &mut Context<'_>,
) -> Result<(), Lost> {
    while !inbound.is_full(limit) {
        match read_next(conn, codec, events, cx) {
            Poll::Ready(Ok((item, len))) => inbound.push(item, len),
            Poll::Ready(Err(lost)) => return Err(lost),
            Poll::Pending => return Ok(()),
        }
    }
    Ok(())
}

/// Reads until the next decoded item. `Pending`: the transport has nothing more for now (and
/// will wake the task); an error: the connection is over. Control frames and frames that do
/// not decode (reported to the error listeners) are consumed on the way.
#[inline(always)]
fn read_next<T: Transport, C: Codec>(
    conn: &mut Conn<T>,
    codec: &mut C,
    events: &EventHub,
    cx: &mut Context<'_>,
) -> Poll<Result<(C::Item, usize), Lost>> {
    loop {
        let msg = match Pin::new(&mut conn.transport).poll_next(cx) {
            Poll::Ready(Some(Ok(msg))) => msg,
            Poll::Pending => return Poll::Pending,
            Poll::Ready(end) => return Poll::Ready(Err(connection_ended(conn, end))),
        };
        if let Some(ka) = &mut conn.keepalive {
            ka.alive();
        }
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            let len = msg.len();
            match codec.decode(msg) {
                Ok(item) => {
                    if !conn.progress {
                        conn.progress = codec.is_progress(&item);
                    }
                    return Poll::Ready(Ok((item, len)));
                }
                Err(e) => undecodable(events, e),
            }
        } else if let Message::Pong(_) = msg {
            if let Some(ka) = &mut conn.keepalive {
                ka.pong();
            }
        } else if let Some(lost) = control_frame(conn, msg, cx) {
            return Poll::Ready(Err(lost));
        }
    }
}

/// The transport ended (`None`) or failed.
#[cold]
#[inline(never)]
fn connection_ended<T: Transport>(
    conn: &Conn<T>,
    end: Option<Result<Message, tungstenite::Error>>,
) -> Lost {
    match (end, &conn.close_frame) {
        // After the peer's Close frame, the end of the stream or a failure to answer it (the
        // peer already went away) does not make the close any less clean.
        (_, Some(_)) => Lost::Clean,
        (Some(Err(e)), None) => Lost::Error(e.into()),
        (_, None) => Lost::Error(Error::ConnectionClosed {
            code: None,
            reason: "stream ended without a close frame".into(),
        }),
    }
}

#[cold]
#[inline(never)]
fn undecodable(events: &EventHub, e: crate::error::DecodeError) {
    tracing::warn!(error = %e, "skipping a frame that does not decode");
    events.emit(Event::Error(Error::Decode(e)));
}

/// A control frame: a Close ends the connection (cleanly), the others are skipped.
#[inline(never)]
fn control_frame<T: Transport>(
    conn: &mut Conn<T>,
    msg: Message,
    cx: &mut Context<'_>,
) -> Option<Lost> {
    let Message::Close(frame) = msg else {
        return None;
    };
    conn.close_frame = Some(match frame {
        Some(f) => (Some(f.code), f.reason.as_str().to_string()),
        None => (None, String::new()),
    });
    // The peer is done: send tungstenite's queued Close reply if it goes out now, and end the
    // connection here rather than waiting for the peer to close TCP (it may never do so) or
    // writing anything after its Close. Unless something written waits unflushed (items, or a
    // ping): the reply would take it along, to a peer that has stopped reading, so the reply
    // is not sent and the items go out on the next connection instead.
    if !conn.needs_flush {
        let _ = Pin::new(&mut conn.transport).poll_flush(cx);
    }
    Some(Lost::Clean)
}

/// Writes a due ping, then queued items, then flushes. Stops early (without error) where the
/// transport is not ready; its waker is registered then.
fn write_queue<T: Transport, C: Codec>(
    conn: &mut Conn<T>,
    queue: &mut VecDeque<C::Out>,
    unflushed: &mut Vec<C::Out>,
    codec: &mut C,
    cx: &mut Context<'_>,
) -> Result<(), Error> {
    if let Some(ka) = conn.keepalive.as_mut().filter(|ka| ka.ping_due) {
        let mut transport = Pin::new(&mut conn.transport);
        match transport.as_mut().poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Err(e.into()),
            Poll::Pending => return Ok(()),
        }
        transport.start_send(Message::Ping(Default::default()))?;
        ka.ping_due = false;
        ka.ping_sent = Some(Instant::now());
        conn.needs_flush = true;
    }
    while !queue.is_empty() {
        match Pin::new(&mut conn.transport).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Err(e.into()),
            Poll::Pending => return Ok(()),
        }
        let item = queue.pop_front().expect("queue is not empty");
        conn.needs_flush = true;
        let written = Pin::new(&mut conn.transport).start_send(codec.encode(&item));
        // Kept until the flush that delivers it, also when the write failed: it then goes out
        // on the next connection.
        unflushed.push(item);
        written?;
    }
    if conn.needs_flush {
        match Pin::new(&mut conn.transport).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                conn.needs_flush = false;
                conn.flushed += unflushed.len() as u64;
                unflushed.clear();
            }
            Poll::Ready(Err(e)) => return Err(e.into()),
            Poll::Pending => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A waker that counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn count(c: &Counter) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn the_proxy_wakes_both_sides_and_counts_its_wakes() {
        let pair = Arc::new(WakerPair::default());
        let (r, waker_r) = counter();
        let (w, waker_w) = counter();
        pair.read.register(&waker_r);
        pair.write.register(&waker_w);
        let proxy = Waker::from(pair.clone());
        proxy.wake_by_ref();
        assert_eq!((count(&r), count(&w)), (1, 1));
        // A wake takes the wakers: the next wakes nobody until they register again.
        proxy.wake_by_ref();
        assert_eq!((count(&r), count(&w)), (1, 1));
        pair.read.register(&waker_r);
        pair.write.register(&waker_w);
        proxy.wake();
        assert_eq!((count(&r), count(&w)), (2, 2));
        assert_eq!(pair.wakes.load(Ordering::Acquire), 3);
    }
}
