//! Lifecycle events and the listener channels that carry them.
//!
//! [`ReconnectingStream`](crate::ReconnectingStream), [`Producer`](crate::gdn::Producer) and
//! [`Consumer`](crate::gdn::Consumer) all offer their events the same way, through the
//! [`Listen`] trait (in the [`prelude`](crate::prelude)): every event goes to the listeners of
//! its own kind ([`Listen::on_open`], [`on_close`](Listen::on_close),
//! [`on_error`](Listen::on_error), [`on_reconnecting`](Listen::on_reconnecting),
//! [`on_gave_up`](Listen::on_gave_up)) and, in one ordered sequence, to the listeners of
//! [`events`](Listen::events). [`Listen::listeners`] gives a cloneable handle for subscribing
//! later from somewhere else, for example from another task.
//!
//! Listeners are broadcast receivers: any number can subscribe, each gets every event sent after
//! it subscribed, and sending never waits for them. A listener that falls more than
//! `event_capacity` events behind misses the oldest ones and is told how many
//! ([`ListenerError::Lagged`]); it stays subscribed. Events sent while nobody listens are dropped.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::Error;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenEvent {
    /// How many connections this stream has opened so far, this one included (1 for the first).
    pub connection: u64,
    /// The retry that succeeded, counted since the schedule last started over (0: the first try).
    pub attempt: u32,
}

/// A connection ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloseEvent {
    /// The connection that ended (as in [`OpenEvent::connection`]).
    pub connection: u64,
    /// The close code the peer sent, if it sent a Close frame with one.
    pub code: Option<CloseCode>,
    /// The peer's close reason (empty if none).
    pub reason: String,
    /// Whether the stream will try to reconnect.
    pub reconnect: bool,
    /// What ended it: the error the classifier
    /// ([`classify`](crate::ReconnectConfigBuilder::classify)) was given, for a clean close
    /// [`Error::ConnectionClosed`] with the peer's code and reason. `None` only when the user
    /// ended it with `reconnect()`.
    pub error: Option<Error>,
    /// Whether the peer sent something that counts as progress on this connection (see
    /// [`Codec::is_progress`](crate::Codec::is_progress)), which restarts the reconnect
    /// schedule.
    pub progress: bool,
}

/// A reconnect attempt is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectingEvent {
    /// The retry number since the schedule last started over (1 for the first reconnect).
    pub attempt: u32,
    /// How long the stream waits before the attempt.
    pub delay: Duration,
}

/// The retry cap was reached; the stream ends with [`Error::GaveUp`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GaveUpEvent {
    /// Consecutive attempts made since the schedule last started over.
    pub attempts: u32,
    /// The error of the last attempt.
    pub last_error: Error,
}

/// Any lifecycle event, as delivered by [`events`](crate::ReconnectingStream::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// See [`OpenEvent`].
    Open(OpenEvent),
    /// See [`CloseEvent`].
    Close(CloseEvent),
    /// An error: a failed attempt, a dead connection or a frame that did not decode.
    Error(Error),
    /// See [`ReconnectingEvent`].
    Reconnecting(ReconnectingEvent),
    /// See [`GaveUpEvent`].
    GaveUp(GaveUpEvent),
}

/// Why [`Listener::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// This listener fell behind and missed this many of the oldest events. It is still
    /// subscribed; the next `recv` returns the oldest event still held.
    #[error("listener lagged and missed {0} events")]
    Lagged(u64),
    /// The stream was dropped; no more events will come.
    #[error("the stream is gone")]
    Closed,
    /// No event is waiting (only from [`Listener::try_recv`]).
    #[error("no event waiting")]
    Empty,
}

/// Receives one kind of event. Obtained from the stream's `on_*` methods; cheap to create.
#[derive(Debug)]
pub struct Listener<E> {
    rx: broadcast::Receiver<E>,
}

impl<E: Clone> Listener<E> {
    /// Waits for the next event.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes loses no event.
    ///
    /// # Errors
    ///
    /// [`ListenerError::Lagged`] if events were missed (then keep calling), and
    /// [`ListenerError::Closed`] once the stream is dropped and every event was received.
    pub async fn recv(&mut self) -> Result<E, ListenerError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => ListenerError::Lagged(n),
            broadcast::error::RecvError::Closed => ListenerError::Closed,
        })
    }

    /// Returns the next event if one is waiting.
    ///
    /// # Errors
    ///
    /// [`ListenerError::Empty`] if none is waiting, otherwise as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<E, ListenerError> {
        self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => ListenerError::Lagged(n),
            broadcast::error::TryRecvError::Closed => ListenerError::Closed,
            broadcast::error::TryRecvError::Empty => ListenerError::Empty,
        })
    }
}

/// The sending side of all listener channels.
#[derive(Debug, Clone)]
pub(crate) struct EventHub {
    all: broadcast::Sender<Event>,
    open: broadcast::Sender<OpenEvent>,
    close: broadcast::Sender<CloseEvent>,
    error: broadcast::Sender<Error>,
    reconnecting: broadcast::Sender<ReconnectingEvent>,
    gave_up: broadcast::Sender<GaveUpEvent>,
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        EventHub {
            all: broadcast::channel(capacity).0,
            open: broadcast::channel(capacity).0,
            close: broadcast::channel(capacity).0,
            error: broadcast::channel(capacity).0,
            reconnecting: broadcast::channel(capacity).0,
            gave_up: broadcast::channel(capacity).0,
        }
    }

    /// Sends to the kind's listeners and to the ordered all-events listeners. A send with no
    /// listener fails, which is fine: nobody asked.
    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::Open(e) => drop(self.open.send(e.clone())),
            Event::Close(e) => drop(self.close.send(e.clone())),
            Event::Error(e) => drop(self.error.send(e.clone())),
            Event::Reconnecting(e) => drop(self.reconnecting.send(e.clone())),
            Event::GaveUp(e) => drop(self.gave_up.send(e.clone())),
        }
        let _ = self.all.send(event);
    }
}

/// Where the listeners of one stream, producer or consumer subscribe: a cheap, cloneable handle
/// that keeps nothing alive. Listeners end ([`ListenerError::Closed`]) when what they listen to
/// is gone, whether or not such a handle still exists; subscribing after that gives listeners
/// that are closed at once.
#[derive(Clone, Debug)]
pub struct Listeners {
    all: broadcast::WeakSender<Event>,
    open: broadcast::WeakSender<OpenEvent>,
    close: broadcast::WeakSender<CloseEvent>,
    error: broadcast::WeakSender<Error>,
    reconnecting: broadcast::WeakSender<ReconnectingEvent>,
    gave_up: broadcast::WeakSender<GaveUpEvent>,
}

/// A listener on `sender`'s channel, or a closed one if the channel is gone.
fn subscribe<T: Clone>(sender: &broadcast::WeakSender<T>) -> Listener<T> {
    let rx = match sender.upgrade() {
        Some(tx) => tx.subscribe(),
        None => broadcast::channel(1).1,
    };
    Listener { rx }
}

impl Listeners {
    pub(crate) fn new(hub: &EventHub) -> Self {
        Listeners {
            all: hub.all.downgrade(),
            open: hub.open.downgrade(),
            close: hub.close.downgrade(),
            error: hub.error.downgrade(),
            reconnecting: hub.reconnecting.downgrade(),
            gave_up: hub.gave_up.downgrade(),
        }
    }
}

/// Subscribing to events, the same way on [`ReconnectingStream`](crate::ReconnectingStream),
/// [`Producer`](crate::gdn::Producer), [`Consumer`](crate::gdn::Consumer) and [`Listeners`].
///
/// ```
/// use stream_websocket::prelude::*;
/// # fn f(stream: &impl Listen) {
/// let mut opens = stream.on_open();
/// let mut gave_up = stream.on_gave_up();
/// let later = stream.listeners(); // subscribe from another task later
/// # }
/// ```
pub trait Listen {
    /// The handle every subscription goes through; clone it to subscribe later elsewhere.
    fn listeners(&self) -> Listeners;

    /// Listens to every event, in the order they happen.
    fn events(&self) -> Listener<Event> {
        subscribe(&self.listeners().all)
    }
    /// Listens to connection opens.
    fn on_open(&self) -> Listener<OpenEvent> {
        subscribe(&self.listeners().open)
    }
    /// Listens to connection closes.
    fn on_close(&self) -> Listener<CloseEvent> {
        subscribe(&self.listeners().close)
    }
    /// Listens to errors: failed attempts, dead connections, frames that did not decode.
    fn on_error(&self) -> Listener<Error> {
        subscribe(&self.listeners().error)
    }
    /// Listens to scheduled reconnect attempts.
    fn on_reconnecting(&self) -> Listener<ReconnectingEvent> {
        subscribe(&self.listeners().reconnecting)
    }
    /// Listens for the retry cap being reached.
    fn on_gave_up(&self) -> Listener<GaveUpEvent> {
        subscribe(&self.listeners().gave_up)
    }
}

impl Listen for Listeners {
    fn listeners(&self) -> Listeners {
        self.clone()
    }
}
