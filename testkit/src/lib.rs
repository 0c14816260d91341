//! An embedded stream server for tests and demos: [`LocalServer`].
//!
//! **This is a test server, not a production broker.** It keeps everything in memory, listens
//! only on `127.0.0.1`, has no persistence, few limits on memory use (one-time passwords
//! expire, expired JWTs are pruned, connections are capped: [`ServerConfig::max_connections`])
//! and no real security (its
//! one-time passwords are not cryptographically strong). It speaks the subset of the Macrometa
//! GDN / Apache Pulsar WebSocket API that this crate's clients use, and it can misbehave on
//! demand (dropped connections, refused handshakes, half-open stalls, a pause in listening) so
//! that reconnect logic can be tested against real sockets.
//!
//! ```no_run
//! use stream_websocket_testkit::{LocalServer, ServerConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = LocalServer::start_with(ServerConfig::default().api_key("test-key")).await?;
//! let url = format!(
//!     "{}/_ws/ws/v2/producer/persistent/tenant/c8local._system/c8locals.orders",
//!     server.ws_url()
//! );
//! // ... connect a producer to `url` with `Authorization: apikey test-key` ...
//! server.drop_all(); // every client must now reconnect
//! assert_eq!(server.stored("persistent://tenant/c8local._system/c8locals.orders").len(), 0);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What it serves
//!
//! One port serves plain and TLS connections (a self-signed certificate for `127.0.0.1` and
//! `localhost` generated at start, or the one given with [`ServerConfig::tls_identity`]:
//! [`LocalServer::certificate_pem`]; a connection whose first byte starts a TLS
//! handshake gets TLS), and on each both REST calls (HTTP/1.1, kept alive) and WebSocket
//! upgrades. Repeated slashes in a path are collapsed and a first segment starting with `api-`
//! is dropped, as the GDN SDKs' URLs need.
//!
//! ## REST: an offline GDN
//!
//! The calls of the GDN documentation's examples and of the official SDKs (pyC8, jsc8), in
//! GDN's shapes: success `{"error":false,"code":200,"result":…}` (without `errorNum`), failure
//! `{"error":true,"code","errorMessage","errorNum"}`; JSON content type.
//!
//! | call | answer |
//! |---|---|
//! | `POST /_open/auth` `{"email","password"}` | `{"jwt","tenant","username"}`; 401 for wrong credentials |
//! | `GET /_api/user` | `result[0].tenant`: the caller's tenant |
//! | `POST /_api/key/validate` `{"apikey"}` or `{"jwt"}` | `result.tenant`; 401 |
//! | `POST /apid/otp` | `{"otp"}`: a single-use password for one upgrade (`?otp=`), valid 60 s ([`ServerConfig::otp_lifetime`]) |
//! | `GET /datacenter/local`, `/datacenter/all` | the one data center; `tags.url` = `gdn@127.0.0.1:<port>` |
//! | `GET /_fabric/{f}/_api/database/user`, `…/database/current` (also without `/_api`) | the fabric `f` (any name is a fabric) |
//! | `GET /_fabric/{f}/_api/streams[?global=]` | the caller's streams: `{topic, local, db, tenant, type: 4}` |
//! | `POST /_fabric/{f}/_api/streams/{name}?global=true\|false` | creates `c8globals.{name}` / `c8locals.{name}`; 409 with `errorNum` 581 if it exists |
//! | `DELETE /_fabric/{f}/_api/streams/c8globals.{name}` | deletes the stream and its messages (connected clients are not told); 404 |
//! | `POST /_fabric/{f}/_api/streams/c8globals.{name}/publish` | stores the body bytes as one message |
//!
//! A GDN stream `name` of tenant `T` in fabric `f` is the topic
//! `persistent://T/c8global.f/c8globals.name` (or `c8local`/`c8locals`), the topic its
//! WebSocket paths name. Other paths give 404.
//!
//! **Credentials.** With none configured (the default) the server is open: any API key, token
//! or login is taken, an API key's tenant follows jsc8's rule (the key without its last two
//! dot-separated parts, `_mm` for a short key) and an anonymous caller is tenant `_mm`. With
//! [`ServerConfig::api_key`] or [`ServerConfig::user`], every REST call (but the login) and
//! every upgrade needs `Authorization: apikey <key>` or `bearer <JWT>`, or, on an upgrade, an
//! unused `?otp=`. An upgrade with none of them, such as the sockets some jsc8 examples open
//! without an OTP, gets 401, as it would from GDN. A JWT, an API key that names its tenant
//! (three or more dot-separated parts) and a `/apid/otp` password fetched with either keep
//! that tenant: an upgrade whose path names another tenant gets 403.
//!
//! **Streams.** With [`ServerConfig::auto_create_streams`] on (the default, as Pulsar's
//! `allowAutoTopicCreation`), a connection creates its topic; off, a topic must be created
//! first (REST, or [`LocalServer::create_topic`]) or the upgrade gets 404.
//!
//! ## WebSockets
//!
//! Paths are `/_ws/ws/v2/{producer|consumer|reader}/persistent/{tenant}/{namespace}/{topic}`
//! (GDN) or the same without `/_ws` (plain Pulsar); a consumer adds `/{subscription}`. Segments
//! are percent-decoded. An unknown path gives HTTP 404; a consumer without a subscription, an
//! empty or undecodable segment, a `non-persistent` topic or a bad parameter gives 400, each with
//! a text body. An upgrade is checked in this order: [injected refusals](LocalServer::refuse_next)
//! (then [random ones](LocalServer::refuse_fraction)), authentication (401), path (404/400),
//! the caller's tenant (403), the topic's existence without auto-create (404),
//! parameters (400), then registration (409). Each topic is an append-only log whose message ids
//! are base64 of `<ledger>:<entry>`, unique across the server and (with a random ledger base
//! per start) across restarts.
//!
//! * **Producer:** every text frame `{"payload", "properties"?, "key"?, "context"?,
//!   "eventTime"?}` is stored and answered `{"result":"ok","messageId","context"}`. Text that is
//!   not a JSON object, a field of the wrong type, or a binary frame → `send-error:3` (without
//!   context); a missing, null or non-base64 payload, or an `eventTime` that is not ISO-8601
//!   with an offset → `send-error:7` (with the context). The socket stays open. A
//!   `producerName` already connected to the topic → 409.
//! * **Consumer:** subscriptions are durable per (topic, name), created on first subscribe at
//!   the end of the log (`subscriptionInitialPosition=Earliest`: at the start). Parameters:
//!   `subscriptionType` (`Exclusive` default, `Shared`, `Failover`, `Key_Shared`),
//!   `receiverQueueSize` (default and maximum 1000, 0 means 1: the most unacknowledged
//!   messages in flight per connection), `ackTimeoutMillis` (0 = off, else at least 1000;
//!   unacknowledged messages are redelivered after it, counted as below for a consumer that
//!   went away), `negativeAckRedeliveryDelay` (ms,
//!   default [`ServerConfig::negative_ack_delay`]). Other parameters are ignored.
//!   - `{"messageId"}` (or any unknown `type`) acknowledges, on any connection of the
//!     subscription; an id that is not outstanding is ignored.
//!     `{"type":"negativeAcknowledge","messageId"}` redelivers the message after the delay
//!     with `redeliveryCount` + 1 (for every subscription type). `{"type":"permit"}` is
//!     ignored; `{"type":"isEndOfTopic"}` is answered `{"endOfTopic":false}`.
//!   - Text that is not a JSON object **closes the socket with code 1003** (Pulsar's code 3 is
//!     not legal on the wire); binary frames are ignored.
//!   - When a consumer goes away, what it had unacknowledged is delivered again, in log order,
//!     before newer messages: with the same `redeliveryCount` for Exclusive and Failover (whose
//!     dispatcher does not count redeliveries), plus one for Shared and Key_Shared.
//!   - Exclusive: a second consumer while one is connected → 409 `Failed to subscribe:
//!     Exclusive consumer is already connected`. Failover: the first consumer connected is
//!     active; the next in connect order takes over when it leaves. Shared: round-robin among
//!     consumers with room. Key_Shared: a hash of the key (empty if none) over the connected
//!     consumers. A consumer of another type while consumers are connected → 409.
//! * **Reader:** streams from `messageId` (`latest` default, `earliest`, or after a given id
//!   of this topic, else 400); every `{"messageId"}` frame it sends lets one more message out
//!   (`receiverQueueSize` in flight, default 1000). No subscription state.
//!
//! Every message frame carries `messageId`, `payload` (base64), `properties`, `publishTime`
//! (UTC, e.g. `2026-11-23T10:00:00.000Z`), `redeliveryCount`, and `key`/`eventTime` when set.
//! An inbound message larger than [`ServerConfig::max_message_size`] closes the socket with
//! 1009. Connections answer WebSocket pings (except while [stalled](LocalServer::stall)).

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod auth;
mod broker;
mod conn;
mod echo;
mod http;
mod proxy;
mod rest;
mod transport;
mod wire;

pub use echo::EchoServer;
pub use proxy::{Cut, FaultProxy};
pub use transport::TlsIdentity;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use broker::State;
use stream_websocket::Secret;

/// Settings of a [`LocalServer`]. Build with [`ServerConfig::default`] and the setters.
///
/// `Debug` never prints an API key or password.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    credentials: auth::Credentials,
    auto_create: bool,
    tls: bool,
    tls_identity: Option<TlsIdentity>,
    jwt_lifetime: Duration,
    negative_ack_delay: Duration,
    max_message_size: usize,
    handshake_timeout: Duration,
    otp_lifetime: Duration,
    max_otps: usize,
    max_connections: usize,
    listening: bool,
    port: u16,
    fault_seed: u64,
}

impl Default for ServerConfig {
    /// Open (no credentials required), streams created on first use, TLS on the same port, a
    /// 12 h JWT lifetime, a 100 ms negative-ack delay, a 1 MiB inbound message limit, a 10 s
    /// handshake timeout, one-time passwords valid 60 s and at most 10,000 outstanding, at most
    /// 1,000 connections, listening from the start on a free port, and a fixed
    /// [fault seed](Self::fault_seed).
    fn default() -> Self {
        ServerConfig {
            credentials: auth::Credentials::default(),
            auto_create: true,
            tls: true,
            tls_identity: None,
            jwt_lifetime: Duration::from_secs(12 * 3600),
            negative_ack_delay: Duration::from_millis(100),
            max_message_size: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            otp_lifetime: auth::DEFAULT_OTP_LIFETIME,
            max_otps: auth::DEFAULT_MAX_OTPS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            listening: true,
            port: 0,
            fault_seed: DEFAULT_FAULT_SEED,
        }
    }
}

impl ServerConfig {
    /// Accepts this API key; call again to accept several. Once any key or
    /// [user](Self::user) is configured, every REST call and WebSocket upgrade must
    /// authenticate: `Authorization: apikey <key>` (or `bearer <key>`, or `bearer <JWT>` from
    /// `/_open/auth`; the scheme is case-insensitive), or, on an upgrade, `?otp=` with an unused
    /// one-time password from `POST /apid/otp` or [`LocalServer::issue_otp`]. Missing or wrong →
    /// HTTP 401. The key's tenant is its text without the last two dot-separated parts
    /// (`acme.key1.secret` → `acme`; `_mm` for a key with fewer parts), the rule jsc8 applies,
    /// so pyC8 (which asks `/_api/user`) and jsc8 agree.
    ///
    /// Default: no credentials: the server is *open*, takes any key, token and login, and
    /// ignores (does not consume) `otp` parameters.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.credentials.api_keys.push(Secret::new(key));
        self
    }

    /// Accepts this user for `POST /_open/auth` (`{"email","password"}`), which answers a JWT
    /// for [`jwt_lifetime`](Self::jwt_lifetime). The user's tenant is the email with `@`
    /// replaced by `_`. Call again for several users. Like [`api_key`](Self::api_key), this
    /// makes the server require credentials.
    pub fn user(mut self, email: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials.users.push(auth::User {
            email: email.into(),
            password: Secret::new(password),
        });
        self
    }

    /// Whether a producer, consumer or reader may connect to a stream that does not exist yet,
    /// creating it (as Pulsar's `allowAutoTopicCreation`, whose default is also on). Off, a
    /// connection to a stream not created first (over REST, or with
    /// [`LocalServer::create_topic`]) is refused with 404, as the GDN SDKs expect, and so is a
    /// REST publish. Default: on, so that tests need no setup.
    pub fn auto_create_streams(mut self, on: bool) -> Self {
        self.auto_create = on;
        self
    }

    /// Whether the server also speaks TLS on its port, with a self-signed certificate for
    /// `127.0.0.1` and `localhost` generated at start ([`LocalServer::certificate_pem`]). A
    /// connection whose first byte starts a TLS handshake gets TLS, any other plain text.
    /// Default: on (the official SDKs only speak `https://` and `wss://`).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// The certificate and key to serve TLS with, instead of a self-signed certificate
    /// generated at start: a server given the same identity on every start keeps the
    /// certificate its clients trust across restarts. Ignored while [TLS](Self::tls) is off.
    /// Default: none (a new certificate per start).
    pub fn tls_identity(mut self, identity: TlsIdentity) -> Self {
        self.tls_identity = Some(identity);
        self
    }

    /// How long a JWT from `/_open/auth` is accepted. Default: 12 h, GDN's.
    pub fn jwt_lifetime(mut self, lifetime: Duration) -> Self {
        self.jwt_lifetime = lifetime;
        self
    }

    /// How long a negatively acknowledged message waits before it is delivered again, unless
    /// the consumer sets `negativeAckRedeliveryDelay`. Default: 100 ms (Pulsar's is 60 s; this
    /// is a test server).
    pub fn negative_ack_delay(mut self, delay: Duration) -> Self {
        self.negative_ack_delay = delay;
        self
    }

    /// The largest inbound WebSocket message (and frame) and REST request body in bytes; a
    /// larger message closes the connection with code 1009, like the Pulsar proxy's
    /// `webSocketMaxTextFrameSize`, and a larger body gets 413. Default: 1 MiB (1048576).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long a client may take to send its TLS handshake and each request (the upgrade
    /// request, or the next REST call on a kept-alive connection) once the server reads it.
    /// Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a one-time password (`POST /apid/otp`, [`LocalServer::issue_otp`]) stays
    /// usable: an upgrade presenting it later gets 401, as for an unknown one. Default: 60 s.
    pub fn otp_lifetime(mut self, lifetime: Duration) -> Self {
        self.otp_lifetime = lifetime;
        self
    }

    /// How many unused one-time passwords are kept at most; issuing one more drops the oldest
    /// (which then gets 401). 0 counts as 1. Default: 10,000.
    pub fn max_otps(mut self, n: usize) -> Self {
        self.max_otps = n;
        self
    }

    /// How many TCP connections (REST, WebSocket, or still in their handshake) may be open at
    /// once. A connection beyond it is accepted and closed at once, before anything is read or
    /// written (the client sees the connection closed or reset), and counted in
    /// [`ServerStats::connections_rejected`]. 0 refuses every connection. Default: 1,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Whether the server listens as soon as it starts. With `false`, the port is reserved
    /// (bound, so nothing else takes it) but connections are refused until
    /// [`LocalServer::resume_listening`]: a server that is "down at start", without a race.
    /// Default: `true`.
    pub fn listening(mut self, on: bool) -> Self {
        self.listening = on;
        self
    }

    /// The port on `127.0.0.1` to listen on. Default: 0, a free port chosen by the system
    /// (see [`LocalServer::addr`]); tests should keep it.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Seeds the random choices of the fault injectors
    /// ([`LocalServer::drop_after_frames_between`], [`LocalServer::refuse_fraction`]), so that a
    /// run can be repeated: the same seed gives the same sequence of draws (which connection
    /// gets which draw still depends on the order connections arrive in). Default: a fixed seed,
    /// the same for every server.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = seed;
        self
    }
}

/// The connection cap of [`ServerConfig::default`].
const DEFAULT_MAX_CONNECTIONS: usize = 1_000;

/// The fault seed of [`ServerConfig::default`].
const DEFAULT_FAULT_SEED: u64 = 0x5EED_F417;

/// Counters of a [`LocalServer`], from [`LocalServer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// WebSocket upgrades completed (refused ones are not counted).
    pub connections_accepted: u64,
    /// WebSocket connections open now.
    pub connections_open: u64,
    /// Upgrade requests answered with an HTTP error (injected, 400, 401, 404, 409, …).
    pub handshakes_refused: u64,
    /// Messages stored (every producer frame that got an `ok`, or would have).
    pub messages_stored: u64,
    /// Message frames written to consumers and readers, redeliveries included.
    pub messages_delivered: u64,
    /// Acknowledgements (`{"messageId"}` frames) received from consumers.
    pub acks_received: u64,
    /// REST calls answered (any status).
    pub rest_requests: u64,
    /// Connections dropped on reaching their frame limit
    /// ([`drop_after_frames`](LocalServer::drop_after_frames) or
    /// [`drop_after_frames_between`](LocalServer::drop_after_frames_between)); drops by
    /// [`drop_all`](LocalServer::drop_all) are not counted.
    pub connections_dropped_after_frames: u64,
    /// TCP connections closed at once because [`ServerConfig::max_connections`] were open.
    pub connections_rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    stored: AtomicU64,
    delivered: AtomicU64,
    acks: AtomicU64,
    rest: AtomicU64,
    frame_drops: AtomicU64,
    /// TCP connections being served now, of any kind.
    tcp_open: AtomicU64,
    rejected: AtomicU64,
}

/// What the server task and the connection tasks share.
struct Shared {
    config: ServerConfig,
    addr: SocketAddr,
    /// The TLS certificate and acceptor, if TLS is on.
    identity: Option<transport::Identity>,
    state: Mutex<State>,
    counters: Counters,
    /// `drop_after_frames`; `u64::MAX` when off.
    drop_after: AtomicU64,
    /// The random fault injectors and their generator.
    faults: Mutex<Faults>,
    /// Bumped by `drop_all`.
    drop_epoch: watch::Sender<u64>,
    stall: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    /// The state; a panic elsewhere while holding the lock does not make it unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// The frame limit of a connection just upgraded, drawn from the range of
    /// `drop_after_frames_between` if it is set.
    fn draw_frame_limit(&self) -> Option<u64> {
        let mut f = self.faults();
        let (lo, hi) = f.drop_between?;
        let span = hi - lo;
        let offset = match span.checked_add(1) {
            Some(n) => f.rng.below(n),
            None => f.rng.next_u64(),
        };
        Some(lo + offset)
    }

    /// The status to refuse an upgrade with, if `refuse_fraction` picks this one.
    fn roll_refusal(&self) -> Option<u16> {
        let mut f = self.faults();
        if f.refuse_fraction <= 0.0 {
            return None;
        }
        (f.rng.next_f64() < f.refuse_fraction).then_some(f.refuse_status)
    }
}

/// The random fault injectors: `drop_after_frames_between` and `refuse_fraction`.
#[derive(Debug)]
struct Faults {
    rng: SplitMix,
    /// Inclusive bounds of the per-connection frame limit.
    drop_between: Option<(u64, u64)>,
    /// The share of upgrade requests refused, in `[0, 1]`, and with which status.
    refuse_fraction: f64,
    refuse_status: u16,
}

/// SplitMix64: a small seedable generator for the fault injectors (not for anything secret).
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`, `n > 0` (by rejection, so without bias).
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

enum Control {
    Pause(Duration),
    /// Stop listening until `Resume`; acknowledged once the listening socket is closed.
    Stop(oneshot::Sender<()>),
    /// Listen again now; acknowledged once listening.
    Resume(oneshot::Sender<()>),
}

/// An in-memory stream broker on `127.0.0.1`, speaking the GDN / Pulsar WebSocket subset
/// described in the [module documentation](self), with fault injection. **A test server, not a
/// production broker.**
///
/// Runs on the Tokio runtime it was started on: one task accepts, one task serves each
/// connection. [`shutdown`](Self::shutdown) stops them all; dropping the last handle without
/// it aborts them.
///
/// A `LocalServer` is a cheap, cloneable handle: every method takes `&self`, so fault
/// injectors can run in tasks of their own (see also [`drop_every`](Self::drop_every)).
#[derive(Clone)]
pub struct LocalServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The periodic drops of [`LocalServer::drop_every`], if any.
    dropper: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.dropper).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.task).take() {
            self.shared.shutdown.send_replace(true);
            // Aborting the accept task drops its JoinSet, which aborts the connection tasks.
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalServer")
            .field("addr", &self.inner.addr)
            .field("config", &self.inner.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Binds a socket without listening (with `SO_REUSEADDR` on Unix, so the port can be bound
/// again after a pause while old connections linger in `TIME_WAIT`): it holds the port while
/// connects to it are refused.
fn reserve(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// How many connections may wait to be accepted.
const BACKLOG: u32 = 1024;

/// The listening socket's state.
enum Listening {
    /// Accepting connections.
    On(TcpListener),
    /// Not listening; the port is held by a bound socket, so connects are refused.
    Off(TcpSocket),
    /// Not listening, and the port could not be held (another socket took it meanwhile).
    Lost,
}

impl Listening {
    /// Stops listening, keeping the port if possible.
    fn stop(self, addr: SocketAddr) -> Listening {
        match self {
            Listening::On(listener) => {
                drop(listener);
                reserve(addr).map_or(Listening::Lost, Listening::Off)
            }
            other => other,
        }
    }

    /// Listens again.
    fn start(self, addr: SocketAddr) -> io::Result<Listening> {
        let socket = match self {
            Listening::On(l) => return Ok(Listening::On(l)),
            Listening::Off(socket) => socket,
            Listening::Lost => reserve(addr)?,
        };
        socket.listen(BACKLOG).map(Listening::On)
    }

    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        match self {
            Listening::On(l) => l.accept().await,
            Listening::Off(_) | Listening::Lost => std::future::pending().await,
        }
    }
}

impl LocalServer {
    /// Starts a server with the default [`ServerConfig`] (no authentication) on
    /// `127.0.0.1` and a free port.
    ///
    /// # Errors
    ///
    /// The I/O error if the socket cannot be bound.
    pub async fn start() -> io::Result<LocalServer> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Starts a server with this configuration on `127.0.0.1` and its
    /// [port](ServerConfig::port) (by default a free one).
    ///
    /// # Errors
    ///
    /// The I/O error if the socket cannot be bound, or if the
    /// [TLS identity](ServerConfig::tls_identity) cannot be served.
    pub async fn start_with(config: ServerConfig) -> io::Result<LocalServer> {
        let socket = reserve(SocketAddr::from((Ipv4Addr::LOCALHOST, config.port)))?;
        let addr = socket.local_addr()?;
        let listening = if config.listening {
            Listening::On(socket.listen(BACKLOG)?)
        } else {
            Listening::Off(socket)
        };
        let identity = if config.tls {
            Some(transport::Identity::new(config.tls_identity.as_ref())?)
        } else {
            None
        };
        let fault_seed = config.fault_seed;
        let mut state = State::default();
        state.otps = auth::Otps::new(config.otp_lifetime, config.max_otps);
        let shared = Arc::new(Shared {
            config,
            addr,
            identity,
            state: Mutex::new(state),
            counters: Counters::default(),
            drop_after: AtomicU64::new(u64::MAX),
            faults: Mutex::new(Faults {
                rng: SplitMix(fault_seed),
                drop_between: None,
                refuse_fraction: 0.0,
                refuse_status: 503,
            }),
            drop_epoch: watch::Sender::new(0),
            stall: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(listening, addr, shared.clone(), control_rx));
        tracing::debug!(%addr, "local stream server listening");
        Ok(LocalServer {
            inner: Arc::new(Inner {
                addr,
                shared,
                control,
                task: Mutex::new(Some(task)),
                dropper: Mutex::new(None),
            }),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The base URL, `ws://127.0.0.1:<port>`; append a path such as
    /// `/_ws/ws/v2/producer/persistent/t/ns/topic`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.inner.addr)
    }

    /// Issues a one-time password, accepted as `?otp=` on exactly one upgrade request (which
    /// consumes it whether or not the upgrade then succeeds) within
    /// [`ServerConfig::otp_lifetime`] (60 s by default; at most [`ServerConfig::max_otps`] are
    /// kept, the oldest dropped first). Only checked when an
    /// [API key](ServerConfig::api_key) is configured; good for any tenant's topics. Unique,
    /// but not cryptographically strong: this is a test server.
    pub fn issue_otp(&self) -> String {
        new_otp(&mut self.inner.shared.lock())
    }

    /// Drops every open connection now, abruptly: no close frame, the socket is just closed.
    /// Connections that are still in their handshake are dropped too. New connections are not
    /// affected.
    pub fn drop_all(&self) {
        self.inner
            .shared
            .drop_epoch
            .send_modify(|e| *e = e.wrapping_add(1));
    }

    /// Drops each connection, current and future, abruptly once it has handled `n` frames,
    /// `None` turns this off. Default: off.
    ///
    /// Counted are the data frames a client sends (text or binary, valid or not) and the message
    /// frames the server sends to consumers and readers; replies (a producer's acks, the
    /// `isEndOfTopic` answer) are part of handling the frame they answer, and control frames
    /// do not count. On a producer the drop comes right **after storing** the `n`-th message and
    /// **before** sending its ack, the "stored but not confirmed" case; on a consumer it comes
    /// after writing the `n`-th frame or applying the `n`-th ack. A connection already past `n`
    /// drops at its next frame; `Some(0)` drops every new connection right after its upgrade.
    pub fn drop_after_frames(&self, n: Option<u64>) {
        self.inner
            .shared
            .drop_after
            .store(n.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Drops each connection upgraded from now on abruptly once it has handled a number of
    /// frames drawn for it, uniformly from `range` (inclusive), with the server's
    /// [seeded](ServerConfig::fault_seed) generator; `None` turns this off (connections that
    /// already drew a limit keep it). Default: off.
    ///
    /// What counts: on a producer, the data frames it sends, and the drop comes right **after
    /// storing** the `n`-th message and **before** sending its ack, as with
    /// [`drop_after_frames`](Self::drop_after_frames); on a consumer or reader, the message
    /// frames **delivered** to it (its acknowledgements do not count), and the drop comes right
    /// after writing the `n`-th. A draw of 0 drops the connection right after its upgrade.
    /// Works alongside `drop_after_frames`: whichever limit is reached first drops the
    /// connection. Each such drop is counted in
    /// [`ServerStats::connections_dropped_after_frames`].
    ///
    /// ```no_run
    /// # async fn run(server: stream_websocket_testkit::LocalServer) {
    /// // Every connection dies after 200 to 1,000 messages.
    /// server.drop_after_frames_between(Some(200..=1000));
    /// # }
    /// ```
    pub fn drop_after_frames_between(&self, range: Option<std::ops::RangeInclusive<u64>>) {
        self.inner.shared.faults().drop_between = range.map(|r| {
            let (lo, hi) = r.into_inner();
            (lo.min(hi), lo.max(hi))
        });
    }

    /// Refuses each upgrade request with probability `fraction` (clamped to `[0, 1]`; NaN
    /// counts as 0), answering HTTP `status` and a text body instead of accepting it; the
    /// choice comes from the server's [seeded](ServerConfig::fault_seed) generator, one draw per
    /// request. `fraction = 0` stops refusing. A status outside 300..=599 is replaced by 503.
    /// The answer carries no `Retry-After`. Checked right after
    /// [`refuse_next`](Self::refuse_next)'s count (a request that one refuses draws nothing),
    /// before authentication; counted in [`ServerStats::handshakes_refused`].
    ///
    /// ```no_run
    /// # async fn run(server: stream_websocket_testkit::LocalServer) {
    /// // One handshake in twenty gets "503 Service Unavailable".
    /// server.refuse_fraction(0.05, 503);
    /// # }
    /// ```
    pub fn refuse_fraction(&self, fraction: f64, status: u16) {
        let mut f = self.inner.shared.faults();
        f.refuse_fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        f.refuse_status = if (300..=599).contains(&status) {
            status
        } else {
            503
        };
    }

    /// Answers the next `k` upgrade requests with HTTP `status` (e.g. 503, 409, 401) and a
    /// text body instead of accepting them. Replaces any earlier count; `k = 0` stops
    /// refusing. A status outside 300..=599 is replaced by 503. Refusals are checked before
    /// authentication and do not consume one-time passwords.
    pub fn refuse_next(&self, k: usize, status: u16) {
        let mut st = self.inner.shared.lock();
        st.refuse_left = k;
        st.refuse_status = if (300..=599).contains(&status) {
            status
        } else {
            503
        };
    }

    /// Stalls (`true`) or resumes (`false`) every connection, current and new: a stalled
    /// connection reads nothing (so it answers no pings and sends no pongs, and a new one does
    /// not even read its upgrade request) and writes nothing, like a half-open TCP connection.
    /// Messages produced meanwhile are stored and delivered after the stall. `drop_all` and
    /// `shutdown` still work on stalled connections.
    pub fn stall(&self, on: bool) {
        self.inner.shared.stall.send_if_modified(|s| {
            let changed = *s != on;
            *s = on;
            changed
        });
    }

    /// Stops listening (the listening socket is closed, so connects are refused) for `d`, then
    /// listens again on the same port. Returns at once; the background task closes the socket
    /// within moments (a connect racing with this call may be accepted and then reset rather
    /// than refused). Open connections are not touched (combine with
    /// [`drop_all`](Self::drop_all)). A second call while paused extends the pause if it ends
    /// later.
    pub fn pause_listening(&self, d: Duration) {
        let _ = self.inner.control.send(Control::Pause(d));
    }

    /// Stops listening until [`resume_listening`](Self::resume_listening), and returns once
    /// the listening socket is closed: from then on connects are refused, without a race. The
    /// port stays reserved. Open connections are not touched (combine with
    /// [`drop_all`](Self::drop_all)). Cancels a running [`pause_listening`](Self::pause_listening).
    pub async fn stop_listening(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.control.send(Control::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Listens again (after [`stop_listening`](Self::stop_listening), a
    /// [`pause_listening`](Self::pause_listening) or [`ServerConfig::listening(false)`]), and
    /// returns once connects are accepted (or, if the port cannot be bound again yet, once the
    /// server has started retrying every 50 ms).
    ///
    /// [`ServerConfig::listening(false)`]: ServerConfig::listening
    pub async fn resume_listening(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.control.send(Control::Resume(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// `http://127.0.0.1:<port>`: the REST base URL, plain.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `https://127.0.0.1:<port>`: the REST base URL over TLS (trust
    /// [`certificate_pem`](Self::certificate_pem)). Serves only if [TLS](ServerConfig::tls) is
    /// on.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.inner.addr)
    }

    /// `wss://127.0.0.1:<port>`: [`ws_url`](Self::ws_url) over TLS.
    pub fn wss_url(&self) -> String {
        format!("wss://{}", self.inner.addr)
    }

    /// The server's certificate, PEM encoded: the [given](ServerConfig::tls_identity) one, or
    /// the self-signed one generated at start (for `127.0.0.1`, `::1` and `localhost`), to add to a client's trusted roots; `None` if [TLS](ServerConfig::tls) is off.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.inner
            .shared
            .identity
            .as_ref()
            .map(|i| i.cert_pem.as_str())
    }

    /// Creates a topic by its full name (`persistent://tenant/namespace/topic`) if it does not
    /// exist, as the REST create call does for GDN streams. Returns whether it was created.
    pub fn create_topic(&self, full_name: &str) -> bool {
        let mut st = self.inner.shared.lock();
        if st.topics.contains_key(full_name) {
            return false;
        }
        st.topic(full_name);
        true
    }

    /// Answers the next `k` REST calls with HTTP `status` and a GDN error body
    /// (`{"error":true,"code","errorMessage","errorNum"}`), to test a client's retries.
    /// Replaces any earlier count; `k = 0` stops. A status outside 400..=599 is replaced by
    /// 503. WebSocket upgrades are not affected (see [`refuse_next`](Self::refuse_next)).
    pub fn fail_rest_next(&self, k: usize, status: u16) {
        let mut st = self.inner.shared.lock();
        st.rest_fail_left = k;
        st.rest_fail_status = if (400..=599).contains(&status) {
            status
        } else {
            503
        };
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.shared.counters;
        ServerStats {
            connections_accepted: c.accepted.load(Ordering::Relaxed),
            connections_open: c.open.load(Ordering::Relaxed),
            handshakes_refused: c.refused.load(Ordering::Relaxed),
            messages_stored: c.stored.load(Ordering::Relaxed),
            messages_delivered: c.delivered.load(Ordering::Relaxed),
            acks_received: c.acks.load(Ordering::Relaxed),
            rest_requests: c.rest.load(Ordering::Relaxed),
            connections_dropped_after_frames: c.frame_drops.load(Ordering::Relaxed),
            connections_rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// The payloads stored on a topic, by its full name (`persistent://tenant/namespace/topic`,
    /// percent-decoded), in order; empty for an unknown topic.
    pub fn stored(&self, topic: &str) -> Vec<Bytes> {
        self.inner
            .shared
            .lock()
            .topics
            .get(topic)
            .map(|t| t.messages.iter().map(|m| m.payload.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops accepting, closes every connection (with a close frame 1001 where the client is
    /// reading, abruptly after a short grace otherwise) and waits until every task of the server
    /// has ended.
    ///
    /// Any handle can shut the server down; the others then see a stopped server.
    pub async fn shutdown(&self) {
        if let Some(task) = lock(&self.inner.dropper).take() {
            task.abort();
        }
        self.inner.shared.shutdown.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Drops every open connection (as [`drop_all`](Self::drop_all)) once every `period`, from
    /// a task of its own, until it is called again (`None` stops it) or the server shuts down.
    pub fn drop_every(&self, period: Option<Duration>) {
        let next = period.map(|period| {
            let server = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                loop {
                    tick.tick().await;
                    let Some(inner) = server.upgrade() else {
                        return;
                    };
                    LocalServer { inner }.drop_all();
                }
            })
        });
        if let Some(old) = std::mem::replace(&mut *lock(&self.inner.dropper), next) {
            old.abort();
        }
    }
}

/// Issues a one-time password: unique among the unused ones.
fn new_otp(st: &mut State) -> String {
    loop {
        let otp = random_token(st.otps.len() as u64);
        if st.otps.insert(otp.clone()) {
            return otp;
        }
    }
}

/// A hex token from the standard library's randomly keyed hasher.
fn random_token(salt: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut out = String::with_capacity(32);
    for part in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(nanos);
        h.write_u8(part);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Listens again; if the port cannot be bound yet, tries again in 50 ms (`resume_at`).
fn relisten(listening: Listening, addr: SocketAddr, resume_at: &mut Option<Instant>) -> Listening {
    match listening.start(addr) {
        Ok(l) => {
            *resume_at = None;
            tracing::debug!(%addr, "local server listening again");
            l
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "local server cannot listen again yet; retrying");
            *resume_at = Some(Instant::now() + Duration::from_millis(50));
            Listening::Lost
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Counts a TCP connection as open until dropped (also when its task is aborted).
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.counters.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long the connection tasks get to close politely on shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

async fn accept_loop(
    mut listening: Listening,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut resume_at: Option<Instant> = None;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
            cmd = control.recv() => match cmd {
                Some(Control::Pause(d)) => {
                    listening = listening.stop(addr);
                    let now = Instant::now();
                    let until = now
                        .checked_add(d)
                        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
                    resume_at = Some(resume_at.map_or(until, |r| r.max(until)));
                    tracing::debug!(?d, "local server stopped listening");
                }
                Some(Control::Stop(ack)) => {
                    listening = listening.stop(addr);
                    resume_at = None;
                    tracing::debug!("local server stopped listening until resumed");
                    let _ = ack.send(());
                }
                Some(Control::Resume(ack)) => {
                    listening = relisten(listening, addr, &mut resume_at);
                    let _ = ack.send(());
                }
                None => break,
            },
            _ = sleep_until(resume_at) => listening = relisten(listening, addr, &mut resume_at),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listening.accept() => match r {
                Ok((tcp, _peer)) => {
                    let c = &shared.counters;
                    if c.tcp_open.load(Ordering::Relaxed) >= shared.config.max_connections as u64 {
                        c.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("local server at its connection cap; closing a new one");
                        drop(tcp);
                        continue;
                    }
                    c.tcp_open.fetch_add(1, Ordering::Relaxed);
                    let _ = tcp.set_nodelay(true);
                    let open = OpenConnection(shared.clone());
                    conns.spawn(async move {
                        conn::serve(tcp, open.0.clone()).await;
                        drop(open);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "local server accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listening);
    shared.shutdown.send_replace(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}
