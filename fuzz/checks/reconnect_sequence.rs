//! The checks of the `reconnect_sequence` fuzz target, shared with `tests/fuzz_seeds.rs`
//! (included there with `#[path]`), so that the seed replay in `cargo test` runs exactly what the
//! fuzzer runs.
//!
//! The input is a script for the real `ReconnectingStream`: a configuration, the outcome of each
//! factory call (fail, fail permanently, hang, or open an in-memory WebSocket whose server sends
//! some frames, stays up a while and then closes or drops), and when to feed items to the sink.
//! The script always ends with a permanent failure, so the stream must end. It runs on a
//! current-thread tokio runtime with paused time, so hours of backoff take microseconds.
//!
//! Input bytes are read in order; missing bytes read as zero:
//!
//! | bytes | meaning |
//! |---|---|
//! | 2 | min delay: 1 + n % 2000 ms |
//! | 1 | grow factor: 1 + 2·n/255 |
//! | 2 | max delay: min + n % 4000 ms |
//! | 1 | max retries: n % 7, where 6 means unlimited |
//! | 1 | jitter: n % 4 (none, full, equal, proportional) |
//! | 1 | proportional jitter fraction n/255, and the seed |
//! | 2 | min uptime: n % 3000 ms |
//! | 2 | connect timeout: 1 + n % 3000 ms |
//! | 1 | queue capacity: 1 + n % 8 |
//! | 1 | unsent policy: even requeue, odd hand back |
//! | 1 | items fed before the first poll: n % 8 |
//! | 1 | number of scripted outcomes: n % 13 |
//! | 6 each | outcome: kind % 5 (fail, permanent, hang, open, slow open), frames % 8, uptime (2 bytes) % 3000 ms, end % 3 (drop, close without status, close 1000), open delay (1 byte) scaled below the connect timeout |
//! | 1 each | after each message received: feed one more item if odd |
//!
//! When the unsent-policy byte's top bit is set, the last four bytes of the input are not feed
//! flags but an extension (so the seeds written before it keep their meaning):
//!
//! | byte | meaning |
//! |---|---|
//! | e0 | bits 0–1: keepalive (0 off; 1 and 3 short, from e1; 2 `Duration::MAX` for both); bit 2: min delay 1 ns; bit 3: max delay `Duration::MAX`; bit 4: min uptime `Duration::MAX`; bit 5: first-reconnect window 0; bit 6: first-reconnect window `Duration::MAX` (without either: the default) |
//! | e1 | short keepalive: ping interval 1 + 20·n ms, pong timeout 1 + 10·n ms |
//! | e2 | read-ahead: 1 + n % 8 messages |
//! | e3 | a sink-only phase first: the driver sends (feed, then flush) one item a second for n % 16 seconds without reading the stream side |
//!
//! With the extension and a short keepalive, an outcome whose end byte has bit 7 set goes
//! silent instead of ending: its server neither reads nor closes, and keepalive must notice.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use stream_websocket::Listen;

use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use stream_websocket::tungstenite::protocol::frame::coding::CloseCode;
use stream_websocket::tungstenite::protocol::{CloseFrame, Role};
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    Error, Event, Incoming, Jitter, MessageId, Outgoing, ReconnectConfig, ReconnectingStream,
    UnsentPolicy,
};
use tokio::io::DuplexStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<DuplexStream>;

/// Reads the input in order; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn ms(&mut self, modulo: u16) -> u64 {
        u64::from(self.u16() % modulo)
    }
}

/// How a connection's server ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Drop the socket: no Close frame.
    Drop,
    /// A Close frame without a status (the client sees no code).
    CloseNoStatus,
    /// A Close frame 1000.
    CloseNormal,
    /// Neither read nor close: the connection goes silent (half-open). Only with a short
    /// keepalive, which must end it.
    Silent,
}

/// Keepalive as the scenario sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    Off,
    On { ping: Duration, pong: Duration },
}

/// What one factory call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fails at once with a retryable I/O error.
    Fail,
    /// Fails at once with HTTP 401.
    Permanent,
    /// Never completes: the connect timeout must end it.
    Hang,
    /// Opens after `delay` (always below the connect timeout); the server sends `frames`
    /// consumer messages, reads for `uptime`, then ends the connection.
    Open {
        delay: Duration,
        frames: usize,
        uptime: Duration,
        end: End,
    },
}

/// One decoded scenario.
#[derive(Debug)]
pub struct Scenario {
    pub min_delay: Duration,
    pub factor: f64,
    pub max_delay: Duration,
    pub max_retries: Option<u32>,
    pub jitter: Jitter,
    pub seed: u64,
    pub min_uptime: Duration,
    /// `None`: the default window.
    pub first_window: Option<Duration>,
    pub connect_timeout: Duration,
    pub queue_capacity: usize,
    pub policy: UnsentPolicy,
    pub initial_items: usize,
    pub steps: Vec<Step>,
    pub feed_after_message: Vec<bool>,
    pub keepalive: Keepalive,
    pub read_ahead: usize,
    /// Seconds of sending without reading, before the driver starts reading.
    pub sink_only_secs: u64,
}

impl Scenario {
    pub fn decode(data: &[u8]) -> Scenario {
        let mut i = Input(data);
        let mut min_delay = Duration::from_millis(1 + i.ms(2000));
        let factor = 1.0 + 2.0 * f64::from(i.u8()) / 255.0;
        let mut max_delay = min_delay + Duration::from_millis(i.ms(4000));
        let max_retries = match i.u8() % 7 {
            6 => None,
            n => Some(u32::from(n)),
        };
        let jitter_kind = i.u8() % 4;
        let fraction = i.u8();
        let jitter = match jitter_kind {
            0 => Jitter::None,
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::Proportional(f64::from(fraction) / 255.0),
        };
        let mut min_uptime = Duration::from_millis(i.ms(3000));
        let connect_ms = 1 + i.ms(3000);
        let queue_capacity = 1 + usize::from(i.u8() % 8);
        let policy_byte = i.u8();
        let policy = if policy_byte % 2 == 0 {
            UnsentPolicy::Requeue
        } else {
            UnsentPolicy::HandBack
        };
        // The extension, if flagged, is the last four bytes.
        let extension = (policy_byte & 0x80 != 0 && i.0.len() >= 4).then(|| {
            let (rest, ext) = i.0.split_at(i.0.len() - 4);
            i.0 = rest;
            [ext[0], ext[1], ext[2], ext[3]]
        });
        let mut keepalive = Keepalive::Off;
        let mut read_ahead = 256;
        let mut sink_only_secs = 0;
        let mut first_window = None;
        if let Some([e0, e1, e2, e3]) = extension {
            keepalive = match e0 % 4 {
                0 => Keepalive::Off,
                2 => Keepalive::On {
                    ping: Duration::MAX,
                    pong: Duration::MAX,
                },
                _ => Keepalive::On {
                    ping: Duration::from_millis(1 + 20 * u64::from(e1)),
                    pong: Duration::from_millis(1 + 10 * u64::from(e1)),
                },
            };
            if e0 & 4 != 0 {
                min_delay = Duration::from_nanos(1);
                max_delay = max_delay.max(min_delay);
            }
            if e0 & 8 != 0 {
                max_delay = Duration::MAX;
            }
            if e0 & 16 != 0 {
                min_uptime = Duration::MAX;
            }
            if e0 & 32 != 0 {
                first_window = Some(Duration::ZERO);
            } else if e0 & 64 != 0 {
                first_window = Some(Duration::MAX);
            }
            read_ahead = 1 + usize::from(e2 % 8);
            sink_only_secs = u64::from(e3 % 16);
        }
        let short_keepalive =
            matches!(keepalive, Keepalive::On { pong, .. } if pong < Duration::MAX);
        let initial_items = usize::from(i.u8() % 8);
        let count = i.u8() % 13;
        let mut steps = Vec::new();
        for _ in 0..count {
            let kind = i.u8() % 5;
            let frames = usize::from(i.u8() % 8);
            let uptime = Duration::from_millis(i.ms(3000));
            let end_byte = i.u8();
            let end = match end_byte % 3 {
                _ if short_keepalive && end_byte & 0x80 != 0 => End::Silent,
                0 => End::Drop,
                1 => End::CloseNoStatus,
                _ => End::CloseNormal,
            };
            // Strictly below the connect timeout, so the open wins.
            let delay = Duration::from_millis(u64::from(i.u8()) * (connect_ms - 1) / 256);
            steps.push(match kind {
                0 => Step::Fail,
                1 => Step::Permanent,
                2 => Step::Hang,
                3 => Step::Open {
                    delay: Duration::ZERO,
                    frames,
                    uptime,
                    end,
                },
                _ => Step::Open {
                    delay,
                    frames,
                    uptime,
                    end,
                },
            });
        }
        let feed_after_message = i.0.iter().map(|b| b % 2 == 1).collect();
        Scenario {
            min_delay,
            factor,
            max_delay,
            max_retries,
            jitter,
            seed: u64::from(fraction),
            min_uptime,
            first_window,
            connect_timeout: Duration::from_millis(connect_ms),
            queue_capacity,
            policy,
            initial_items,
            steps,
            feed_after_message,
            keepalive,
            read_ahead,
            sink_only_secs,
        }
    }

    /// Virtual time after which a run counts as hung: every step at its longest (connect
    /// timeout, the longest delay it can follow, uptime, keepalive), plus the sink-only phase.
    fn hang_bound(&self) -> Duration {
        let keepalive = match self.keepalive {
            Keepalive::On { ping, pong } if pong < Duration::MAX => {
                ping.as_secs_f64() + pong.as_secs_f64()
            }
            _ => 0.0,
        };
        let mut total = 60.0 + self.sink_only_secs as f64;
        for n in 0..=self.steps.len() {
            let grown = self.min_delay.as_secs_f64() * self.factor.powi(n as i32);
            let delay = (2.0 * grown).min(self.max_delay.as_secs_f64());
            total += self.connect_timeout.as_secs_f64() + delay + 3.0 + keepalive;
        }
        Duration::try_from_secs_f64(total.min(1e12)).unwrap_or(Duration::MAX)
    }

    fn config(&self) -> ReconnectConfig {
        let mut b = ReconnectConfig::builder()
            .min_delay(self.min_delay)
            .grow_factor(self.factor)
            .max_delay(self.max_delay)
            .jitter(self.jitter)
            .seed(self.seed)
            .min_uptime(self.min_uptime)
            .connect_timeout(self.connect_timeout)
            .queue_capacity(self.queue_capacity)
            .read_ahead(self.read_ahead)
            .event_capacity(4096)
            .unsent_policy(self.policy);
        if let Some(window) = self.first_window {
            b = b.first_reconnect_window(window);
        }
        b = match self.keepalive {
            Keepalive::Off => b.no_keepalive(),
            Keepalive::On { ping, pong } => b.ping_interval(ping).pong_timeout(pong),
        };
        b = match self.max_retries {
            Some(n) => b.max_retries(n),
            None => b.unlimited_retries(),
        };
        b.build().expect("the decoded configuration is valid")
    }
}

/// One entry of the ordered log: a factory call or an event, with its (virtual) time.
#[derive(Debug, Clone)]
enum Entry {
    Call(Step),
    Event(Event),
}

/// What happened, shared between the factory, the servers and the checks.
#[derive(Default)]
struct Record {
    /// Factory calls, in order, with the step each ran.
    calls: Vec<(Instant, Step)>,
    /// Per opened connection (in opening order): frame ids the server sent.
    sent: BTreeMap<usize, Vec<String>>,
    /// Per opened connection: item numbers the server received.
    received: BTreeMap<usize, Vec<usize>>,
    opened: usize,
    /// Connections that went silent: items flushed into them may never be read.
    silent: usize,
}

/// The outgoing item number `i`: an ack with id `item-<i>`.
fn item(i: usize) -> Outgoing {
    Outgoing::Ack(MessageId::new(format!("item-{i}")))
}

fn item_number(item: &Outgoing) -> usize {
    match item {
        Outgoing::Ack(id) => id
            .as_str()
            .strip_prefix("item-")
            .and_then(|n| n.parse().ok())
            .expect("an item of this harness"),
        other => panic!("unexpected outgoing item {other:?}"),
    }
}

/// The item number in a text frame the client wrote (`{"messageId":"item-<i>"}`).
fn parse_item(text: &str) -> Option<usize> {
    let start = text.find("item-")? + "item-".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A future that never completes (a hung connect).
struct Hang;

impl std::future::Future for Hang {
    type Output = Result<Ws, Error>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

fn factory(
    record: Arc<Mutex<Record>>,
    steps: Vec<Step>,
    order: Arc<Mutex<Vec<(Instant, Entry)>>>,
    events: Arc<Mutex<Option<stream_websocket::Listener<Event>>>>,
) -> impl FnMut() -> BoxFuture<'static, Result<Ws, Error>> {
    let mut steps = steps.into_iter();
    move || {
        let step = steps.next().unwrap_or(Step::Permanent);
        let now = Instant::now();
        // Everything emitted before this call comes first in the ordered log.
        if let Some(listener) = events.lock().unwrap().as_mut() {
            while let Ok(e) = listener.try_recv() {
                order.lock().unwrap().push((now, Entry::Event(e)));
            }
        }
        order.lock().unwrap().push((now, Entry::Call(step)));
        record.lock().unwrap().calls.push((now, step));
        let record = record.clone();
        match step {
            Step::Fail => {
                async { Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()) }.boxed()
            }
            Step::Permanent => async {
                Err(Error::Http {
                    status: 401,
                    body: None,
                    retry_after: None,
                })
            }
            .boxed(),
            Step::Hang => Hang.boxed(),
            Step::Open {
                delay,
                frames,
                uptime,
                end,
            } => async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let (a, b) = tokio::io::duplex(256 * 1024);
                let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
                let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
                let conn = {
                    let mut r = record.lock().unwrap();
                    r.opened += 1;
                    r.opened
                };
                tokio::spawn(serve(record, conn, server, frames, uptime, end));
                Ok(client)
            }
            .boxed(),
        }
    }
}

fn record_received(record: &Mutex<Record>, conn: usize, msg: &Message) {
    if let Message::Text(t) = msg {
        if let Some(n) = parse_item(t.as_str()) {
            record
                .lock()
                .unwrap()
                .received
                .entry(conn)
                .or_default()
                .push(n);
        }
    }
}

/// The server of one connection. Records what it sent and received; never panics.
async fn serve(
    record: Arc<Mutex<Record>>,
    conn: usize,
    mut ws: Ws,
    frames: usize,
    uptime: Duration,
    end: End,
) {
    for j in 0..frames {
        let id = format!("c{conn}-{j}");
        let frame = format!(r#"{{"messageId":"{id}","payload":"","properties":{{}}}}"#);
        if ws.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
        record
            .lock()
            .unwrap()
            .sent
            .entry(conn)
            .or_default()
            .push(id);
    }
    if end == End::Silent {
        // Half-open: hold the socket, read nothing (no pongs), never close.
        record.lock().unwrap().silent += 1;
        std::future::pending::<()>().await;
    }
    let deadline = tokio::time::sleep(uptime);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m)) => record_received(&record, conn, &m),
                _ => return,
            },
            _ = &mut deadline => break,
        }
    }
    // Whatever the client already flushed counts as received.
    while let Some(Some(Ok(m))) = ws.next().now_or_never() {
        record_received(&record, conn, &m);
    }
    match end {
        End::Drop | End::Silent => drop(ws),
        End::CloseNoStatus | End::CloseNormal => {
            let frame = (end == End::CloseNormal).then(|| CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            });
            if ws.close(frame).await.is_err() {
                return;
            }
            // Until the client's Close reply (or its going away), recording what comes before.
            while let Some(Ok(m)) = ws.next().await {
                record_received(&record, conn, &m);
            }
        }
    }
}

/// Feeds item `n`. Items handed back count against the queue bound until taken, so while the
/// item waits for room, the driver takes them back once a (virtual) second.
async fn feed<F: stream_websocket::Connect>(
    stream: &mut ReconnectingStream<F>,
    n: usize,
    accepted: &mut Vec<usize>,
    refused: &mut Vec<usize>,
    taken: &mut Vec<usize>,
) {
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.feed(item(n))).await {
            Ok(Ok(())) => return accepted.push(n),
            Ok(Err(_)) => return refused.push(n),
            Err(_) => taken.extend(stream.take_unsent().iter().map(item_number)),
        }
    }
}

/// Runs the scenario of `data` on a fresh paused-clock runtime and checks every invariant.
/// Panics on a violation.
pub fn check(data: &[u8]) {
    let scenario = Scenario::decode(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run(scenario));
}

async fn run(s: Scenario) {
    let config = s.config();
    let record = Arc::new(Mutex::new(Record::default()));
    let order = Arc::new(Mutex::new(Vec::new()));
    let factory_events = Arc::new(Mutex::new(None));
    let mut stream = ReconnectingStream::with_config(
        factory(
            record.clone(),
            s.steps.clone(),
            order.clone(),
            factory_events.clone(),
        ),
        config,
    );
    *factory_events.lock().unwrap() = Some(stream.events());
    // A second listener, drained as events happen, gives each event its exact virtual time.
    let mut timed = stream.events();
    let timer = tokio::spawn(async move {
        let mut out = Vec::new();
        loop {
            match timed.recv().await {
                Ok(e) => out.push((Instant::now(), e)),
                Err(stream_websocket::ListenerError::Closed) => return out,
                Err(e) => panic!("the timing listener failed: {e}"),
            }
        }
    });

    let mut next_item = 0;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    // Items taken back while the driver ran (a full hand-back list holds `poll_ready`).
    let mut taken = Vec::new();
    let drive = async {
        let mut feeds = s.feed_after_message.iter();
        let mut to_feed = s.initial_items;
        let mut messages = Vec::new();
        // A sink-only user first: sends, never reads, so the read-ahead fills.
        for _ in 0..s.sink_only_secs {
            let n = next_item;
            next_item += 1;
            feed(&mut stream, n, &mut accepted, &mut refused, &mut taken).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        loop {
            for _ in 0..std::mem::take(&mut to_feed) {
                let n = next_item;
                next_item += 1;
                feed(&mut stream, n, &mut accepted, &mut refused, &mut taken).await;
            }
            match stream.next().await {
                Some(Ok(Incoming::Message(m))) => {
                    messages.push(m.message_id.as_str().to_string());
                    if feeds.next() == Some(&true) {
                        to_feed = 1;
                    }
                }
                Some(Ok(other)) => panic!("unexpected item {other:?}"),
                Some(Err(e)) => break (messages, e),
                None => panic!("the stream ended without an error"),
            }
        }
    };
    let (messages, end) = tokio::time::timeout(s.hang_bound(), drive)
        .await
        .unwrap_or_else(|_| panic!("the stream hung: {s:?}"));

    // Fused: None from now on.
    for _ in 0..3 {
        assert!(stream.next().await.is_none(), "a value after the end");
    }
    assert!(futures::stream::FusedStream::is_terminated(&stream));
    let mut unsent = taken;
    unsent.extend(stream.take_unsent().iter().map(item_number));
    let max_retries = s.max_retries;
    // The end: the script's permanent failure, or the retry cap.
    match &end {
        Error::Http { status: 401, .. } => {}
        Error::GaveUp { attempts, last } => {
            assert_eq!(Some(*attempts), max_retries, "gave up early: {s:?}");
            assert!(last.is_retryable(), "{last:?}");
        }
        other => panic!("the stream ended with {other:?}"),
    }

    // Drain the ordered log: the last events come after the last call.
    if let Some(listener) = factory_events.lock().unwrap().as_mut() {
        let now = Instant::now();
        while let Ok(e) = listener.try_recv() {
            order.lock().unwrap().push((now, Entry::Event(e)));
        }
    }
    drop(stream);
    let timed = timer.await.expect("the timing listener");
    let order = order.lock().unwrap().clone();
    let events: Vec<&(Instant, Entry)> = order
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Event(_)))
        .collect();
    assert_eq!(events.len(), timed.len(), "both listeners saw every event");

    check_timeline(&s, &order, &timed);
    let record = record.lock().unwrap();
    check_messages(&record, &messages);
    check_items(&s, &record, &accepted, &refused, &unsent);
}

/// Walks calls and events in order, checking attempts, delays and retry counts.
fn check_timeline(s: &Scenario, order: &[(Instant, Entry)], timed: &[(Instant, Event)]) {
    let mut times = timed.iter();
    let ms1 = Duration::from_millis(1);
    let within = |gap: Duration, low: Duration| gap >= low && gap <= low.saturating_add(ms1);

    let mut calls = 0usize;
    let mut reconnecting = 0usize;
    let mut retries = 0u32;
    // The first reconnect's window: the configured one, at most the minimum delay, and after a
    // restart at most an eighth of the uptime of the connection that restarted it.
    let full_window = s
        .config()
        .backoff()
        .first_reconnect_window()
        .min(s.min_delay);
    let mut window = full_window;
    // The attempt in progress: when it started and what it does.
    let mut attempt: Option<(Instant, Step)> = None;
    // The open connection: when it opened, and how many frames its server sends.
    let mut open: Option<(Instant, usize)> = None;
    // The last Reconnecting event: when, and its delay.
    let mut scheduled: Option<(Instant, Duration)> = None;
    let mut gave_up = false;
    // The `reconnect` flag of a close event not yet followed by its consequence.
    let mut after_close: Option<bool> = None;

    for (call_time, entry) in order {
        match entry {
            Entry::Call(step) => {
                calls += 1;
                assert!(attempt.is_none() && open.is_none(), "a call while busy");
                assert!(!gave_up, "a call after giving up");
                if calls > 1 {
                    let (at, delay) = scheduled
                        .take()
                        .expect("every call after the first follows a Reconnecting event");
                    let gap = *call_time - at;
                    assert!(
                        within(gap, delay),
                        "call {calls} came {gap:?} after a scheduled delay of {delay:?}"
                    );
                    assert!(
                        gap <= s.max_delay.saturating_add(ms1),
                        "gap {gap:?} over the maximum"
                    );
                }
                attempt = Some((*call_time, *step));
            }
            Entry::Event(event) => {
                let (t, timed_event) = times.next().expect("a timed event");
                assert_eq!(
                    std::mem::discriminant(event),
                    std::mem::discriminant(timed_event)
                );
                let t = *t;
                match event {
                    Event::Open(o) => {
                        let (start, step) = attempt.take().expect("an open without an attempt");
                        let Step::Open { delay, frames, .. } = step else {
                            panic!("{step:?} opened");
                        };
                        assert!(within(t - start, delay), "opened {:?} after", t - start);
                        assert_eq!(o.attempt, retries, "{o:?}");
                        open = Some((t, frames));
                    }
                    Event::Error(e) => {
                        if let Some((start, step)) = attempt.take() {
                            let took = t - start;
                            match step {
                                Step::Fail => {
                                    assert!(matches!(e, Error::Io(_)), "{e:?}");
                                    assert_eq!(took, Duration::ZERO);
                                }
                                Step::Permanent => {
                                    assert_eq!(e.http_status(), Some(401), "{e:?}");
                                    assert_eq!(took, Duration::ZERO);
                                }
                                Step::Hang => {
                                    assert!(
                                        matches!(e, Error::ConnectTimeout(d) if *d == s.connect_timeout),
                                        "{e:?}"
                                    );
                                    assert!(
                                        within(took, s.connect_timeout),
                                        "timed out after {took:?}"
                                    );
                                }
                                Step::Open { .. } => panic!("an opening attempt failed: {e:?}"),
                            }
                        } else {
                            assert!(open.is_some(), "an error outside any attempt: {e:?}");
                        }
                    }
                    Event::Close(c) => {
                        let (opened, frames) = open.take().expect("a close without a connection");
                        // Every frame the server sends is a consumer message: progress.
                        assert_eq!(c.progress, frames > 0, "{c:?}, {frames} frames sent");
                        let uptime = t - opened;
                        if c.progress || uptime >= s.min_uptime {
                            retries = 0;
                            window = full_window.min(uptime / 8);
                        }
                        after_close = Some(c.reconnect);
                    }
                    Event::Reconnecting(r) => {
                        assert!(attempt.is_none() && open.is_none());
                        assert_ne!(
                            after_close.take(),
                            Some(false),
                            "a reconnect after a final close"
                        );
                        retries += 1;
                        reconnecting += 1;
                        assert_eq!(r.attempt, retries, "{r:?}");
                        if let Some(max) = s.max_retries {
                            assert!(retries <= max, "{retries} retries, at most {max}");
                        }
                        assert!(r.delay <= s.max_delay, "{r:?}");
                        if retries == 1 {
                            assert!(r.delay <= window, "first retry {r:?} beyond {window:?}");
                        }
                        scheduled = Some((t, r.delay));
                    }
                    Event::GaveUp(g) => {
                        assert_ne!(
                            after_close.take(),
                            Some(true),
                            "gave up after a reconnecting close"
                        );
                        assert_eq!(Some(retries), s.max_retries);
                        assert_eq!(g.attempts, retries);
                        gave_up = true;
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
    }
    assert!(times.next().is_none());
    assert_ne!(
        after_close,
        Some(true),
        "a close promised a reconnect that never came"
    );
    assert_eq!(reconnecting, calls - 1, "one Reconnecting event per retry");
    assert!(
        attempt.is_none() && open.is_none(),
        "the stream ended mid-attempt"
    );
    assert!(scheduled.is_none(), "a retry was scheduled but never made");
}

/// Every frame the servers sent arrived once, in order.
fn check_messages(record: &Record, messages: &[String]) {
    let sent: Vec<String> = record.sent.values().flatten().cloned().collect();
    assert_eq!(messages, sent, "messages received vs sent");
}

/// Every accepted item reached a server or came back from take_unsent(), exactly once and in
/// order; refused items went nowhere.
fn check_items(
    s: &Scenario,
    record: &Record,
    accepted: &[usize],
    refused: &[usize],
    unsent: &[usize],
) {
    let received: Vec<usize> = record.received.values().flatten().copied().collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "received out of order or twice: {received:?} ({:?})",
        s.policy
    );
    assert!(
        unsent.windows(2).all(|w| w[0] < w[1]),
        "unsent out of order or twice: {unsent:?}"
    );
    let mut all: Vec<usize> = received.iter().chain(unsent).copied().collect();
    all.sort_unstable();
    if record.silent == 0 {
        assert_eq!(all, accepted, "received {received:?} + unsent {unsent:?}");
    } else {
        // Items flushed into a silent connection sit unread in its socket: a flush means
        // "written", not "delivered". Everything else is accounted for, once.
        let mut rest = accepted.iter();
        for n in &all {
            assert!(
                rest.any(|a| a == n),
                "item {n} was not accepted, or came twice: received {received:?} + unsent {unsent:?}"
            );
        }
    }
    for n in refused {
        assert!(!all.contains(n), "refused item {n} was used");
    }
}
