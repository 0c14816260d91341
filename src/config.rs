//! Configuration of a [`ReconnectingStream`](crate::ReconnectingStream).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::{BackoffPolicy, Jitter, MinDelay};
use crate::error::{Disposition, Error};

/// Default lower bound of the random minimum delay: 1 s.
pub const DEFAULT_MIN_DELAY_LOW: Duration = Duration::from_secs(1);
/// Default upper bound of the random minimum delay: 2 s (the original wrapper's was 5 s).
pub const DEFAULT_MIN_DELAY_HIGH: Duration = Duration::from_secs(2);
/// Default maximum delay between attempts: 10 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default window of the first reconnect after a drop: 580 ms. A fleet that loses its server at
/// once puts about 17% of its reconnects in any 100 ms; a lone drop waits 290 ms in the median.
const DEFAULT_FIRST_RECONNECT_WINDOW: Duration = Duration::from_millis(580);
/// Default growth factor of the delay: 1.3.
pub const DEFAULT_GROW_FACTOR: f64 = 1.3;
/// Default uptime after which a connection counts as stable and the retry count resets: 5 s.
pub const DEFAULT_MIN_UPTIME: Duration = Duration::from_secs(5);
/// Default bound on one connection attempt (factory + TCP + TLS + WebSocket handshake): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between keepalive pings: 20 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default time to wait for a pong (or any other frame) after a ping: 20 s.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time allowed for the closing handshake in `close()`: 5 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default capacity of the outgoing queue (items waiting or written but not yet flushed): 1024.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default number of decoded messages read ahead while only the sink side is polled: 256.
pub const DEFAULT_READ_AHEAD: usize = 256;
/// Default bound on the frame bytes of the messages read ahead: 8 MiB.
pub const DEFAULT_READ_AHEAD_BYTES: usize = 8 << 20;
/// Default capacity of each listener channel, per listener: 64 events.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

/// Decides whether an error ends the stream or is retried. See [`ReconnectConfigBuilder::classify`].
pub type Classifier = Arc<dyn Fn(&Error) -> Disposition + Send + Sync>;

/// What happens to outgoing items that were written to a connection but not yet confirmed as
/// flushed when that connection dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnsentPolicy {
    /// Put them back at the front of the queue, in order; they are written again on the next
    /// connection. Items may then reach the server twice (at-least-once). **The default.**
    #[default]
    Requeue,
    /// Move them, and everything still queued, to the unsent list that
    /// [`take_unsent`](crate::ReconnectingStream::take_unsent) returns. For protocols that resend
    /// by themselves, such as the confirming producer. Items handed back count against
    /// `queue_capacity` until they are taken, so `poll_ready` waits while the list is full.
    HandBack,
}

/// Validated settings of a [`ReconnectingStream`](crate::ReconnectingStream).
///
/// Build one with [`ReconnectConfig::builder`]; `ReconnectConfig::default()` gives the defaults,
/// which follow the original JavaScript `StreamWebsocket` wrapper's where it had the setting,
/// except that the minimum delay is drawn from [1 s, 2 s] rather than [1 s, 5 s], and that the
/// first reconnect is spread over a window rather than immediate (see
/// [`first_reconnect_window`](ReconnectConfigBuilder::first_reconnect_window); the original's
/// are `min_delay_range(1 s, 5 s)` and `first_reconnect_window(Duration::ZERO)`):
///
/// | setting | default |
/// |---|---|
/// | `min_delay` | drawn per instance from [1 s, 2 s] |
/// | `first_reconnect_window` | 580 ms (at most `min_delay`, and an eighth of the uptime after progress) |
/// | `max_delay` | 10 s |
/// | `grow_factor` | 1.3 |
/// | `max_retries` | unlimited |
/// | `jitter` | none |
/// | `min_uptime` | 5 s |
/// | `connect_timeout` | 10 s |
/// | `ping_interval` | 20 s |
/// | `pong_timeout` | 20 s |
/// | `close_timeout` | 5 s |
/// | `queue_capacity` | 1024 items |
/// | `read_ahead` | 256 messages |
/// | `read_ahead_bytes` | 8 MiB |
/// | `event_capacity` | 64 events per listener |
/// | `unsent_policy` | [`UnsentPolicy::Requeue`] |
#[derive(Clone)]
pub struct ReconnectConfig {
    pub(crate) backoff: BackoffPolicy,
    pub(crate) seed: Option<u64>,
    pub(crate) min_uptime: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) read_ahead: usize,
    pub(crate) read_ahead_bytes: usize,
    pub(crate) event_capacity: usize,
    pub(crate) unsent_policy: UnsentPolicy,
    pub(crate) classifier: Option<Classifier>,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfigBuilder::new()
            .build()
            .expect("the default configuration is valid")
    }
}

impl fmt::Debug for ReconnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectConfig")
            .field("backoff", &self.backoff)
            .field("seed", &self.seed)
            .field("min_uptime", &self.min_uptime)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("read_ahead", &self.read_ahead)
            .field("read_ahead_bytes", &self.read_ahead_bytes)
            .field("event_capacity", &self.event_capacity)
            .field("unsent_policy", &self.unsent_policy)
            .field("classifier", &self.classifier.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl ReconnectConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ReconnectConfigBuilder {
        ReconnectConfigBuilder::new()
    }

    /// The backoff numbers.
    pub fn backoff(&self) -> &BackoffPolicy {
        &self.backoff
    }
    /// See [`ReconnectConfigBuilder::min_uptime`].
    pub fn min_uptime(&self) -> Duration {
        self.min_uptime
    }
    /// See [`ReconnectConfigBuilder::connect_timeout`].
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// See [`ReconnectConfigBuilder::ping_interval`].
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }
    /// See [`ReconnectConfigBuilder::pong_timeout`].
    pub fn pong_timeout(&self) -> Duration {
        self.pong_timeout
    }
    /// See [`ReconnectConfigBuilder::queue_capacity`].
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
    /// See [`ReconnectConfigBuilder::unsent_policy`].
    pub fn unsent_policy(&self) -> UnsentPolicy {
        self.unsent_policy
    }

    /// How an error is handled: the custom classifier if one is set, else
    /// [`Error::default_disposition`].
    pub fn disposition(&self, error: &Error) -> Disposition {
        match &self.classifier {
            Some(c) => c(error),
            None => error.default_disposition(),
        }
    }
}

impl BackoffPolicy {
    /// See [`ReconnectConfigBuilder::min_delay`].
    pub fn min_delay(&self) -> MinDelay {
        self.min_delay
    }
    /// See [`ReconnectConfigBuilder::max_delay`].
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
    /// See [`ReconnectConfigBuilder::grow_factor`].
    pub fn grow_factor(&self) -> f64 {
        self.factor
    }
    /// See [`ReconnectConfigBuilder::max_retries`].
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }
    /// See [`ReconnectConfigBuilder::jitter`].
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }
    /// See [`ReconnectConfigBuilder::first_reconnect_window`].
    pub fn first_reconnect_window(&self) -> Duration {
        self.first_window
    }
}

/// Builds a [`ReconnectConfig`]; [`build`](Self::build) checks the settings.
#[derive(Clone)]
pub struct ReconnectConfigBuilder {
    cfg: ReconnectConfig,
}

impl fmt::Debug for ReconnectConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReconnectConfigBuilder")
            .field(&self.cfg)
            .finish()
    }
}

impl Default for ReconnectConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ReconnectConfigBuilder {
    /// Starts from the defaults listed on [`ReconnectConfig`].
    pub fn new() -> Self {
        ReconnectConfigBuilder {
            cfg: ReconnectConfig {
                backoff: BackoffPolicy {
                    min_delay: MinDelay::Random {
                        low: DEFAULT_MIN_DELAY_LOW,
                        high: DEFAULT_MIN_DELAY_HIGH,
                    },
                    max_delay: DEFAULT_MAX_DELAY,
                    factor: DEFAULT_GROW_FACTOR,
                    max_retries: None,
                    jitter: Jitter::None,
                    first_window: DEFAULT_FIRST_RECONNECT_WINDOW,
                },
                seed: None,
                min_uptime: DEFAULT_MIN_UPTIME,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                ping_interval: Some(DEFAULT_PING_INTERVAL),
                pong_timeout: DEFAULT_PONG_TIMEOUT,
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                read_ahead: DEFAULT_READ_AHEAD,
                read_ahead_bytes: DEFAULT_READ_AHEAD_BYTES,
                event_capacity: DEFAULT_EVENT_CAPACITY,
                unsent_policy: UnsentPolicy::Requeue,
                classifier: None,
            },
        }
    }

    /// A fixed minimum delay: the wait before the second retry, which then grows by the factor.
    /// Must be greater than zero. Default: drawn per instance from [1 s, 2 s] (see
    /// [`min_delay_range`](Self::min_delay_range)).
    pub fn min_delay(mut self, min: Duration) -> Self {
        self.cfg.backoff.min_delay = MinDelay::Fixed(min);
        self
    }

    /// A minimum delay drawn uniformly from `[low, high]` once per stream instance; `low` must
    /// be greater than zero. Default: [1 s, 2 s]. The original wrapper drew from [1 s, 5 s]: a
    /// 1 s server restart could then cost a client 5 s of silence.
    pub fn min_delay_range(mut self, low: Duration, high: Duration) -> Self {
        self.cfg.backoff.min_delay = MinDelay::Random { low, high };
        self
    }

    /// The first reconnect after a drop (and the first retry after a failed first attempt) waits
    /// a delay drawn uniformly from `[0, window]`, so that a fleet of clients that lose their
    /// server at the same moment do not all come back in the same millisecond. The window is
    /// never longer than the minimum delay, and after a connection that made progress it is at
    /// most an eighth of that connection's uptime: a busy connection that drops after 20 ms of
    /// work is back within 2.5 ms. `Duration::ZERO` makes the first reconnect immediate, for
    /// latency-critical clients that are not part of a large fleet.
    ///
    /// Default: 580 ms. A fleet of 1,000 long-lived connections that drop together then puts
    /// about 17% of its reconnects in any 100 ms, and a lone drop is back in 290 ms (median).
    pub fn first_reconnect_window(mut self, window: Duration) -> Self {
        self.cfg.backoff.first_window = window;
        self
    }

    /// The longest wait between two attempts. Default: 10 s.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.cfg.backoff.max_delay = max;
        self
    }

    /// How much each delay grows over the previous one; at least 1.0. Default: 1.3.
    pub fn grow_factor(mut self, factor: f64) -> Self {
        self.cfg.backoff.factor = factor;
        self
    }

    /// Give up after this many consecutive retries since the schedule last started over (a
    /// connection that made progress, or one that stayed up `min_uptime`). `0` means the
    /// first failure ends the stream. Default: unlimited.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.cfg.backoff.max_retries = Some(retries);
        self
    }

    /// Retry forever (the default).
    pub fn unlimited_retries(mut self) -> Self {
        self.cfg.backoff.max_retries = None;
        self
    }

    /// Per-attempt jitter. Default: [`Jitter::None`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.cfg.backoff.jitter = jitter;
        self
    }

    /// Seeds the random choices (the per-instance minimum delay, the jitter and the first
    /// reconnect's place in its window) so that a run can be repeated exactly; meant for tests.
    /// Default: a fresh seed per instance, and first reconnects placed by a sequence shared by
    /// the process, which spreads a fleet in one process evenly over the window (see
    /// [`first_reconnect_window`](Self::first_reconnect_window)).
    pub fn seed(mut self, seed: u64) -> Self {
        self.cfg.seed = Some(seed);
        self
    }

    /// How long a connection that made no progress must stay up before the schedule starts over.
    /// A connection that made progress (the peer sent a frame the codec counts, see
    /// [`Codec::is_progress`](crate::Codec::is_progress)) starts it over however short it lived.
    /// Default: 5 s.
    pub fn min_uptime(mut self, uptime: Duration) -> Self {
        self.cfg.min_uptime = uptime;
        self
    }

    /// Bound on one attempt: the factory's future, which normally covers TCP connect, TLS and the
    /// WebSocket handshake (and fetching a one-time password, if the factory does that).
    /// Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.connect_timeout = timeout;
        self
    }

    /// Send a WebSocket Ping this often. Any positive duration works, up to `Duration::MAX`
    /// (which never pings). Default: 20 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.cfg.ping_interval = Some(interval);
        self
    }

    /// Turn keepalive pings off. Half-open connections then go unnoticed.
    pub fn no_keepalive(mut self) -> Self {
        self.cfg.ping_interval = None;
        self
    }

    /// A connection that receives no frame at all (pong or other) for this long after a ping is
    /// dropped and reconnected. Default: 20 s.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.pong_timeout = timeout;
        self
    }

    /// How long `close()` waits for the closing handshake before dropping the socket.
    /// Default: 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.close_timeout = timeout;
        self
    }

    /// How many outgoing items may wait (queued while disconnected, or written but not yet
    /// flushed). When full, `poll_ready` returns `Pending`. Default: 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.cfg.queue_capacity = capacity;
        self
    }

    /// How many decoded messages are read ahead and held while only the sink side is polled
    /// (reading goes on so pings, pongs and closes are seen). Past it, or past
    /// [`read_ahead_bytes`](Self::read_ahead_bytes), reading pauses until the stream side is
    /// polled. Default: 256.
    ///
    /// While reading is paused, pongs and Close frames behind the unread messages cannot be seen:
    /// messages waiting unread do not count as a sign of life, so with keepalive on, a connection
    /// whose reader stays full is dropped after `ping_interval + pong_timeout` and reconnected
    /// (the messages read ahead are kept). A sink-only user of a connection whose peer sends
    /// should read the stream side, or turn keepalive off.
    pub fn read_ahead(mut self, messages: usize) -> Self {
        self.cfg.read_ahead = messages;
        self
    }

    /// Bound on the frame bytes of the messages read ahead (see
    /// [`read_ahead`](Self::read_ahead)): reading pauses once this much waits. One message
    /// larger than the bound is still read. Default: 8 MiB.
    pub fn read_ahead_bytes(mut self, bytes: usize) -> Self {
        self.cfg.read_ahead_bytes = bytes;
        self
    }

    /// How many events each listener may fall behind before it starts missing the oldest ones
    /// (it is told how many it missed). Default: 64.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.cfg.event_capacity = capacity;
        self
    }

    /// What happens to written-but-unflushed items when a connection dies.
    /// Default: [`UnsentPolicy::Requeue`].
    pub fn unsent_policy(mut self, policy: UnsentPolicy) -> Self {
        self.cfg.unsent_policy = policy;
        self
    }

    /// Overrides which errors end the stream and which are retried. The default is
    /// [`Error::default_disposition`]: HTTP 400/401/403/404 and other permanent failures stop,
    /// network errors, timeouts, 409, 429 and 5xx are retried.
    pub fn classify<C>(mut self, classifier: C) -> Self
    where
        C: Fn(&Error) -> Disposition + Send + Sync + 'static,
    {
        self.cfg.classifier = Some(Arc::new(classifier));
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that is out of range.
    pub fn build(self) -> Result<ReconnectConfig, ConfigError> {
        let c = &self.cfg;
        let b = &c.backoff;
        if let MinDelay::Random { low, high } = b.min_delay {
            if low > high {
                return Err(ConfigError::MinDelayRange { low, high });
            }
        }
        // A zero minimum would make every delay zero: retries as fast as the factory fails.
        let lowest = match b.min_delay {
            MinDelay::Fixed(d) => d,
            MinDelay::Random { low, .. } => low,
        };
        if lowest.is_zero() {
            return Err(ConfigError::Zero("min_delay"));
        }
        if b.min_delay.upper() > b.max_delay {
            return Err(ConfigError::MinAboveMax {
                min: b.min_delay.upper(),
                max: b.max_delay,
            });
        }
        if !b.factor.is_finite() || b.factor < 1.0 {
            return Err(ConfigError::GrowFactor(b.factor));
        }
        if let Jitter::Proportional(f) = b.jitter {
            if !(0.0..=1.0).contains(&f) {
                return Err(ConfigError::Jitter(f));
            }
        }
        let durations = [
            ("connect_timeout", Some(c.connect_timeout)),
            ("ping_interval", c.ping_interval),
            ("pong_timeout", Some(c.pong_timeout)),
            ("close_timeout", Some(c.close_timeout)),
        ];
        for (name, d) in durations {
            if d == Some(Duration::ZERO) {
                return Err(ConfigError::Zero(name));
            }
        }
        let sizes = [
            ("queue_capacity", c.queue_capacity),
            ("read_ahead", c.read_ahead),
            ("read_ahead_bytes", c.read_ahead_bytes),
            ("event_capacity", c.event_capacity),
        ];
        for (name, n) in sizes {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(self.cfg)
    }
}

/// A setting given to [`ReconnectConfigBuilder`] is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The minimum delay (or the top of its random range) is above the maximum delay.
    #[error("min delay {min:?} is greater than max delay {max:?}")]
    MinAboveMax {
        /// The largest minimum delay the settings allow.
        min: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// The random minimum delay's range is empty.
    #[error("min delay range is empty: low {low:?} > high {high:?}")]
    MinDelayRange {
        /// Lower bound given.
        low: Duration,
        /// Upper bound given.
        high: Duration,
    },
    /// The growth factor is below 1, infinite or NaN.
    #[error("grow factor must be a finite number >= 1.0, got {0}")]
    GrowFactor(f64),
    /// The proportional jitter fraction is outside `[0, 1]` or NaN.
    #[error("proportional jitter must lie in [0, 1], got {0}")]
    Jitter(f64),
    /// A duration or capacity that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original() {
        let c = ReconnectConfig::default();
        assert_eq!(
            c.backoff.min_delay,
            MinDelay::Random {
                low: Duration::from_secs(1),
                high: Duration::from_secs(2)
            }
        );
        assert_eq!(c.backoff.first_window, Duration::from_millis(580));
        assert_eq!(c.backoff.max_delay, Duration::from_secs(10));
        assert_eq!(c.backoff.factor, 1.3);
        assert_eq!(c.backoff.max_retries, None);
        assert_eq!(c.min_uptime, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.ping_interval, Some(Duration::from_secs(20)));
        assert_eq!(c.pong_timeout, Duration::from_secs(20));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let b = ReconnectConfig::builder;
        let s = Duration::from_secs;
        assert_eq!(
            b().min_delay(s(20)).build().unwrap_err(),
            ConfigError::MinAboveMax {
                min: s(20),
                max: s(10)
            }
        );
        // The default random range tops out at 2 s, above a 1 s maximum.
        assert!(matches!(
            b().max_delay(s(1)).build(),
            Err(ConfigError::MinAboveMax { .. })
        ));
        assert!(matches!(
            b().min_delay_range(s(3), s(2)).build(),
            Err(ConfigError::MinDelayRange { .. })
        ));
        for f in [0.5, f64::NAN, f64::INFINITY, -1.0] {
            assert!(matches!(
                b().grow_factor(f).build(),
                Err(ConfigError::GrowFactor(_))
            ));
        }
        assert!(matches!(
            b().jitter(Jitter::Proportional(f64::NAN)).build(),
            Err(ConfigError::Jitter(_))
        ));
        assert_eq!(
            b().queue_capacity(0).build().unwrap_err(),
            ConfigError::Zero("queue_capacity")
        );
        assert_eq!(
            b().pong_timeout(Duration::ZERO).build().unwrap_err(),
            ConfigError::Zero("pong_timeout")
        );
        let msg = b().grow_factor(0.5).build().unwrap_err().to_string();
        assert!(msg.contains("grow factor"), "{msg}");
    }
}
