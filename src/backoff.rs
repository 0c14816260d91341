//! The reconnect delay policy: exponential growth between a minimum and a maximum, an optional
//! retry cap, optional per-attempt jitter, and a spread-out first reconnect.
//!
//! [`Backoff`] is a plain value with no timers in it, so it can be tested and reasoned about on
//! its own. [`ReconnectingStream`](crate::ReconnectingStream) keeps one per instance.
//!
//! # The schedule
//!
//! Counting retries since the schedule last started over:
//!
//! | retry | delay before it (no jitter)                                        |
//! |-------|--------------------------------------------------------------------|
//! | 1     | a uniform draw from `[0, w]`: the first reconnect, spread           |
//! | 2     | `min`                                                               |
//! | n ≥ 2 | `min(min · factor^(n−2), max)`                                      |
//!
//! `w` is the smallest of the first-reconnect window (580 ms by default), `min`, and, when the
//! schedule started over because a connection ended, an eighth of that connection's uptime. So
//! a fleet that loses its server at once comes back spread over the window, while a connection
//! that worked for 20 ms before it dropped waits at most 2.5 ms: waiting never takes more than a
//! ninth of a client's time. A window of zero makes the first reconnect immediate, as in the
//! original `StreamWebsocket` wrapper.
//!
//! The schedule starts over ([`Backoff::restart`]) when a connection that made progress ends, or
//! one that stayed up for `min_uptime`.
//!
//! # Where in its window a first reconnect falls
//!
//! Unseeded streams (the default) take their place in the window from one sequence shared by
//! the whole process: the fractional parts of `k·φ` (φ the golden ratio), `k` counting the
//! draws, from a random start per process. Consecutive terms of that sequence fill `[0, 1)`
//! evenly (any `n` of them leave gaps of at most three sizes), so a fleet of streams in one
//! process that lose their server together spread over the window evenly, not merely at
//! random: 1,000 of them put 17% of their reconnects in every 100 ms of a 580 ms window,
//! where independent random draws would put up to 20% in the busiest 100 ms. Fleets spread
//! over several processes add up evenly spread parts. A seeded backoff
//! ([`seed`](crate::ReconnectConfigBuilder::seed)) draws from its own generator instead, so
//! that a run can be repeated.

use std::time::Duration;

/// How a computed delay is randomised, per attempt.
///
/// Jitter spreads out a fleet of clients that lost their connection at the same moment, so they do
/// not all come back in lock-step. A zero delay (the first reconnect) stays zero. A jittered delay
/// never exceeds the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: the delay is exactly the computed one. **The default**, as in the original.
    #[default]
    None,
    /// "Full jitter": a uniform draw from `[0, d]`.
    Full,
    /// "Equal jitter": `d/2` plus a uniform draw from `[0, d/2]`.
    Equal,
    /// A uniform draw from `[d·(1−f), d·(1+f)]`, capped at the maximum; `f` must lie in `[0, 1]`.
    Proportional(f64),
}

/// The minimum reconnect delay, either fixed or drawn once per instance from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinDelay {
    /// Always this delay.
    Fixed(Duration),
    /// Drawn uniformly from `[low, high]` when a stream is created (once per instance, so a fleet
    /// of clients does not reconnect in lock-step). The default is `[1 s, 2 s]`; the original
    /// wrapper's was `[1 s, 5 s]`.
    Random {
        /// Lower bound (inclusive).
        low: Duration,
        /// Upper bound (inclusive).
        high: Duration,
    },
}

impl MinDelay {
    /// The largest value this setting can produce.
    pub fn upper(&self) -> Duration {
        match *self {
            MinDelay::Fixed(d) => d,
            MinDelay::Random { high, .. } => high,
        }
    }

    fn draw(&self, rng: &mut Rng) -> Duration {
        match *self {
            MinDelay::Fixed(d) => d,
            MinDelay::Random { low, high } => {
                let span = high.saturating_sub(low);
                low + span.mul_f64(rng.next_f64())
            }
        }
    }
}

/// The validated numbers a [`Backoff`] is built from. Obtain one from a
/// [`ReconnectConfig`](crate::ReconnectConfig); the builder checks every invariant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub(crate) min_delay: MinDelay,
    pub(crate) max_delay: Duration,
    pub(crate) factor: f64,
    pub(crate) max_retries: Option<u32>,
    pub(crate) jitter: Jitter,
    pub(crate) first_window: Duration,
}

/// A running backoff: the policy, the minimum delay drawn for this instance, the retry count,
/// the window of the next first reconnect and the random source for jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    min: Duration,
    retries: u32,
    /// The window the first reconnect is drawn from: see the module docs.
    window: Duration,
    /// Whether the first reconnect's place in its window comes from the process-wide sequence
    /// (unseeded streams) rather than `rng`.
    shared_spread: bool,
    rng: Rng,
}

impl Backoff {
    /// Creates a backoff with its own minimum delay drawn from `policy` using `seed`.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let min = policy.min_delay.draw(&mut rng);
        Backoff {
            policy,
            min,
            retries: 0,
            window: policy.first_window.min(min),
            shared_spread: false,
            rng,
        }
    }

    /// Places first reconnects in their window by the process-wide sequence of the module docs
    /// rather than by this backoff's own generator: for streams that were not seeded.
    pub(crate) fn with_shared_spread(mut self) -> Self {
        self.shared_spread = true;
        self
    }

    /// The minimum delay this instance drew.
    pub fn min_delay(&self) -> Duration {
        self.min
    }

    /// Retries made since the last reset.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The window the next first reconnect is drawn from (`[0, window]`).
    pub fn first_window(&self) -> Duration {
        self.window
    }

    /// Forgets earlier retries: the next retry is a first reconnect again, drawn from the whole
    /// first-reconnect window. For a fresh start that no connection ended (`reconnect()`).
    pub fn reset(&mut self) {
        self.retries = 0;
        self.window = self.policy.first_window.min(self.min);
    }

    /// Starts the schedule over after a connection that was up for `uptime` ended, having made
    /// progress or stayed up for the minimum uptime: the next retry is a first reconnect, drawn
    /// from a window of at most `uptime / 8`.
    pub fn restart(&mut self, uptime: Duration) {
        self.reset();
        self.window = self.window.min(uptime / 8);
    }

    /// Counts one more retry and returns the delay to wait before it, or `None` when the retry cap
    /// is reached (the caller gives up; the count is left unchanged).
    pub fn next_delay(&mut self) -> Option<Duration> {
        if let Some(cap) = self.policy.max_retries {
            if self.retries >= cap {
                return None;
            }
        }
        self.retries += 1;
        if self.retries == 1 {
            let place = if self.shared_spread {
                shared_spread()
            } else {
                self.rng.next_f64()
            };
            // In floating point and capped, so that a huge window cannot overflow.
            let drawn = self.window.as_secs_f64() * place;
            let delay = Duration::try_from_secs_f64(drawn).unwrap_or(self.window);
            return Some(delay.min(self.window));
        }
        let base = self.base_delay(self.retries);
        Some(self.apply_jitter(base))
    }

    /// The delay before retry `n` (1-based) without jitter; for the first retry, the top of its
    /// window is `first_window()`, and this returns zero.
    pub fn base_delay(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let max = self.policy.max_delay;
        let exp = i32::try_from(n - 2).unwrap_or(i32::MAX);
        let secs = self.min.as_secs_f64() * self.policy.factor.powi(exp);
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d.min(max),
            Err(_) => max,
        }
    }

    fn apply_jitter(&mut self, d: Duration) -> Duration {
        if d.is_zero() {
            return d;
        }
        let u = self.rng.next_f64();
        let scale = match self.policy.jitter {
            Jitter::None => return d.min(self.policy.max_delay),
            Jitter::Full => u,
            Jitter::Equal => 0.5 + 0.5 * u,
            Jitter::Proportional(f) => 1.0 - f + 2.0 * f * u,
        };
        // In floating point, so that a delay near `Duration::MAX` scaled above 1 saturates at the
        // maximum instead of overflowing.
        Duration::try_from_secs_f64(d.as_secs_f64() * scale)
            .unwrap_or(Duration::MAX)
            .min(self.policy.max_delay)
    }
}

/// The next term of the process-wide sequence `frac(start + k·φ)`, in `[0, 1)`: see the module
/// docs. In 64-bit fixed point, where adding φ's fractional part wraps exactly as `frac` does.
fn shared_spread() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15; // frac(φ) · 2^64
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(Rng::entropy_seed);
    let term = start.wrapping_add(NEXT.fetch_add(GOLDEN, Ordering::Relaxed));
    (term >> 11) as f64 / (1u64 << 53) as f64
}

/// A small, fast, seedable pseudo-random generator (SplitMix64). Only used for delays: not
/// suitable for anything security-related.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A seed that differs between instances and processes.
    pub(crate) fn entropy_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_ms: u64, max_ms: u64, factor: f64, max_retries: Option<u32>) -> BackoffPolicy {
        BackoffPolicy {
            min_delay: MinDelay::Fixed(Duration::from_millis(min_ms)),
            max_delay: Duration::from_millis(max_ms),
            factor,
            max_retries,
            jitter: Jitter::None,
            first_window: Duration::ZERO,
        }
    }

    #[test]
    fn matches_the_original_schedule() {
        let mut b = Backoff::new(policy(1000, 10_000, 1.3, None), 1);
        let got: Vec<u128> = (0..12)
            .map(|_| b.next_delay().unwrap().as_millis())
            .collect();
        assert_eq!(
            got,
            [0, 1000, 1300, 1690, 2197, 2856, 3712, 4826, 6274, 8157, 10_000, 10_000]
        );
    }

    #[test]
    fn cap_stops_and_reset_restarts() {
        let mut b = Backoff::new(policy(100, 1000, 2.0, Some(2)), 1);
        assert_eq!(b.next_delay(), Some(Duration::ZERO));
        assert_eq!(b.next_delay(), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.retries(), 2);
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::ZERO));
    }

    #[test]
    fn random_min_is_drawn_per_instance_within_range() {
        let p = BackoffPolicy {
            min_delay: MinDelay::Random {
                low: Duration::from_secs(1),
                high: Duration::from_secs(5),
            },
            ..policy(0, 10_000, 1.3, None)
        };
        let mins: Vec<Duration> = (0..64).map(|s| Backoff::new(p, s).min_delay()).collect();
        assert!(mins
            .iter()
            .all(|m| *m >= Duration::from_secs(1) && *m <= Duration::from_secs(5)));
        let first = mins[0];
        assert!(
            mins.iter().any(|m| *m != first),
            "every instance drew the same minimum"
        );
    }

    #[test]
    fn every_jitter_saturates_at_a_huge_max() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Proportional(1.0),
        ] {
            let p = BackoffPolicy {
                jitter,
                ..policy(1, 0, 2.0, None)
            };
            let p = BackoffPolicy {
                max_delay: Duration::MAX,
                min_delay: MinDelay::Fixed(Duration::MAX),
                ..p
            };
            let mut b = Backoff::new(p, 9);
            for _ in 0..50 {
                assert!(b.next_delay().unwrap() <= Duration::MAX);
            }
        }
    }

    #[test]
    fn the_first_reconnect_is_drawn_from_its_window() {
        let p = BackoffPolicy {
            first_window: Duration::from_millis(500),
            ..policy(1000, 10_000, 1.3, None)
        };
        let firsts: Vec<Duration> = (0..200)
            .map(|seed| Backoff::new(p, seed).next_delay().unwrap())
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_millis(500)));
        // Spread over the window, not bunched at one end.
        let early = firsts
            .iter()
            .filter(|d| **d < Duration::from_millis(250))
            .count();
        assert!(
            (60..140).contains(&early),
            "{early} of 200 in the first half"
        );
        // The second retry waits the minimum, whatever the first drew.
        let mut b = Backoff::new(p, 3);
        b.next_delay();
        assert_eq!(b.next_delay(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_window_never_exceeds_the_minimum_delay() {
        let p = BackoffPolicy {
            first_window: Duration::from_secs(60),
            ..policy(20, 200, 1.3, None)
        };
        let b = Backoff::new(p, 1);
        assert_eq!(b.first_window(), Duration::from_millis(20));
    }

    #[test]
    fn a_restart_scales_the_window_to_the_uptime() {
        let p = BackoffPolicy {
            first_window: Duration::from_millis(500),
            ..policy(1000, 10_000, 1.3, None)
        };
        let mut b = Backoff::new(p, 7);
        for _ in 0..5 {
            b.next_delay();
        }
        // A connection that worked for 40 ms: the schedule starts over, within 5 ms.
        b.restart(Duration::from_millis(40));
        assert_eq!(b.retries(), 0);
        assert_eq!(b.first_window(), Duration::from_millis(5));
        assert!(b.next_delay().unwrap() <= Duration::from_millis(5));
        // A long-lived one: the whole window.
        b.restart(Duration::from_secs(60));
        assert_eq!(b.first_window(), Duration::from_millis(500));
        // A manual reset: the whole window too.
        b.restart(Duration::ZERO);
        assert_eq!(b.first_window(), Duration::ZERO);
        b.reset();
        assert_eq!(b.first_window(), Duration::from_millis(500));
    }

    #[test]
    fn consecutive_shared_draws_fill_the_window_evenly() {
        // Whatever other tests draw meanwhile, 1,000 consecutive terms leave no 100 ms of a
        // 580 ms window with much more than its 17%; taken from one thread here, they are
        // consecutive unless another test interleaves, which only thins them.
        let draws: Vec<f64> = (0..1000).map(|_| shared_spread()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let width = 100.0 / 580.0;
        let mut from = 0.0;
        while from < 1.0 {
            let n = draws
                .iter()
                .filter(|u| **u >= from && **u < from + width)
                .count();
            assert!(n <= 185, "{n} of 1000 in [{from}, {})", from + width);
            from += 0.01;
        }
    }

    #[test]
    fn a_huge_window_saturates() {
        let p = BackoffPolicy {
            first_window: Duration::MAX,
            min_delay: MinDelay::Fixed(Duration::MAX),
            max_delay: Duration::MAX,
            ..policy(1, 1, 2.0, None)
        };
        for seed in 0..50 {
            assert!(Backoff::new(p, seed).next_delay().unwrap() <= Duration::MAX);
        }
    }

    #[test]
    fn huge_retry_counts_saturate_at_max() {
        let b = Backoff::new(policy(1000, 10_000, 1.3, None), 1);
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(10));
    }
}
