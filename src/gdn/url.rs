//! Stream URLs and authentication for Macrometa GDN streams and the Apache Pulsar WebSocket API.
//!
//! A [`Topic`] names a stream, an [`Endpoint`] combines a server, a topic, the options of one role
//! (producer, consumer or reader) and an [`Auth`] method. [`Endpoint::connect`] makes one
//! connection attempt and is meant to be used as the connection factory of a
//! [`ReconnectingStream`](crate::ReconnectingStream).

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::codec::MessageId;
use crate::connect::WsStream;
use crate::error::Error;
use crate::redact::{redact_url, Secret};
use crate::tungstenite::client::IntoClientRequest;
use crate::tungstenite::http;

/// The default GDN fabric, `_system`.
pub const DEFAULT_FABRIC: &str = "_system";

/// Longest GDN stream name (without the `c8globals.` / `c8locals.` prefix) the server accepts
/// when a stream is created: 230 characters.
pub const MAX_STREAM_NAME_CHARS: usize = 230;

/// Largest number the server accepts in a numeric query parameter: it parses them as Java `int`,
/// so anything larger is answered with HTTP 400.
const MAX_WIRE_INT: u64 = i32::MAX as u64;

/// A stream name, server address or option that cannot be put into a stream URL.
///
/// Messages never contain secrets: server addresses are redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// A name that must not be empty is empty.
    #[error("{what} is empty")]
    EmptyName {
        /// Which name (`"tenant"`, `"fabric"`, `"stream"`, `"namespace"`, `"topic"`,
        /// `"subscription"`, `"producer name"`, …).
        what: &'static str,
    },
    /// A name contains something the server cannot accept.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server address is not `ws://host[:port]` or `wss://host[:port]`. Holds the address
    /// with any credentials redacted.
    #[error(
        "invalid server {0:?}: expected ws://host[:port] or wss://host[:port] \
         without credentials, path or query"
    )]
    InvalidServer(String),
    /// An option value the server would refuse (it answers such handshakes with HTTP 400).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option (query parameter or setting) concerned.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        Error::Url(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Topic
// ---------------------------------------------------------------------------------------------

/// Where a stream lives: `persistent://<tenant>/<namespace>/<topic>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    tenant: String,
    namespace: String,
    topic: String,
    gdn: bool,
}

impl Topic {
    /// A Macrometa GDN stream.
    ///
    /// A global stream lives in namespace `c8global.<fabric>` as topic `c8globals.<stream>`; a
    /// local one (`local == true`) in `c8local.<fabric>` as `c8locals.<stream>`. Pass the bare
    /// stream name, without the prefix. Most streams are in the fabric [`DEFAULT_FABRIC`]
    /// (`_system`).
    ///
    /// ```
    /// use stream_websocket::gdn::{Topic, DEFAULT_FABRIC};
    ///
    /// let topic = Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false)?;
    /// assert_eq!(topic.full_name(), "persistent://acme_x.com/c8global._system/c8globals.orders");
    /// # Ok::<(), stream_websocket::gdn::UrlError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`UrlError::EmptyName`] for an empty tenant, fabric or stream; [`UrlError::InvalidName`]
    /// for a name containing `/`, `%` or a control character, a stream name longer than
    /// [`MAX_STREAM_NAME_CHARS`] or one that already has the `c8globals.` / `c8locals.` prefix,
    /// and a tenant that is `.` or `..`.
    pub fn gdn(tenant: &str, fabric: &str, stream: &str, local: bool) -> Result<Topic, UrlError> {
        check_segment("tenant", tenant)?;
        check_name("fabric", fabric)?;
        check_name("stream", stream)?;
        if stream.chars().count() > MAX_STREAM_NAME_CHARS {
            return Err(invalid_name("stream", stream, "longer than 230 characters"));
        }
        if stream.starts_with("c8globals.") || stream.starts_with("c8locals.") {
            return Err(invalid_name(
                "stream",
                stream,
                "already has the c8globals./c8locals. prefix; pass the bare stream name",
            ));
        }
        let (ns, tp) = if local {
            ("c8local", "c8locals")
        } else {
            ("c8global", "c8globals")
        };
        Ok(Topic {
            tenant: tenant.to_string(),
            namespace: format!("{ns}.{fabric}"),
            topic: format!("{tp}.{stream}"),
            gdn: true,
        })
    }

    /// A plain Apache Pulsar topic, `persistent://<tenant>/<namespace>/<topic>`.
    ///
    /// # Errors
    ///
    /// [`UrlError::EmptyName`] for an empty name; [`UrlError::InvalidName`] for a name containing
    /// `/`, `%` or a control character, or one that is `.` or `..`.
    pub fn pulsar(tenant: &str, namespace: &str, topic: &str) -> Result<Topic, UrlError> {
        check_segment("tenant", tenant)?;
        check_segment("namespace", namespace)?;
        check_segment("topic", topic)?;
        Ok(Topic {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            gdn: false,
        })
    }

    /// True for a GDN stream (its URLs get the `/_ws` prefix).
    pub fn is_gdn(&self) -> bool {
        self.gdn
    }

    /// `persistent://<tenant>/<namespace>/<topic>`, for display and logs (not percent-encoded).
    pub fn full_name(&self) -> String {
        format!(
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The namespace (`c8global.<fabric>` / `c8local.<fabric>` for GDN).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The topic name within the namespace (`c8globals.<stream>` / `c8locals.<stream>` for GDN).
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }
}

fn invalid_name(what: &'static str, name: &str, reason: &'static str) -> UrlError {
    UrlError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    }
}

/// A name that is part of a path segment.
fn check_name(what: &'static str, name: &str) -> Result<(), UrlError> {
    if name.is_empty() {
        return Err(UrlError::EmptyName { what });
    }
    if name.contains('/') {
        return Err(invalid_name(what, name, "contains '/'"));
    }
    if name.contains('%') {
        return Err(invalid_name(what, name, "contains '%'"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid_name(what, name, "contains a control character"));
    }
    Ok(())
}

/// A name that is a whole path segment: also not `.` or `..`, which proxies may resolve away.
fn check_segment(what: &'static str, name: &str) -> Result<(), UrlError> {
    check_name(what, name)?;
    if name == "." || name == ".." {
        return Err(invalid_name(what, name, "is '.' or '..'"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How a subscription hands messages to its consumers (`subscriptionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscriptionType {
    /// One consumer at a time; a second one is refused with HTTP 409. The server's default.
    #[default]
    Exclusive,
    /// Round-robin over all consumers, unordered.
    Shared,
    /// One active consumer, the others on standby.
    Failover,
    /// Messages with the same key go to the same consumer (`Key_Shared`, Pulsar 2.4+).
    KeyShared,
}

impl SubscriptionType {
    /// The value sent on the wire (case-sensitive): `Exclusive`, `Shared`, `Failover` or
    /// `Key_Shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::Exclusive => "Exclusive",
            SubscriptionType::Shared => "Shared",
            SubscriptionType::Failover => "Failover",
            SubscriptionType::KeyShared => "Key_Shared",
        }
    }
}

impl fmt::Display for SubscriptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionType {
    type Err = UrlError;

    /// Parses `exclusive`, `shared`, `failover` or `key_shared` (also `keyshared` and
    /// `key-shared`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = if s.eq_ignore_ascii_case("exclusive") {
            SubscriptionType::Exclusive
        } else if s.eq_ignore_ascii_case("shared") {
            SubscriptionType::Shared
        } else if s.eq_ignore_ascii_case("failover") {
            SubscriptionType::Failover
        } else if s.eq_ignore_ascii_case("key_shared")
            || s.eq_ignore_ascii_case("keyshared")
            || s.eq_ignore_ascii_case("key-shared")
        {
            SubscriptionType::KeyShared
        } else {
            return Err(UrlError::InvalidOption {
                option: "subscriptionType",
                reason: format!(
                    "unknown subscription type {s:?}; expected Exclusive, Shared, Failover or \
                     Key_Shared"
                ),
            });
        };
        Ok(t)
    }
}

/// Where a new subscription starts (`subscriptionInitialPosition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitialPosition {
    /// Only messages published after the subscription was created (the server's default).
    Latest,
    /// Every message still stored.
    Earliest,
}

impl InitialPosition {
    /// The value sent on the wire: `Latest` or `Earliest`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialPosition::Latest => "Latest",
            InitialPosition::Earliest => "Earliest",
        }
    }
}

/// Where a reader starts (`messageId`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ReaderStart {
    /// The oldest message still stored (`earliest`).
    Earliest,
    /// Only messages published from now on (`latest`). The default.
    #[default]
    Latest,
    /// The message with this id, as received earlier.
    MessageId(MessageId),
}

/// Producer settings, sent as query parameters. Unset options are not sent, so the server's
/// defaults apply.
///
/// ```
/// use std::time::Duration;
/// use stream_websocket::gdn::ProducerOptions;
///
/// let options = ProducerOptions::default()
///     .producer_name("orders-writer")
///     .send_timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerOptions {
    /// `producerName`. A name already in use on the topic is refused with HTTP 409, so a
    /// reconnect may be refused until the server notices the old connection is gone. Default:
    /// unset, the server picks a unique name.
    pub producer_name: Option<String>,
    /// `sendTimeoutMillis`, rounded up to whole milliseconds; zero disables it. Default: unset
    /// (the server uses 30 s).
    pub send_timeout: Option<Duration>,
    /// `maxPendingMessages`: how many messages the server queues for the broker before it
    /// answers with `send-error:8`. Default: unset (the server uses 1000). Keep it at or above
    /// the producer's window, [`ProducerConfig::max_pending`](super::ProducerConfig::max_pending)
    /// (also 1000 by default): a message refused this way is not retried.
    /// [`Producer::for_endpoint`](super::Producer::for_endpoint) makes the window follow it.
    pub max_pending_messages: Option<u32>,
}

impl ProducerOptions {
    /// Sets `producerName`.
    #[must_use]
    pub fn producer_name(mut self, name: impl Into<String>) -> Self {
        self.producer_name = Some(name.into());
        self
    }

    /// Sets `sendTimeoutMillis`.
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// Sets `maxPendingMessages`.
    #[must_use]
    pub fn max_pending_messages(mut self, max: u32) -> Self {
        self.max_pending_messages = Some(max);
        self
    }

    fn query(&self) -> Result<Query, UrlError> {
        let mut q = Query::default();
        if let Some(name) = &self.producer_name {
            check_option_name("producer name", name)?;
            q.push("producerName", name);
        }
        if let Some(t) = self.send_timeout {
            q.push(
                "sendTimeoutMillis",
                &wire_millis("sendTimeoutMillis", t)?.to_string(),
            );
        }
        if let Some(n) = self.max_pending_messages {
            q.push(
                "maxPendingMessages",
                &wire_int("maxPendingMessages", n)?.to_string(),
            );
        }
        Ok(q)
    }
}

/// Consumer settings: the subscription name and query parameters. Unset options are not sent,
/// so the server's defaults apply; `subscriptionType` is always sent.
///
/// ```
/// use std::time::Duration;
/// use stream_websocket::gdn::{ConsumerOptions, InitialPosition, SubscriptionType};
///
/// let options = ConsumerOptions::new("billing")
///     .subscription_type(SubscriptionType::Shared)
///     .initial_position(InitialPosition::Earliest)
///     .ack_timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    subscription: String,
    subscription_type: SubscriptionType,
    receiver_queue_size: Option<u32>,
    consumer_name: Option<String>,
    ack_timeout: Option<Duration>,
    negative_ack_delay: Option<Duration>,
    initial_position: Option<InitialPosition>,
    priority_level: Option<i32>,
}

impl ConsumerOptions {
    /// Options for this subscription (created by the server on first use), with the
    /// [`Exclusive`](SubscriptionType::Exclusive) type and nothing else set.
    pub fn new(subscription: impl Into<String>) -> Self {
        ConsumerOptions {
            subscription: subscription.into(),
            subscription_type: SubscriptionType::default(),
            receiver_queue_size: None,
            consumer_name: None,
            ack_timeout: None,
            negative_ack_delay: None,
            initial_position: None,
            priority_level: None,
        }
    }

    /// Sets `subscriptionType`. Default: [`Exclusive`](SubscriptionType::Exclusive).
    #[must_use]
    pub fn subscription_type(mut self, subscription_type: SubscriptionType) -> Self {
        self.subscription_type = subscription_type;
        self
    }

    /// Sets `receiverQueueSize`: how many unacknowledged messages the server pushes before it
    /// waits for acks. The server lowers values above 1000 to 1000; 0 means one at a time.
    /// Values above `i32::MAX` are refused. Default: unset (the server uses 1000).
    #[must_use]
    pub fn receiver_queue_size(mut self, size: u32) -> Self {
        self.receiver_queue_size = Some(size);
        self
    }

    /// Sets `consumerName`. Default: unset, the server picks one.
    #[must_use]
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    /// Sets `ackTimeoutMillis` (rounded up to whole milliseconds): messages not acknowledged
    /// within it are redelivered. Must be zero (off) or at least one second. Default: unset (off).
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }

    /// Sets `negativeAckRedeliveryDelay` (rounded up to whole milliseconds): how long after a
    /// negative acknowledgement a message is redelivered (Pulsar 2.7+). Default: unset (the server
    /// uses 60 s).
    #[must_use]
    pub fn negative_ack_delay(mut self, delay: Duration) -> Self {
        self.negative_ack_delay = Some(delay);
        self
    }

    /// Sets `subscriptionInitialPosition`, where a *new* subscription starts. Default: unset
    /// (the server starts at [`Latest`](InitialPosition::Latest)).
    #[must_use]
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = Some(position);
        self
    }

    /// Sets `priorityLevel` (lower is served first on Shared subscriptions). Default: unset.
    #[must_use]
    pub fn priority_level(mut self, level: i32) -> Self {
        self.priority_level = Some(level);
        self
    }

    fn query(&self) -> Result<Query, UrlError> {
        let mut q = Query::default();
        q.push("subscriptionType", self.subscription_type.as_str());
        if let Some(n) = self.receiver_queue_size {
            q.push(
                "receiverQueueSize",
                &wire_int("receiverQueueSize", n)?.to_string(),
            );
        }
        if let Some(name) = &self.consumer_name {
            check_option_name("consumer name", name)?;
            q.push("consumerName", name);
        }
        if let Some(t) = self.ack_timeout {
            let ms = wire_millis("ackTimeoutMillis", t)?;
            if ms != 0 && ms < 1000 {
                return Err(UrlError::InvalidOption {
                    option: "ackTimeoutMillis",
                    reason: format!("must be 0 (off) or at least 1000 ms, got {ms} ms"),
                });
            }
            q.push("ackTimeoutMillis", &ms.to_string());
        }
        if let Some(d) = self.negative_ack_delay {
            let ms = wire_millis("negativeAckRedeliveryDelay", d)?;
            q.push("negativeAckRedeliveryDelay", &ms.to_string());
        }
        if let Some(p) = self.initial_position {
            q.push("subscriptionInitialPosition", p.as_str());
        }
        if let Some(level) = self.priority_level {
            q.push("priorityLevel", &level.to_string());
        }
        Ok(q)
    }
}

/// Reader settings, sent as query parameters. `messageId` is always sent.
///
/// The start position is fixed in the URL: a reader that reconnects starts there again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderOptions {
    reader_name: Option<String>,
    receiver_queue_size: Option<u32>,
    start: ReaderStart,
}

impl ReaderOptions {
    /// Sets `readerName`. Default: unset.
    #[must_use]
    pub fn reader_name(mut self, name: impl Into<String>) -> Self {
        self.reader_name = Some(name.into());
        self
    }

    /// Sets `receiverQueueSize` (the server's default and maximum is 1000; larger values are
    /// lowered, values above `i32::MAX` are refused). Default: unset.
    #[must_use]
    pub fn receiver_queue_size(mut self, size: u32) -> Self {
        self.receiver_queue_size = Some(size);
        self
    }

    /// Sets where the reader starts (`messageId`). Default: [`ReaderStart::Latest`].
    #[must_use]
    pub fn start(mut self, start: ReaderStart) -> Self {
        self.start = start;
        self
    }

    fn query(&self) -> Result<Query, UrlError> {
        let mut q = Query::default();
        if let Some(name) = &self.reader_name {
            check_option_name("reader name", name)?;
            q.push("readerName", name);
        }
        if let Some(n) = self.receiver_queue_size {
            q.push(
                "receiverQueueSize",
                &wire_int("receiverQueueSize", n)?.to_string(),
            );
        }
        let id = match &self.start {
            ReaderStart::Earliest => "earliest",
            ReaderStart::Latest => "latest",
            ReaderStart::MessageId(id) if id.as_str().is_empty() => {
                return Err(UrlError::InvalidOption {
                    option: "messageId",
                    reason: "the message id is empty".to_string(),
                })
            }
            ReaderStart::MessageId(id) => id.as_str(),
        };
        q.push("messageId", id);
        Ok(q)
    }
}

fn check_option_name(what: &'static str, name: &str) -> Result<(), UrlError> {
    if name.is_empty() {
        return Err(UrlError::EmptyName { what });
    }
    Ok(())
}

fn wire_int(option: &'static str, n: u32) -> Result<u32, UrlError> {
    if u64::from(n) > MAX_WIRE_INT {
        return Err(UrlError::InvalidOption {
            option,
            reason: format!("{n} is above the server's limit of {MAX_WIRE_INT}"),
        });
    }
    Ok(n)
}

/// A duration in whole milliseconds, rounded up, within the server's `int` range.
fn wire_millis(option: &'static str, d: Duration) -> Result<u64, UrlError> {
    let mut ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        ms += 1;
    }
    match u64::try_from(ms) {
        Ok(ms) if ms <= MAX_WIRE_INT => Ok(ms),
        _ => Err(UrlError::InvalidOption {
            option,
            reason: format!("{d:?} is above the server's limit of {MAX_WIRE_INT} ms"),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Percent-encoding and query strings
// ---------------------------------------------------------------------------------------------

/// Appends `s` percent-encoded: unreserved characters (`A-Z a-z 0-9 - . _ ~`) stay, every other
/// UTF-8 byte becomes `%XX`.
fn push_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// A query string under construction, parameters in the order pushed.
#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        push_encoded(&mut self.0, value);
    }
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

type OtpFn = dyn Fn() -> BoxFuture<'static, Result<Secret, Error>> + Send + Sync;

/// An async callback that fetches a one-time password (on GDN: `POST /apid/otp`). Cheap to
/// clone; its `Debug` prints `OtpSource(..)`.
#[derive(Clone)]
pub struct OtpSource(Arc<OtpFn>);

impl OtpSource {
    /// Wraps the callback.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, Error>> + Send + 'static,
    {
        OtpSource(Arc::new(move || f().boxed()))
    }

    /// Calls the callback once.
    pub fn fetch(&self) -> BoxFuture<'static, Result<Secret, Error>> {
        (self.0)()
    }
}

impl fmt::Debug for OtpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpSource(..)")
    }
}

/// How the WebSocket upgrade is authenticated. `Debug` never shows the secret.
///
/// The API key and JWT go into the `Authorization` header and never into the URL.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No authentication. The default.
    #[default]
    None,
    /// `Authorization: apikey <key>`.
    ApiKey(Secret),
    /// `Authorization: bearer <jwt>`.
    Bearer(Secret),
    /// A one-time password fetched by this async callback on every connection attempt and
    /// appended to the URL as `?otp=<otp>`.
    Otp(OtpSource),
}

impl Auth {
    /// [`Auth::ApiKey`]: `Authorization: apikey <key>`.
    pub fn api_key(key: impl Into<Secret>) -> Auth {
        Auth::ApiKey(key.into())
    }

    /// [`Auth::Bearer`]: `Authorization: bearer <jwt>`.
    pub fn bearer(token: impl Into<Secret>) -> Auth {
        Auth::Bearer(token.into())
    }

    /// [`Auth::Otp`]: `f` is called on every connection attempt (a one-time password is good for
    /// one connection). If it fails, that attempt fails with its error; return
    /// [`Error::factory`] for a failure that should be retried with backoff.
    ///
    /// ```
    /// use stream_websocket::gdn::Auth;
    /// use stream_websocket::Secret;
    ///
    /// let auth = Auth::otp(|| async {
    ///     // POST /apid/otp with the API key here.
    ///     Ok(Secret::new("one-time-password"))
    /// });
    /// assert_eq!(auth.kind(), "otp");
    /// ```
    pub fn otp<F, Fut>(f: F) -> Auth
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, Error>> + Send + 'static,
    {
        Auth::Otp(OtpSource::new(f))
    }

    /// The method's name without its secret: `"none"`, `"apikey"`, `"bearer"` or `"otp"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::ApiKey(_) => "apikey",
            Auth::Bearer(_) => "bearer",
            Auth::Otp(_) => "otp",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoint
// ---------------------------------------------------------------------------------------------

/// Which kind of client an [`Endpoint`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointRole {
    /// Publishes messages (`/ws/v2/producer/...`).
    Producer,
    /// Receives and acknowledges messages of a subscription (`/ws/v2/consumer/...`).
    Consumer,
    /// Reads messages from a position without a durable subscription (`/ws/v2/reader/...`).
    Reader,
}

impl EndpointRole {
    /// The path segment: `producer`, `consumer` or `reader`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointRole::Producer => "producer",
            EndpointRole::Consumer => "consumer",
            EndpointRole::Reader => "reader",
        }
    }
}

/// A producer, consumer or reader endpoint: server, topic, role options and authentication.
///
/// URLs are `<server>/_ws/ws/v2/<role>/persistent/<tenant>/<namespace>/<topic>[/<subscription>]`
/// for GDN and the same without `/_ws` for Apache Pulsar; the subscription segment exists only for
/// consumers. Names are percent-encoded.
///
/// `Debug` shows the URL (redacted) and the kind of authentication, never its secret.
///
/// ```no_run
/// use stream_websocket::gdn::{Auth, ConsumerOptions, Endpoint, Topic, DEFAULT_FABRIC};
/// use stream_websocket::ReconnectingStream;
///
/// # fn run() -> Result<(), stream_websocket::Error> {
/// let topic = Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false)?;
/// let endpoint = Endpoint::consumer(
///     "wss://api-gdn-us-west.paas.macrometa.io",
///     &topic,
///     ConsumerOptions::new("billing"),
/// )?
/// .with_auth(Auth::api_key("my-api-key"));
/// let stream = ReconnectingStream::new(move || endpoint.connect());
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    role: EndpointRole,
    topic: Topic,
    auth: Auth,
    options: crate::ConnectOptions,
    /// A producer's `maxPendingMessages`, if set.
    max_pending_messages: Option<u32>,
}

impl Endpoint {
    /// A producer endpoint. `server` is `ws://host[:port]` or `wss://host[:port]` (a trailing `/`
    /// is allowed).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] for another scheme, a path, query, fragment, credentials or an
    /// empty or malformed host or port; [`UrlError::EmptyName`] for an empty producer name;
    /// [`UrlError::InvalidOption`] for a send timeout or pending limit above `i32::MAX`.
    pub fn producer(
        server: &str,
        topic: &Topic,
        options: ProducerOptions,
    ) -> Result<Endpoint, UrlError> {
        let query = options.query()?;
        let mut endpoint = Endpoint::build(server, topic, EndpointRole::Producer, None, query)?;
        endpoint.max_pending_messages = options.max_pending_messages;
        Ok(endpoint)
    }

    /// A consumer endpoint for the subscription in `options`. `server` as for
    /// [`producer`](Self::producer).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] as for [`producer`](Self::producer);
    /// [`UrlError::EmptyName`] / [`UrlError::InvalidName`] for an empty subscription or one
    /// containing `/`, `%` or a control character, and an empty consumer name;
    /// [`UrlError::InvalidOption`] for an ack timeout between 0 and 1000 ms or a number above
    /// `i32::MAX`.
    pub fn consumer(
        server: &str,
        topic: &Topic,
        options: ConsumerOptions,
    ) -> Result<Endpoint, UrlError> {
        check_segment("subscription", &options.subscription)?;
        let query = options.query()?;
        Endpoint::build(
            server,
            topic,
            EndpointRole::Consumer,
            Some(&options.subscription),
            query,
        )
    }

    /// A reader endpoint. `server` as for [`producer`](Self::producer).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] as for [`producer`](Self::producer); [`UrlError::EmptyName`]
    /// for an empty reader name; [`UrlError::InvalidOption`] for an empty message id or a queue
    /// size above `i32::MAX`.
    pub fn reader(
        server: &str,
        topic: &Topic,
        options: ReaderOptions,
    ) -> Result<Endpoint, UrlError> {
        let query = options.query()?;
        Endpoint::build(server, topic, EndpointRole::Reader, None, query)
    }

    fn build(
        server: &str,
        topic: &Topic,
        role: EndpointRole,
        subscription: Option<&str>,
        query: Query,
    ) -> Result<Endpoint, UrlError> {
        let mut url = parse_server(server)?;
        if topic.gdn {
            url.push_str("/_ws");
        }
        url.push_str("/ws/v2/");
        url.push_str(role.as_str());
        url.push_str("/persistent");
        for segment in [&topic.tenant, &topic.namespace, &topic.topic]
            .into_iter()
            .map(String::as_str)
            .chain(subscription)
        {
            url.push('/');
            push_encoded(&mut url, segment);
        }
        if !query.0.is_empty() {
            url.push('?');
            url.push_str(&query.0);
        }
        // Everything above is validated or encoded; this only guards against a mistake here.
        if http::Uri::try_from(url.as_str()).is_err() {
            return Err(UrlError::InvalidServer(redact_server(server)));
        }
        Ok(Endpoint {
            url,
            role,
            topic: topic.clone(),
            auth: Auth::None,
            options: crate::ConnectOptions::default(),
            max_pending_messages: None,
        })
    }

    /// This endpoint with `auth` instead of its current authentication (initially
    /// [`Auth::None`]).
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Endpoint {
        self.auth = auth;
        self
    }

    /// Sets how connections are opened: tungstenite limits and the TLS connector (a custom root
    /// store, for instance). Default: [`ConnectOptions::new`](crate::ConnectOptions::new).
    pub fn with_connect_options(mut self, options: crate::ConnectOptions) -> Endpoint {
        self.options = options;
        self
    }

    /// The URL without any one-time password (what [`request`](Self::request) starts from).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Producer, consumer or reader.
    pub fn role(&self) -> EndpointRole {
        self.role
    }

    /// A producer endpoint's `maxPendingMessages` ([`ProducerOptions::max_pending_messages`]),
    /// if it sets one: the server's queue for the producer (1000 when unset).
    pub fn max_pending_messages(&self) -> Option<u32> {
        self.max_pending_messages
    }

    /// The authentication method.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Builds the upgrade request for one connection attempt: with [`Auth::Otp`] it fetches a
    /// fresh one-time password and appends `otp=<otp>` (percent-encoded) to the query; with
    /// [`Auth::ApiKey`] / [`Auth::Bearer`] it sets the `Authorization` header (marked
    /// sensitive).
    ///
    /// # Errors
    ///
    /// The OTP callback's error; [`Error::Factory`] if it returned an empty password;
    /// [`Error::Url`] for an empty API key or token, or one that cannot be put in an HTTP header.
    pub async fn request(&self) -> Result<http::Request<()>, Error> {
        let mut url = self.url.clone();
        if let Auth::Otp(source) = &self.auth {
            tracing::debug!(topic = %self.topic, "fetching a one-time password");
            let otp = source.fetch().await?;
            if otp.expose().is_empty() {
                return Err(Error::factory(UrlError::EmptyName {
                    what: "one-time password",
                }));
            }
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("otp=");
            push_encoded(&mut url, otp.expose());
        }
        let mut request = url.into_client_request()?;
        let header = match &self.auth {
            Auth::ApiKey(key) => Some(("apikey", "API key", key)),
            Auth::Bearer(token) => Some(("bearer", "bearer token", token)),
            Auth::None | Auth::Otp(_) => None,
        };
        if let Some((scheme, what, secret)) = header {
            if secret.expose().is_empty() {
                return Err(UrlError::InvalidOption {
                    option: "Authorization",
                    reason: format!("the {what} is empty"),
                }
                .into());
            }
            let mut value = http::HeaderValue::from_str(&format!("{scheme} {}", secret.expose()))
                .map_err(|_| UrlError::InvalidOption {
                option: "Authorization",
                reason: format!("the {what} contains characters not allowed in an HTTP header"),
            })?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// One connection attempt: [`request`](Self::request), then [`crate::connect`]. The future
    /// owns a copy of the endpoint, so this can be the connection factory itself:
    /// `ReconnectingStream::new(move || endpoint.connect())`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request) and [`crate::connect`].
    pub fn connect(&self) -> impl Future<Output = Result<WsStream, Error>> + Send + 'static {
        let endpoint = self.clone();
        async move {
            let request = endpoint.request().await?;
            crate::connect::connect_with(request, endpoint.options).await
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth.kind())
            .finish()
    }
}

/// Checks `ws[s]://host[:port][/]` and returns it without the trailing `/`, scheme lowercased.
fn parse_server(server: &str) -> Result<String, UrlError> {
    let invalid = || UrlError::InvalidServer(redact_server(server));
    let (scheme, rest) = server.split_once("://").ok_or_else(invalid)?;
    let scheme = if scheme.eq_ignore_ascii_case("ws") {
        "ws"
    } else if scheme.eq_ignore_ascii_case("wss") {
        "wss"
    } else {
        return Err(invalid());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if !valid_authority(authority) {
        return Err(invalid());
    }
    Ok(format!("{scheme}://{authority}"))
}

/// `host[:port]` where host is a DNS name / IPv4 address or a bracketed IPv6 address.
fn valid_authority(authority: &str) -> bool {
    let (host_ok, port) = if let Some(after) = authority.strip_prefix('[') {
        let Some((v6, tail)) = after.split_once(']') else {
            return false;
        };
        let host_ok = !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        let port = match tail {
            "" => None,
            t => match t.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (host_ok, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        (host_ok, port)
    };
    let port_ok = match port {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n != 0)
        }
    };
    host_ok && port_ok
}

/// The server text for an error message: secret query values, passwords and any user-info part
/// (which might be a key) replaced by `REDACTED`.
fn redact_server(server: &str) -> String {
    let mut s = redact_url(server).into_owned();
    let start = s.find("://").map_or(0, |i| i + 3);
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    if let Some(at) = s[start..end].rfind('@') {
        s.replace_range(start..start + at, "REDACTED");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const SERVER: &str = "wss://api-gdn.example.com";

    fn gdn_topic() -> Topic {
        Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false).unwrap()
    }

    #[test]
    fn gdn_global_producer_url() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/producer/persistent/acme_x.com/c8global._system/c8globals.orders"
        );
        assert_eq!(e.role(), EndpointRole::Producer);
        assert!(e.topic().is_gdn());
        assert_eq!(
            gdn_topic().full_name(),
            "persistent://acme_x.com/c8global._system/c8globals.orders"
        );
        assert_eq!(gdn_topic().to_string(), gdn_topic().full_name());
    }

    #[test]
    fn gdn_local_consumer_url_with_all_params() {
        let topic = Topic::gdn("acme", "fab1", "events", true).unwrap();
        assert_eq!(topic.namespace(), "c8local.fab1");
        assert_eq!(topic.topic(), "c8locals.events");
        let options = ConsumerOptions::new("sub-1")
            .subscription_type(SubscriptionType::KeyShared)
            .receiver_queue_size(500)
            .consumer_name("c 1")
            .ack_timeout(Duration::from_secs(30))
            .negative_ack_delay(Duration::from_millis(1500))
            .initial_position(InitialPosition::Earliest)
            .priority_level(-2);
        let e = Endpoint::consumer("ws://127.0.0.1:8080/", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://127.0.0.1:8080/_ws/ws/v2/consumer/persistent/acme/c8local.fab1/c8locals.events/sub-1\
             ?subscriptionType=Key_Shared&receiverQueueSize=500&consumerName=c%201\
             &ackTimeoutMillis=30000&negativeAckRedeliveryDelay=1500\
             &subscriptionInitialPosition=Earliest&priorityLevel=-2"
        );
    }

    #[test]
    fn consumer_always_sends_subscription_type() {
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s")).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/consumer/persistent/acme_x.com/c8global._system/c8globals.orders/s?subscriptionType=Exclusive"
        );
    }

    #[test]
    fn pulsar_producer_url_with_all_params() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        assert!(!topic.is_gdn());
        let options = ProducerOptions::default()
            .producer_name("writer-1")
            .send_timeout(Duration::from_millis(2500))
            .max_pending_messages(100);
        let e = Endpoint::producer("WS://localhost:8080", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://localhost:8080/ws/v2/producer/persistent/public/default/orders\
             ?producerName=writer-1&sendTimeoutMillis=2500&maxPendingMessages=100"
        );
    }

    #[test]
    fn pulsar_consumer_url() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        let options = ConsumerOptions::new("billing")
            .subscription_type(SubscriptionType::Failover)
            .ack_timeout(Duration::ZERO);
        let e = Endpoint::consumer("ws://localhost:8080", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://localhost:8080/ws/v2/consumer/persistent/public/default/orders/billing\
             ?subscriptionType=Failover&ackTimeoutMillis=0"
        );
    }

    #[test]
    fn pulsar_reader_urls() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        let options = ReaderOptions::default()
            .reader_name("r1")
            .receiver_queue_size(10)
            .start(ReaderStart::MessageId(MessageId::new("CAEQAw+/=")));
        let e = Endpoint::reader("wss://[::1]:8443", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "wss://[::1]:8443/ws/v2/reader/persistent/public/default/orders\
             ?readerName=r1&receiverQueueSize=10&messageId=CAEQAw%2B%2F%3D"
        );
        let e = Endpoint::reader("ws://h", &topic, ReaderOptions::default()).unwrap();
        assert_eq!(
            e.url(),
            "ws://h/ws/v2/reader/persistent/public/default/orders?messageId=latest"
        );
        let e = Endpoint::reader(
            "ws://h",
            &topic,
            ReaderOptions::default().start(ReaderStart::Earliest),
        )
        .unwrap();
        assert!(e.url().ends_with("?messageId=earliest"), "{}", e.url());
    }

    #[test]
    fn names_are_percent_encoded() {
        let topic = Topic::gdn("t", "my fabric", "Bestellungen für Köln~", false).unwrap();
        let e = Endpoint::consumer(SERVER, &topic, ConsumerOptions::new("sub 1+é")).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/consumer/persistent/t/c8global.my%20fabric/\
             c8globals.Bestellungen%20f%C3%BCr%20K%C3%B6ln~/sub%201%2B%C3%A9?subscriptionType=Exclusive"
        );
        // The display name is not encoded.
        assert_eq!(
            topic.full_name(),
            "persistent://t/c8global.my fabric/c8globals.Bestellungen für Köln~"
        );
    }

    #[test]
    fn empty_names_are_rejected() {
        assert_eq!(
            Topic::gdn("", "f", "s", false),
            Err(UrlError::EmptyName { what: "tenant" })
        );
        assert_eq!(
            Topic::gdn("t", "", "s", false),
            Err(UrlError::EmptyName { what: "fabric" })
        );
        assert_eq!(
            Topic::gdn("t", "f", "", false),
            Err(UrlError::EmptyName { what: "stream" })
        );
        assert_eq!(
            Topic::pulsar("t", "", "x"),
            Err(UrlError::EmptyName { what: "namespace" })
        );
        assert_eq!(
            Topic::pulsar("t", "n", ""),
            Err(UrlError::EmptyName { what: "topic" })
        );
        assert_eq!(
            Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("")).unwrap_err(),
            UrlError::EmptyName {
                what: "subscription"
            }
        );
        assert_eq!(
            Endpoint::producer(
                SERVER,
                &gdn_topic(),
                ProducerOptions::default().producer_name("")
            )
            .unwrap_err(),
            UrlError::EmptyName {
                what: "producer name"
            }
        );
        assert_eq!(
            Endpoint::consumer(
                SERVER,
                &gdn_topic(),
                ConsumerOptions::new("s").consumer_name("")
            )
            .unwrap_err(),
            UrlError::EmptyName {
                what: "consumer name"
            }
        );
        assert_eq!(
            Endpoint::reader(
                SERVER,
                &gdn_topic(),
                ReaderOptions::default().reader_name("")
            )
            .unwrap_err(),
            UrlError::EmptyName {
                what: "reader name"
            }
        );
        assert_eq!(
            UrlError::EmptyName { what: "tenant" }.to_string(),
            "tenant is empty"
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let reason = |r: Result<Topic, UrlError>| match r {
            Err(UrlError::InvalidName { reason, .. }) => reason,
            other => panic!("expected InvalidName, got {other:?}"),
        };
        assert_eq!(reason(Topic::gdn("a/b", "f", "s", false)), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f/g", "s", false)), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f", "s/x", false)), "contains '/'");
        assert_eq!(reason(Topic::pulsar("t", "n", "a/b")), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f", "50%", false)), "contains '%'");
        assert_eq!(reason(Topic::pulsar("t%20", "n", "x")), "contains '%'");
        assert_eq!(
            reason(Topic::gdn("t", "f", "a\nb", false)),
            "contains a control character"
        );
        assert_eq!(
            reason(Topic::pulsar("t", "n\u{7f}", "x")),
            "contains a control character"
        );
        assert_eq!(reason(Topic::pulsar("..", "n", "x")), "is '.' or '..'");
        assert_eq!(reason(Topic::pulsar("t", ".", "x")), "is '.' or '..'");

        let ok = "é".repeat(MAX_STREAM_NAME_CHARS);
        assert!(Topic::gdn("t", "f", &ok, false).is_ok());
        let long = "s".repeat(MAX_STREAM_NAME_CHARS + 1);
        assert_eq!(
            reason(Topic::gdn("t", "f", &long, false)),
            "longer than 230 characters"
        );
        assert!(matches!(
            Topic::gdn("t", "f", "c8globals.orders", false),
            Err(UrlError::InvalidName { what: "stream", .. })
        ));

        let sub = |s: &str| Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new(s));
        assert_eq!(
            sub("a/b").unwrap_err(),
            UrlError::InvalidName {
                what: "subscription",
                name: "a/b".into(),
                reason: "contains '/'"
            }
        );
        assert!(matches!(
            sub("a%b"),
            Err(UrlError::InvalidName {
                reason: "contains '%'",
                ..
            })
        ));
        assert!(matches!(
            sub("a\tb"),
            Err(UrlError::InvalidName {
                reason: "contains a control character",
                ..
            })
        ));
        assert_eq!(
            sub("a/b").unwrap_err().to_string(),
            "invalid subscription \"a/b\": contains '/'"
        );
    }

    #[test]
    fn invalid_servers_are_rejected() {
        for server in [
            "",
            "example.com",
            "http://example.com",
            "https://example.com",
            "ws://",
            "ws:///",
            "wss://host/path",
            "wss://host/_ws",
            "wss://host//",
            "wss://host?x=1",
            "wss://host#frag",
            "wss://host:",
            "wss://host:0",
            "wss://host:65536",
            "wss://host:80a",
            "wss://:443",
            "wss://ho st",
            "wss://[::1",
            "wss://[]:80",
            "wss://[::1]x",
            "wss://user@host",
            " wss://host",
        ] {
            let err = Endpoint::producer(server, &gdn_topic(), ProducerOptions::default())
                .expect_err(server);
            assert!(
                matches!(err, UrlError::InvalidServer(_)),
                "{server}: {err:?}"
            );
        }
        for server in [
            "ws://host",
            "wss://host/",
            "WSS://Host.Example:443",
            "ws://127.0.0.1:1",
            "ws://[fe80::1]",
        ] {
            assert!(
                Endpoint::producer(server, &gdn_topic(), ProducerOptions::default()).is_ok(),
                "{server}"
            );
        }
    }

    #[test]
    fn invalid_options_are_rejected() {
        let consumer = |o: ConsumerOptions| Endpoint::consumer(SERVER, &gdn_topic(), o);
        for ms in [1, 500, 999] {
            let err = consumer(ConsumerOptions::new("s").ack_timeout(Duration::from_millis(ms)))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    UrlError::InvalidOption {
                        option: "ackTimeoutMillis",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        // Sub-millisecond parts round up: 999.5 ms is sent as 1000.
        let e = consumer(ConsumerOptions::new("s").ack_timeout(Duration::from_micros(999_500)))
            .unwrap();
        assert!(e.url().contains("ackTimeoutMillis=1000"), "{}", e.url());
        assert!(consumer(ConsumerOptions::new("s").ack_timeout(Duration::from_secs(1))).is_ok());
        assert_eq!(
            consumer(ConsumerOptions::new("s").ack_timeout(Duration::from_millis(5)))
                .unwrap_err()
                .to_string(),
            "invalid ackTimeoutMillis: must be 0 (off) or at least 1000 ms, got 5 ms"
        );
        assert!(matches!(
            consumer(ConsumerOptions::new("s").receiver_queue_size(u32::MAX)),
            Err(UrlError::InvalidOption {
                option: "receiverQueueSize",
                ..
            })
        ));
        // Above 1000 is fine: the server lowers it.
        assert!(consumer(ConsumerOptions::new("s").receiver_queue_size(5000)).is_ok());
        assert!(matches!(
            consumer(ConsumerOptions::new("s").negative_ack_delay(Duration::from_secs(u64::MAX))),
            Err(UrlError::InvalidOption {
                option: "negativeAckRedeliveryDelay",
                ..
            })
        ));
        assert!(matches!(
            Endpoint::producer(
                SERVER,
                &gdn_topic(),
                ProducerOptions::default().send_timeout(Duration::from_secs(3_000_000))
            ),
            Err(UrlError::InvalidOption {
                option: "sendTimeoutMillis",
                ..
            })
        ));
        assert!(matches!(
            Endpoint::producer(
                SERVER,
                &gdn_topic(),
                ProducerOptions::default().max_pending_messages(u32::MAX)
            ),
            Err(UrlError::InvalidOption {
                option: "maxPendingMessages",
                ..
            })
        ));
        assert!(matches!(
            Endpoint::reader(
                SERVER,
                &gdn_topic(),
                ReaderOptions::default().start(ReaderStart::MessageId(MessageId::new("")))
            ),
            Err(UrlError::InvalidOption {
                option: "messageId",
                ..
            })
        ));
    }

    #[test]
    fn subscription_type_parsing() {
        use SubscriptionType::*;
        for (s, t) in [
            ("exclusive", Exclusive),
            ("Exclusive", Exclusive),
            ("SHARED", Shared),
            ("Failover", Failover),
            ("key_shared", KeyShared),
            ("Key_Shared", KeyShared),
            ("keyshared", KeyShared),
            ("KEY-SHARED", KeyShared),
        ] {
            assert_eq!(s.parse::<SubscriptionType>(), Ok(t), "{s}");
        }
        for s in ["", "key shared", "exclusive ", "round-robin"] {
            assert!(
                matches!(
                    s.parse::<SubscriptionType>(),
                    Err(UrlError::InvalidOption {
                        option: "subscriptionType",
                        ..
                    })
                ),
                "{s:?}"
            );
        }
        assert_eq!(SubscriptionType::default(), Exclusive);
        let wire: Vec<_> = [Exclusive, Shared, Failover, KeyShared]
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(wire, ["Exclusive", "Shared", "Failover", "Key_Shared"]);
        assert_eq!(KeyShared.to_string(), "Key_Shared");
    }

    #[tokio::test]
    async fn request_sets_authorization_headers() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();

        let req = e.request().await.unwrap();
        assert!(req.headers().get("authorization").is_none());
        assert_eq!(req.uri().to_string(), e.url());

        let req = e
            .clone()
            .with_auth(Auth::api_key("K"))
            .request()
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "apikey K");
        assert!(req.headers()["authorization"].is_sensitive());
        assert_eq!(req.uri().to_string(), e.url());

        let req = e
            .clone()
            .with_auth(Auth::bearer(String::from("T")))
            .request()
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "bearer T");
        assert_eq!(req.uri().to_string(), e.url());
    }

    #[tokio::test]
    async fn bad_header_secrets_are_url_errors_without_the_secret() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        let err = e
            .clone()
            .with_auth(Auth::api_key("s3cr3t\nkey"))
            .request()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
        let err = e.with_auth(Auth::bearer("")).request().await.unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
    }

    #[tokio::test]
    async fn otp_is_fetched_on_every_request() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let auth = Auth::otp(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(Secret::new(format!("otp{n}+/="))) }
        });
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s"))
            .unwrap()
            .with_auth(auth);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(!e.url().contains("otp"));

        let first = e.request().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let second = e.request().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        assert_eq!(
            first.uri().to_string(),
            format!("{}&otp=otp1%2B%2F%3D", e.url())
        );
        assert_eq!(
            second.uri().to_string(),
            format!("{}&otp=otp2%2B%2F%3D", e.url())
        );
        assert!(first.headers().get("authorization").is_none());

        // Without other parameters the OTP starts the query.
        let p = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default())
            .unwrap()
            .with_auth(e.auth().clone());
        let req = p.request().await.unwrap();
        assert_eq!(
            req.uri().to_string(),
            format!("{}?otp=otp3%2B%2F%3D", p.url())
        );
    }

    #[tokio::test]
    async fn otp_failures_fail_the_request() {
        let failing =
            Auth::otp(|| async { Err(Error::factory(std::io::Error::other("otp service down"))) });
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        let err = e.clone().with_auth(failing).request().await.unwrap_err();
        assert!(matches!(err, Error::Factory(_)), "{err:?}");
        assert!(err.is_retryable());

        let empty = Auth::otp(|| async { Ok(Secret::new("")) });
        let err = e.with_auth(empty).request().await.unwrap_err();
        assert!(matches!(err, Error::Factory(_)), "{err:?}");
    }

    #[tokio::test]
    async fn secrets_never_appear_in_debug_or_errors() {
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s")).unwrap();

        let with_key = e.clone().with_auth(Auth::api_key("KEY-s3cr3t"));
        let text = format!("{with_key:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("apikey"), "{text}");
        assert!(text.contains("c8globals.orders"), "{text}");
        let req = with_key.request().await.unwrap();
        assert!(!format!("{req:?}").contains("s3cr3t"));

        let with_jwt = e.clone().with_auth(Auth::bearer("JWT-s3cr3t"));
        assert!(!format!("{with_jwt:?} {:?}", with_jwt.auth()).contains("s3cr3t"));

        let with_otp = e.with_auth(Auth::otp(|| async { Ok(Secret::new("OTP-s3cr3t")) }));
        let text = format!("{with_otp:?} {:?}", with_otp.auth());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("OtpSource(..)"), "{text}");
        // The OTP is in the request, but only there.
        let req = with_otp.request().await.unwrap();
        assert!(req.uri().to_string().contains("otp=OTP-s3cr3t"));
        assert!(!with_otp.url().contains("s3cr3t"));
        assert!(!format!("{with_otp:?}").contains("s3cr3t"));

        for server in [
            "wss://host/?apikey=s3cr3t",
            "wss://host/?otp=s3cr3t",
            "wss://user:s3cr3t@host",
            "wss://s3cr3t@host",
            "http://s3cr3t@host/x",
        ] {
            let err =
                Endpoint::producer(server, &gdn_topic(), ProducerOptions::default()).unwrap_err();
            assert!(matches!(err, UrlError::InvalidServer(_)), "{err:?}");
            let text = format!("{err} {err:?} {}", Error::from(err.clone()));
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[test]
    fn url_error_converts_to_crate_error() {
        let e: Error = UrlError::EmptyName { what: "tenant" }.into();
        assert!(
            matches!(&e, Error::Url(m) if m == "tenant is empty"),
            "{e:?}"
        );
        assert!(!e.is_retryable());
    }

    #[tokio::test]
    async fn connect_to_closed_port_is_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let topic = Topic::pulsar("public", "default", "t").unwrap();
        let e = Endpoint::producer(
            &format!("ws://127.0.0.1:{port}"),
            &topic,
            ProducerOptions::default(),
        )
        .unwrap()
        .with_auth(Auth::api_key("k"));
        fn assert_send_static<T: Send + 'static>(t: T) -> T {
            t
        }
        let attempt = assert_send_static(e.connect());
        drop(e);
        let err = attempt.await.unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        assert!(err.is_retryable());
    }
}
