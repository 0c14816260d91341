//! Property tests: the backoff policy, and the reconnect state machine against a model, in
//! virtual time with scripted connection outcomes.

mod support;

use std::time::Duration;
use stream_websocket::Listen;

use futures::StreamExt;
use proptest::prelude::*;
use stream_websocket::{
    Backoff, Error, Event, Incoming, Jitter, Outgoing, Publish, PulsarCodec, ReconnectConfig,
    ReconnectingStream,
};
use support::{Outcome, Script};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        (0.0f64..=1.0).prop_map(Jitter::Proportional),
    ]
}

/// A minimum delay: mostly milliseconds, sometimes the smallest there is.
fn min_delay() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (1u64..5_000).prop_map(Duration::from_millis),
        1 => Just(Duration::from_nanos(1)),
    ]
}

prop_compose! {
    fn policy()(
        min in min_delay(),
        extra_ms in 0u64..60_000,
        unbounded in proptest::bool::weighted(0.2),
        factor in 1.0f64..4.0,
        max_retries in proptest::option::of(0u32..40),
        jitter in jitter(),
        window_ms in prop_oneof![Just(0u64), 1u64..2_000],
        seed in any::<u64>(),
    ) -> (ReconnectConfig, u64) {
        // Sometimes no maximum at all: `Duration::MAX` must saturate, never overflow.
        let max = if unbounded { Duration::MAX } else { min + Duration::from_millis(extra_ms) };
        let mut b = ReconnectConfig::builder()
            .min_delay(min)
            .max_delay(max)
            .grow_factor(factor)
            .jitter(jitter)
            .first_reconnect_window(Duration::from_millis(window_ms))
            .seed(seed);
        if let Some(m) = max_retries {
            b = b.max_retries(m);
        }
        (b.build().unwrap(), seed)
    }
}

proptest! {
    #[test]
    fn backoff_follows_the_formula((config, seed) in policy()) {
        let p = *config.backoff();
        let mut b = Backoff::new(p, seed);
        let min = b.min_delay();
        let max = p.max_delay();
        let window = b.first_window();
        prop_assert_eq!(window, p.first_reconnect_window().min(min), "the window is at most min");
        let mut delays = Vec::new();
        while let Some(d) = b.next_delay() {
            delays.push(d);
            if delays.len() > 60 {
                break;
            }
        }
        if let Some(cap) = p.max_retries() {
            prop_assert!(delays.len() <= cap as usize, "attempts exceed max retries");
            if cap <= 60 {
                prop_assert_eq!(delays.len(), cap as usize);
            }
        }
        for (i, d) in delays.iter().enumerate() {
            prop_assert!(*d <= max, "delay {:?} above max {:?}", d, max);
            let n = i + 1;
            if n == 1 {
                prop_assert!(*d <= window, "first reconnect {:?} beyond its window {:?}", d, window);
            } else if p.jitter() == Jitter::None {
                let exact = min.as_secs_f64() * p.grow_factor().powi(n as i32 - 2);
                let want = exact.min(max.as_secs_f64());
                prop_assert!((d.as_secs_f64() - want).abs() < 1e-6, "retry {}: {:?} vs {}", n, d, want);
                if n == 2 {
                    prop_assert_eq!(*d, min, "delays start at min");
                }
                if n > 2 {
                    prop_assert!(*d >= delays[i - 1], "delays never shrink");
                }
            }
        }
        // After a restart (a connection that made progress, or a stable one) the schedule
        // starts over, within an eighth of the connection's uptime.
        b.restart(Duration::from_millis(80));
        prop_assert_eq!(b.retries(), 0);
        if p.max_retries() != Some(0) {
            let first = b.next_delay().unwrap();
            prop_assert!(first <= window.min(Duration::from_millis(10)), "{:?}", first);
        }
    }
}

/// One factory call in the model.
#[derive(Debug, Clone)]
enum Step {
    Fail,
    Hang,
    Permanent,
    Open { frames: usize, uptime_ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Fail),
        1 => Just(Step::Hang),
        1 => Just(Step::Permanent),
        3 => (0usize..4, prop_oneof![1u64..2_000, 5_000u64..9_000])
            .prop_map(|(frames, uptime_ms)| Step::Open { frames, uptime_ms }),
    ]
}

/// Simplified events, for comparing sequences.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Open { connection: u64, attempt: u32 },
    Close { connection: u64, reconnect: bool },
    Error,
    Reconnecting { attempt: u32, delay: Duration },
    GaveUp { attempts: u32 },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_UPTIME: Duration = Duration::from_secs(5);

/// What the model predicts: factory call times, events and messages.
#[derive(Debug, Default)]
struct Prediction {
    calls_ms: Vec<u64>,
    events: Vec<Ev>,
    messages: Vec<String>,
    ends_with_error: bool,
}

fn ceil_ms(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000) as u64
}

fn predict(steps: &[Step], config: &ReconnectConfig, seed: u64) -> Prediction {
    let mut backoff = Backoff::new(*config.backoff(), seed);
    let mut p = Prediction::default();
    let mut t = 0u64;
    let mut connection = 0u64;
    let mut steps = steps.iter().cloned();
    loop {
        p.calls_ms.push(t);
        let failed_at = match steps.next().unwrap_or(Step::Permanent) {
            Step::Permanent => {
                p.events.push(Ev::Error);
                p.ends_with_error = true;
                return p;
            }
            Step::Fail => {
                p.events.push(Ev::Error);
                t
            }
            Step::Hang => {
                p.events.push(Ev::Error);
                t + CONNECT_TIMEOUT.as_millis() as u64
            }
            Step::Open { frames, uptime_ms } => {
                connection += 1;
                p.events.push(Ev::Open {
                    connection,
                    attempt: backoff.retries(),
                });
                p.messages
                    .extend((0..frames).map(|i| format!("c{connection}-m{i}")));
                // Reset on evidence: a message is progress; without one, the uptime must do.
                let uptime = Duration::from_millis(uptime_ms);
                if frames > 0 || uptime >= MIN_UPTIME {
                    backoff.restart(uptime);
                }
                let next = backoff.next_delay();
                p.events.push(Ev::Close {
                    connection,
                    reconnect: next.is_some(),
                });
                match next {
                    Some(delay) => {
                        p.events.push(Ev::Reconnecting {
                            attempt: backoff.retries(),
                            delay,
                        });
                        t = t + uptime_ms + ceil_ms(delay);
                        continue;
                    }
                    None => {
                        p.events.push(Ev::GaveUp {
                            attempts: backoff.retries(),
                        });
                        p.ends_with_error = true;
                        return p;
                    }
                }
            }
        };
        match backoff.next_delay() {
            Some(delay) => {
                p.events.push(Ev::Reconnecting {
                    attempt: backoff.retries(),
                    delay,
                });
                t = failed_at + ceil_ms(delay);
            }
            None => {
                p.events.push(Ev::GaveUp {
                    attempts: backoff.retries(),
                });
                p.ends_with_error = true;
                return p;
            }
        }
    }
}

fn simplify(e: &Event) -> Ev {
    match e {
        Event::Open(o) => Ev::Open {
            connection: o.connection,
            attempt: o.attempt,
        },
        Event::Close(c) => Ev::Close {
            connection: c.connection,
            reconnect: c.reconnect,
        },
        Event::Error(_) => Ev::Error,
        Event::Reconnecting(r) => Ev::Reconnecting {
            attempt: r.attempt,
            delay: r.delay,
        },
        Event::GaveUp(g) => Ev::GaveUp {
            attempts: g.attempts,
        },
        other => panic!("unexpected event {other:?}"),
    }
}

fn publish(i: usize) -> Outgoing {
    Outgoing::Publish(Publish::new(format!("item-{i}")))
}

/// Runs the real stream against the script in virtual time and checks it against the model.
fn run_case(
    steps: Vec<Step>,
    config: ReconnectConfig,
    seed: u64,
    items: usize,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let prediction = predict(&steps, &config, seed);
    rt.block_on(async move {
        let outcomes = steps.iter().map(|s| match s {
            Step::Fail => Outcome::Fail,
            Step::Hang => Outcome::Hang,
            Step::Permanent => Outcome::Permanent,
            Step::Open { frames, uptime_ms } => Outcome::Open {
                frames: *frames,
                uptime: Duration::from_millis(*uptime_ms),
                close: true,
            },
        });
        let script = Script::new(outcomes);
        let start = tokio::time::Instant::now();
        let mut stream = ReconnectingStream::with_config(script.factory(), config);
        let mut events = stream.events();
        let mut opens = stream.on_open();
        let mut closes = stream.on_close();
        for i in 0..items {
            futures::SinkExt::feed(&mut stream, publish(i))
                .await
                .unwrap();
        }

        let mut messages = Vec::new();
        let mut opened = 0u64;
        let mut closed = 0u64;
        let mut ended_with_error = false;
        while let Some(item) = stream.next().await {
            while opens.try_recv().is_ok() {
                opened += 1;
            }
            while closes.try_recv().is_ok() {
                closed += 1;
            }
            match item {
                Ok(Incoming::Message(m)) => {
                    let text = String::from_utf8(m.payload.to_vec()).unwrap();
                    let conn: u64 = text[1..text.find('-').unwrap()].parse().unwrap();
                    prop_assert!(
                        opened >= conn,
                        "message of connection {} before its open",
                        conn
                    );
                    prop_assert!(
                        closed < conn,
                        "message of connection {} after its close",
                        conn
                    );
                    messages.push(text);
                }
                Ok(other) => prop_assert!(false, "unexpected item {:?}", other),
                Err(e) => {
                    prop_assert!(
                        matches!(e, Error::GaveUp { .. } | Error::Http { status: 401, .. }),
                        "{}",
                        e
                    );
                    ended_with_error = true;
                }
            }
        }
        prop_assert!(stream.next().await.is_none(), "fused");

        let calls: Vec<u64> = script
            .calls()
            .iter()
            .map(|c| (*c - start).as_millis() as u64)
            .collect();
        prop_assert_eq!(&calls, &prediction.calls_ms, "factory call times");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(simplify(&e));
        }
        prop_assert_eq!(&seen, &prediction.events, "event sequence");
        prop_assert_eq!(&messages, &prediction.messages, "messages");
        prop_assert_eq!(ended_with_error, prediction.ends_with_error);

        // Every queued item was received exactly once, in order, or handed back.
        let mut delivered = script.received_texts();
        for item in stream.take_unsent() {
            let text = PulsarCodec::encode_outgoing(&item).into_text().unwrap();
            delivered.push(text.as_str().to_string());
        }
        let want: Vec<String> = (0..items)
            .map(|i| {
                let m = PulsarCodec::encode_outgoing(&publish(i));
                m.into_text().unwrap().as_str().to_string()
            })
            .collect();
        prop_assert_eq!(delivered, want, "outgoing items");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn reconnect_state_machine_matches_the_model(
        steps in proptest::collection::vec(step(), 0..10),
        (config, seed) in policy(),
        items in 0usize..12,
    ) {
        // The model and the stream share the seeded policy; keepalive is off (no pings in the
        // scripted servers' way), timeouts are fixed.
        let mut b = ReconnectConfig::builder()
            .min_delay(match config.backoff().min_delay() {
                stream_websocket::MinDelay::Fixed(d) => d,
                _ => unreachable!(),
            })
            .max_delay(config.backoff().max_delay())
            .grow_factor(config.backoff().grow_factor())
            .jitter(config.backoff().jitter())
            .first_reconnect_window(config.backoff().first_reconnect_window())
            .seed(seed)
            .connect_timeout(CONNECT_TIMEOUT)
            .min_uptime(MIN_UPTIME)
            .event_capacity(4096)
            .no_keepalive();
        if let Some(m) = config.backoff().max_retries() {
            b = b.max_retries(m);
        }
        run_case(steps, b.build().unwrap(), seed, items)?;
    }
}
