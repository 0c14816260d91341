//! The settings of each role, sent as query parameters: [`ProducerOptions`],
//! [`ConsumerOptions`] (with [`SubscriptionType`] and [`InitialPosition`]) and [`ReaderOptions`]
//! (with [`ReaderStart`]), and the limits the server puts on their values.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::encode::Query;
use super::error::UrlError;
use crate::codec::MessageId;

/// Largest number the server accepts in a numeric query parameter: it parses them as Java `int`,
/// so anything larger is answered with HTTP 400.
const MAX_WIRE_INT: u64 = i32::MAX as u64;

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

    pub(super) fn query(&self) -> Result<Query, UrlError> {
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

    /// The subscription name.
    pub(super) fn subscription(&self) -> &str {
        &self.subscription
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

    pub(super) fn query(&self) -> Result<Query, UrlError> {
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

    pub(super) fn query(&self) -> Result<Query, UrlError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_names_are_rejected() {
        assert_eq!(
            ProducerOptions::default()
                .producer_name("")
                .query()
                .unwrap_err(),
            UrlError::EmptyName {
                what: "producer name"
            }
        );
        assert_eq!(
            ConsumerOptions::new("s")
                .consumer_name("")
                .query()
                .unwrap_err(),
            UrlError::EmptyName {
                what: "consumer name"
            }
        );
        assert_eq!(
            ReaderOptions::default()
                .reader_name("")
                .query()
                .unwrap_err(),
            UrlError::EmptyName {
                what: "reader name"
            }
        );
    }

    #[test]
    fn invalid_options_are_rejected() {
        let consumer = |o: ConsumerOptions| o.query();
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
        let q = consumer(ConsumerOptions::new("s").ack_timeout(Duration::from_micros(999_500)))
            .unwrap();
        assert!(
            q.as_str().contains("ackTimeoutMillis=1000"),
            "{}",
            q.as_str()
        );
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
            ProducerOptions::default()
                .send_timeout(Duration::from_secs(3_000_000))
                .query(),
            Err(UrlError::InvalidOption {
                option: "sendTimeoutMillis",
                ..
            })
        ));
        assert!(matches!(
            ProducerOptions::default()
                .max_pending_messages(u32::MAX)
                .query(),
            Err(UrlError::InvalidOption {
                option: "maxPendingMessages",
                ..
            })
        ));
        assert!(matches!(
            ReaderOptions::default()
                .start(ReaderStart::MessageId(MessageId::new("")))
                .query(),
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
}
