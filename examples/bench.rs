//! Performance of the reconnecting layer, side by side with bare `tokio-tungstenite`; the GDN
//! producer and consumer against the embedded server; recovery after drops; and the cost per
//! message in allocations and memory; throughput under faults; and a fleet of idle streams.
//! Everything runs on 127.0.0.1 and ends by itself (on 2 cores: sections 1-4 about a minute, 30 s
//! of which is the outage of section 4; section 5 about two minutes, most of it the faulted runs
//! with the default delays; section 6 about 75 s).
//!
//! ```text
//! cargo run --release --example bench
//! cargo run --release --example bench -- --only 1,3            # some sections only
//! cargo run --release --example bench -- --only 5,6            # faults and the fleet
//! cargo run --release --example bench -- --profile wrapper echo # one workload, for perf/callgrind
//! cargo run --release --example bench -- --profile raw echo --runs 1
//! ```
//!
//! 1. Throughput of 100-byte text frames through a bare `WebSocketStream` and through
//!    `ReconnectingStream<_, RawCodec>` with the default configuration (keepalive on: a ping
//!    every 20 s), both opened by `stream_websocket::connect`, against the same plain
//!    tokio-tungstenite server: one way (1,000,000 frames server to client; the server `feed`s
//!    and flushes every 1024 frames) and echo (1,000,000 round trips, 512 in flight).
//! 2. The GDN producer against the embedded `LocalServer`: confirmed messages/s with up to 1000
//!    receipts outstanding and awaiting each `send`, the same for a bare client writing
//!    pre-encoded frames (the server's own limits), and a consumer receiving and acknowledging
//!    messages published beforehand.
//! 3. Recovery: from the server accepting a new connection (and from its dropping the old one)
//!    to the first message on it, with a zero scheduled delay (`first_reconnect_window(0)`: by
//!    default the first reconnect is spread over up to 580 ms); and how late the factory is
//!    called after a fixed 10 ms delay (first reconnect immediate, as above), against a server
//!    that drops every connection at once.
//! 4. Heap allocations per `Outgoing::Publish` pushed through a connected stream to a server that
//!    discards them (a counting global allocator), against what encoding the frame alone
//!    allocates; and the resident memory of a producer that keeps publishing through a 30 s
//!    outage, in a child process (this program with `--outage-child`) so that earlier sections
//!    do not inflate its baseline.
//! 5. Faults: 20,000 messages of 100 bytes through `LocalServer`, by a producer alone and end to
//!    end (a consumer subscribed first receives and acknowledges them all), with every
//!    connection dropped after 200 to 1,000 frames (drawn per connection:
//!    `LocalServer::drop_after_frames_between`) and 5% of handshakes refused with 503
//!    (`LocalServer::refuse_fraction`), against the same without faults: the ratio of the
//!    times, alternated pairs, with fast delays (20 ms to 200 ms) and with the defaults; and a
//!    check that nothing is lost. End to end the consumer uses `receiverQueueSize` 100 (below
//!    the smallest drop limit; with the default, 1000, the bench shows once that it stalls).
//! 6. A fleet against a plain tokio-tungstenite server in a child process (this program with
//!    `--fleet-server-child`, driven over stdin): idle RSS per `ReconnectingStream` and per bare
//!    `WebSocketStream` (10,000 of each if the open-file limit allows, else 2,000; each kind in a
//!    fresh `--fleet-client-child` process); client CPU per idle stream over one keepalive
//!    interval; the handshakes per 100 ms after the server drops them all at once and refuses
//!    for 3 s (default config, and `first_reconnect_window(0)` for contrast; also at 2,000); and
//!    the handshakes of one default client against a server that drops every connection at
//!    once, over 60 s (in the background meanwhile).
//!
//! Servers run on a runtime of their own (one worker thread), clients on the main thread (a
//! current-thread runtime), so on 2 cores each side has a core. CPU time per thread comes from
//! `/proc/thread-self/schedstat`. Paired measurements alternate (A B, B A, A B, ...) and the
//! median is reported; throughput ratios are medians of the ratios of each pair, printed with a
//! distribution-free 95% interval for that median (how far the noise of the machine leaves it
//! open). The last line printed is `ratio wrapper/raw: X.XX`: the median over all pairs of
//! section 1, one-way and echo together, as the issue that asked for this bench defines it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use stream_websocket::Listen;

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use stream_websocket::gdn::Consumer;
use stream_websocket::gdn::{
    ConsumerOptions, Endpoint, InitialPosition, Producer, ProducerConfig, ProducerOptions, Topic,
};
use stream_websocket::tungstenite::handshake::server::{
    ErrorResponse as HsErrorResponse, Request as HsRequest, Response as HsResponse,
};
use stream_websocket::tungstenite::http::StatusCode;
use stream_websocket::tungstenite::protocol::WebSocketConfig;
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    connect, Connect, Event, ListenerError, Outgoing, Publish, PulsarCodec, RawCodec,
    ReconnectConfig, ReconnectingStream, WsStream,
};
use stream_websocket_testkit::{Cut, FaultProxy, LocalServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};

// ----- counting allocator -------------------------------------------------------------------

/// The system allocator, counting allocation calls and bytes requested (all threads) while
/// `COUNTING` is on. Off, it costs one load of a flag that never changes: counting all the time
/// would make every allocating thread contend for the counters' cache line, slowing the other
/// sections.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOC_CALLS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOC_CALLS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn alloc_counts() -> (u64, u64) {
    (
        ALLOC_CALLS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

// ----- parameters ---------------------------------------------------------------------------

/// Section 1.
const ONEWAY_MESSAGES: usize = 1_000_000;
const ECHO_MESSAGES: usize = 1_000_000;
/// Echoes in flight at once in the echo workload.
const ECHO_WINDOW: usize = 512;
const PAYLOAD_BYTES: usize = 100;
/// The one-way server flushes after this many frames (`feed` in between).
const SERVER_FLUSH_EVERY: usize = 1024;
/// Pairs per workload. Single runs on a shared VM scatter by ±15%; the median of 21 side-by-side
/// pairs is steady to about a hundredth.
const THROUGHPUT_RUNS: usize = 21;
/// Section 2.
const PRODUCER_WINDOW: usize = 1000;
const PIPELINED_MESSAGES: usize = 200_000;
const AWAITED_MESSAGES: usize = 10_000;
const CONSUMER_MESSAGES: usize = 50_000;
const PRODUCER_RUNS: usize = 5;
/// Section 3.
const RECOVERY_DROPS: usize = 100;
const ACCURACY_RECONNECTS: usize = 100;
const FIXED_DELAY: Duration = Duration::from_millis(10);
/// Section 4.
const ALLOC_MESSAGES: usize = 100_000;
const OUTAGE: Duration = Duration::from_secs(30);
const OUTAGE_MESSAGE_BYTES: usize = 1024;
/// Fixed allowance on top of window × message size: the producer task, its connection's
/// buffers, per-message bookkeeping (the pending map, receipts) and allocator slack.
const RSS_CONSTANT_KIB: u64 = 4 * 1024;
/// Section 5.
const FAULT_MESSAGES: usize = 20_000;
/// Every connection is dropped after a number of frames drawn from this range.
const FAULT_DROP_FRAMES: RangeInclusive<u64> = 200..=1000;
/// The share of handshakes refused with 503.
const FAULT_REFUSE_FRACTION: f64 = 0.05;
/// Faulted / fault-free pairs per workload: with fast delays, and with the defaults (whose
/// faulted runs take seconds each).
const FAULT_RUNS_FAST: usize = 6;
const FAULT_RUNS_DEFAULTS: usize = 4;
/// Goals for faulted / fault-free time.
const FAULT_GOAL_E2E: f64 = 1.3;
const FAULT_GOAL_PRODUCER: f64 = 1.5;
const FAULT_STRETCH_PRODUCER: f64 = 1.15;
/// A run still going after this long has lost something.
const FAULT_RUN_LIMIT: Duration = Duration::from_secs(120);
/// The consumer's `receiverQueueSize` end to end: below the smallest drop limit, so that the
/// server reads acknowledgements before it reaches a connection's limit. With the default
/// (1000, above most limits) a reconnecting consumer is sent its whole backlog of
/// redeliveries at once, and the connection dies on that burst before any acknowledgement
/// is read: no message is ever settled (the bench shows it once, `FAULT_STALL_LIMIT` long).
const FAULT_RECEIVER_QUEUE: u32 = 100;
const FAULT_STALL_LIMIT: Duration = Duration::from_secs(5);
/// Section 6.
const FLEET_N: usize = 10_000;
const FLEET_N_FALLBACK: usize = 2_000;
/// File descriptors a fleet process needs beyond one per connection.
const FLEET_FD_MARGIN: u64 = 500;
/// Connections opened at once while a fleet connects.
const FLEET_CONNECT_AT_ONCE: usize = 256;
/// How long a fleet may take to connect before it counts as failed.
const FLEET_OPEN_LIMIT: Duration = Duration::from_secs(60);
const FLEET_BACKLOG: u32 = 4096;
/// The idle period over which the CPU of a fleet is measured: one keepalive interval.
const FLEET_CPU_PERIOD: Duration = Duration::from_secs(20);
/// How long every stream is up before the mass drop: more than `min_uptime` (5 s), so that
/// the drop starts each schedule over.
const FLEET_UP_BEFORE_DROP: Duration = Duration::from_secs(6);
/// How long the server refuses handshakes after the mass drop.
const FLEET_REFUSE: Duration = Duration::from_secs(3);
/// How long after the server's return the fleet gets to come back before the bench stops
/// waiting.
const FLEET_BACK_LIMIT: Duration = Duration::from_secs(20);
const FLEET_BIN: Duration = Duration::from_millis(100);
/// Goals: the most handshakes of the fleet in any bin, and the longest wait after the
/// server's return (the default max delay).
const FLEET_PEAK_GOAL: f64 = 0.20;
const FLEET_BACK_GOAL: Duration = Duration::from_secs(10);
/// The handshake-rate measurement: the whole period, and the first part reported apart.
const HPM_PERIOD: Duration = Duration::from_secs(60);
const HPM_FIRST: Duration = Duration::from_secs(20);

// ----- small helpers ------------------------------------------------------------------------

/// The middle value; for an even count, the mean of the two middle ones.
fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A distribution-free interval that holds the true median of what `v` samples with at least
/// 95% probability: the k-th smallest and the k-th largest value, for the largest k with
/// P(Binomial(n, 1/2) < k) <= 2.5%. For 21 samples that is the 6th and the 16th (97.3%).
/// `None` for fewer than 6 samples, too few for such an interval.
fn median_interval(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    let (mut k, mut below, mut p_j) = (0, 0.0, 0.5f64.powi(n as i32));
    for j in 0..n {
        // `p_j` is P(X = j); `below` becomes P(X <= j).
        below += p_j;
        if below > 0.025 {
            break;
        }
        k = j + 1;
        p_j *= (n - j) as f64 / (j + 1) as f64;
    }
    if k == 0 {
        return None;
    }
    let s = sorted(v);
    Some((s[k - 1], s[n - k]))
}

/// A sorted copy.
fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// CPU time of the calling thread (from /proc/thread-self/schedstat), if available.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time of the server runtime's worker thread(s) (named `bench-server`).
fn server_threads_cpu() -> Duration {
    let mut total = Duration::ZERO;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in dir.flatten() {
        let path = task.path();
        let is_server =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "bench-server");
        if !is_server {
            continue;
        }
        if let Some(ns) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += Duration::from_nanos(ns);
        }
    }
    total
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu()?.saturating_sub(start?))
}

/// Resident memory of this process in KiB (VmRSS from /proc/self/status).
fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The pair in the order for run `run`: A B, B A, A B, ... so neither side always goes first.
fn alternated<T>(run: usize, [a, b]: [T; 2]) -> [T; 2] {
    if run % 2 == 0 {
        [a, b]
    } else {
        [b, a]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// The verdict of sections 5 and 6.
fn pass_fail(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn payload_text() -> Message {
    Message::text("x".repeat(PAYLOAD_BYTES))
}

/// Binds 127.0.0.1:0 on the server runtime.
async fn listener_on(server: &Handle) -> (TcpListener, SocketAddr) {
    let listener = server
        .spawn(TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind task")
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

// ----- section 1: the plain tokio-tungstenite server -----------------------------------------

/// Serves each connection one workload, named by its first text message: `oneway N` (send N
/// frames of `PAYLOAD_BYTES`, `feed` with a flush every `SERVER_FLUSH_EVERY`) or `echo` (echo
/// every data frame, in batches). Reports the server thread's CPU time per workload.
async fn throughput_server(listener: TcpListener, cpu: mpsc::UnboundedSender<Option<Duration>>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let cpu = cpu.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let Some(Ok(Message::Text(cmd))) = ws.next().await else {
                return;
            };
            let start = thread_cpu();
            if let Some(n) = cmd.as_str().strip_prefix("oneway ") {
                let n: usize = n.parse().expect("count");
                let msg = payload_text();
                for i in 0..n {
                    if ws.feed(msg.clone()).await.is_err() {
                        return;
                    }
                    if i % SERVER_FLUSH_EVERY == SERVER_FLUSH_EVERY - 1 && ws.flush().await.is_err()
                    {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            } else if cmd.as_str() == "echo" {
                serve_echo(&mut ws).await;
            }
            let _ = cpu.send(cpu_since(start));
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
}

/// Echoes data frames: reads what is there (up to 256), writes it back, flushes, repeats.
async fn serve_echo(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    let mut pending = VecDeque::with_capacity(256);
    poll_fn(|cx| loop {
        let mut progress = false;
        while pending.len() < 256 {
            match ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                    pending.push_back(m);
                    progress = true;
                }
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(())
                }
                Poll::Ready(Some(Ok(_))) => progress = true,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        while !pending.is_empty() {
            match ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => break,
            }
            let m = pending.pop_front().expect("not empty");
            if ws.start_send_unpin(m).is_err() {
                return Poll::Ready(());
            }
            progress = true;
        }
        if let Poll::Ready(Err(_)) = ws.poll_flush_unpin(cx) {
            return Poll::Ready(());
        }
        if !progress {
            return Poll::Pending;
        }
    })
    .await
}

struct Sample {
    elapsed: Duration,
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

impl Sample {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
    fn busy(cpu: Option<Duration>, elapsed: Duration) -> f64 {
        cpu.map_or(f64::NAN, |c| c.as_secs_f64() / elapsed.as_secs_f64())
    }
}

/// Asks for `n` frames and counts them arriving.
async fn run_oneway<S, E1, E2>(ws: &mut S, n: usize) -> (Duration, Option<Duration>)
where
    S: Stream<Item = Result<Message, E1>> + Sink<Message, Error = E2> + Unpin,
    E1: Debug,
    E2: Debug,
{
    let cpu = thread_cpu();
    let start = Instant::now();
    ws.send(Message::text(format!("oneway {n}")))
        .await
        .expect("send command");
    let (mut got, mut bytes) = (0usize, 0usize);
    while got < n {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                got += 1;
                bytes += t.len();
            }
            Some(Ok(_)) => {}
            other => panic!("one-way workload ended early: {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(bytes, n * PAYLOAD_BYTES);
    (elapsed, cpu_since(cpu))
}

/// Sends `n` frames with at most `ECHO_WINDOW` unanswered, and counts the echoes.
async fn run_echo<S, E1, E2>(ws: &mut S, n: usize) -> (Duration, Option<Duration>)
where
    S: Stream<Item = Result<Message, E1>> + Sink<Message, Error = E2> + Unpin,
    E1: Debug,
    E2: Debug,
{
    ws.send(Message::text("echo")).await.expect("send command");
    let msg = payload_text();
    run_windowed(ws, n, ECHO_WINDOW, |_| msg.clone()).await
}

/// Sends `n` frames made by `make`, at most `window` of them unanswered, until `n` text frames
/// came back.
async fn run_windowed<S, E1, E2>(
    ws: &mut S,
    n: usize,
    window: usize,
    mut make: impl FnMut(usize) -> Message,
) -> (Duration, Option<Duration>)
where
    S: Stream<Item = Result<Message, E1>> + Sink<Message, Error = E2> + Unpin,
    E1: Debug,
    E2: Debug,
{
    let cpu = thread_cpu();
    let start = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    poll_fn(|cx| loop {
        let mut progress = false;
        while sent < n && sent - received < window {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => panic!("poll_ready: {e:?}"),
                Poll::Pending => break,
            }
            Pin::new(&mut *ws)
                .start_send(make(sent))
                .expect("start_send");
            sent += 1;
            progress = true;
        }
        if let Poll::Ready(Err(e)) = Pin::new(&mut *ws).poll_flush(cx) {
            panic!("poll_flush: {e:?}");
        }
        loop {
            match Pin::new(&mut *ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    received += 1;
                    progress = true;
                    if received == n {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(other) => panic!("the workload ended early: {other:?}"),
                Poll::Pending => break,
            }
        }
        if !progress {
            return Poll::Pending;
        }
    })
    .await;
    (start.elapsed(), cpu_since(cpu))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Raw,
    Wrapper,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    OneWay,
    Echo,
}

fn wrapper_stream(
    url: String,
    config: ReconnectConfig,
) -> ReconnectingStream<impl Connect<Transport = WsStream, Future: Send> + Send, RawCodec> {
    ReconnectingStream::with_codec(move || connect(url.clone()), config, RawCodec)
}

async fn measure(
    client: Client,
    workload: Workload,
    url: &str,
    server_cpu: &mut mpsc::UnboundedReceiver<Option<Duration>>,
) -> Sample {
    let n = match workload {
        Workload::OneWay => ONEWAY_MESSAGES,
        Workload::Echo => ECHO_MESSAGES,
    };
    let (elapsed, client_cpu) = match client {
        Client::Raw => {
            let mut ws = connect(url.to_string()).await.expect("connect");
            let r = match workload {
                Workload::OneWay => run_oneway(&mut ws, n).await,
                Workload::Echo => run_echo(&mut ws, n).await,
            };
            let _ = ws.close(None).await;
            r
        }
        Client::Wrapper => {
            // Default configuration: keepalive on (a ping every 20 s).
            let mut ws = wrapper_stream(url.to_string(), ReconnectConfig::default());
            // Connect before the clock starts, as for the raw client.
            ws.flush().await.expect("connect");
            let r = match workload {
                Workload::OneWay => run_oneway(&mut ws, n).await,
                Workload::Echo => run_echo(&mut ws, n).await,
            };
            assert_eq!(
                ws.connections(),
                1,
                "the wrapper reconnected during the run"
            );
            let _ = ws.close().await;
            r
        }
    };
    let server_cpu = server_cpu.recv().await.flatten();
    Sample {
        elapsed,
        client_cpu,
        server_cpu,
    }
}

struct PairResult {
    raw_rate: f64,
    wrapper_rate: f64,
    ratio: f64,
    ratios: Vec<f64>,
}

impl PairResult {
    /// The ratio with its 95% interval, as the result rows print it.
    fn ratio_text(&self) -> String {
        ratio_text(self.ratio, &self.ratios)
    }
}

/// A median ratio with the 95% interval of the ratios it is the median of.
fn ratio_text(median: f64, ratios: &[f64]) -> String {
    match median_interval(ratios) {
        Some((lo, hi)) => format!("{median:.3} (95% interval {lo:.3}-{hi:.3})"),
        None => format!("{median:.3}"),
    }
}

async fn throughput_pair(
    workload: Workload,
    url: &str,
    server_cpu: &mut mpsc::UnboundedReceiver<Option<Duration>>,
) -> PairResult {
    let (name, n) = match workload {
        Workload::OneWay => ("one-way", ONEWAY_MESSAGES),
        Workload::Echo => ("echo", ECHO_MESSAGES),
    };
    let (mut raw, mut wrapper, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..THROUGHPUT_RUNS {
        let order = alternated(run, [Client::Raw, Client::Wrapper]);
        let mut rates = [0.0; 2];
        for client in order {
            let s = measure(client, workload, url, server_cpu).await;
            let rate = s.rate(n);
            println!(
                "  {name:7} run {run} {:7}: {:>10.0} msg/s  ({:.3} s; client CPU {:.0}%, server CPU {:.0}%)",
                format!("{client:?}").to_lowercase(),
                rate,
                s.elapsed.as_secs_f64(),
                100.0 * Sample::busy(s.client_cpu, s.elapsed),
                100.0 * Sample::busy(s.server_cpu, s.elapsed),
            );
            rates[(client == Client::Wrapper) as usize] = rate;
        }
        raw.push(rates[0]);
        wrapper.push(rates[1]);
        ratios.push(rates[1] / rates[0]);
    }
    PairResult {
        raw_rate: median(&raw),
        wrapper_rate: median(&wrapper),
        ratio: median(&ratios),
        ratios,
    }
}

// ----- section 2: producer and consumer against the embedded server --------------------------

fn quick_reconnect() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
        .build()
        .expect("valid config")
}

fn bench_payload() -> Bytes {
    Bytes::from(vec![b'p'; PAYLOAD_BYTES])
}

fn start_producer(server: &LocalServer, topic: &Topic) -> Producer {
    let endpoint = Endpoint::producer(&server.ws_url(), topic, ProducerOptions::default())
        .expect("producer endpoint");
    Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(quick_reconnect()).max_pending(PRODUCER_WINDOW),
    )
}

/// Publishes `n` messages with up to `PRODUCER_WINDOW` receipts outstanding; returns the time
/// until the last confirmation.
async fn publish_pipelined(producer: &Producer, n: usize) -> Duration {
    let payload = bench_payload();
    let start = Instant::now();
    let mut receipts = VecDeque::with_capacity(PRODUCER_WINDOW);
    for _ in 0..n {
        if receipts.len() == PRODUCER_WINDOW {
            let r: stream_websocket::gdn::Receipt = receipts.pop_front().expect("full");
            r.await.expect("confirmed");
        }
        receipts.push_back(
            producer
                .enqueue(Publish::new(payload.clone()))
                .await
                .expect("enqueue"),
        );
    }
    for r in receipts {
        r.await.expect("confirmed");
    }
    start.elapsed()
}

async fn publish_awaiting_each(producer: &Producer, n: usize) -> Duration {
    let payload = bench_payload();
    let start = Instant::now();
    for _ in 0..n {
        producer
            .send(Publish::new(payload.clone()))
            .await
            .expect("confirmed");
    }
    start.elapsed()
}

struct ProducerResult {
    pipelined: f64,
    awaiting: f64,
    /// The median of pipelined / awaiting over the runs, each run's pair taken side by side.
    pipelining: f64,
    consumer: f64,
    raw_pipelined: f64,
    raw_awaiting: f64,
}

/// The same publishing done by a bare `WebSocketStream` writing pre-encoded publish frames and
/// counting acknowledgements, with `window` unacknowledged: what the server allows at best.
async fn raw_publish(server: &LocalServer, topic: &Topic, n: usize, window: usize) -> Duration {
    let url = Endpoint::producer(&server.ws_url(), topic, ProducerOptions::default())
        .expect("producer endpoint")
        .url();
    let mut ws = connect(url).await.expect("connect");
    let payload = bench_payload();
    let frame = |i: usize| {
        PulsarCodec::encode_outgoing(&Outgoing::Publish(
            Publish::new(payload.clone()).context(i.to_string()),
        ))
    };
    // Warm-up, as for the producer.
    let _ = run_windowed(&mut ws, 1, 1, frame).await;
    let (d, _) = run_windowed(&mut ws, n, window, frame).await;
    let _ = ws.close(None).await;
    d
}

async fn producer_section(server_rt: &Handle) -> ProducerResult {
    let server = server_rt
        .spawn(LocalServer::start())
        .await
        .expect("server task")
        .expect("local server");
    let (mut pipelined, mut awaiting) = (Vec::new(), Vec::new());
    for run in 0..PRODUCER_RUNS {
        let order = alternated(run, [true, false]);
        for pipelined_run in order {
            let topic = Topic::gdn(
                "bench",
                "_system",
                &format!("produce{run}{pipelined_run}"),
                false,
            )
            .expect("topic");
            let producer = start_producer(&server, &topic);
            // Connect (and warm up) before the clock starts.
            producer
                .send(Publish::new("warm-up"))
                .await
                .expect("warm-up");
            let (client0, server0) = (thread_cpu(), server_threads_cpu());
            let (d, n) = if pipelined_run {
                (
                    publish_pipelined(&producer, PIPELINED_MESSAGES).await,
                    PIPELINED_MESSAGES,
                )
            } else {
                (
                    publish_awaiting_each(&producer, AWAITED_MESSAGES).await,
                    AWAITED_MESSAGES,
                )
            };
            let client_cpu = cpu_since(client0);
            let server_cpu = server_threads_cpu() - server0;
            let rate = n as f64 / d.as_secs_f64();
            println!(
                "  producer run {run} {:31} {rate:>9.0} confirmed msg/s  ({:.3} s; client CPU {:.0}%, server CPU {:.0}%)",
                if pipelined_run {
                    format!("pipelined (window {PRODUCER_WINDOW}):")
                } else {
                    "awaiting each:".to_string()
                },
                d.as_secs_f64(),
                100.0 * Sample::busy(client_cpu, d),
                100.0 * Sample::busy(Some(server_cpu), d),
            );
            if pipelined_run {
                pipelined.push(rate);
            } else {
                awaiting.push(rate);
            }
            assert_eq!(producer.stats().reconnects, 0);
            producer.close().await.expect("close producer");
        }
    }

    // The bare reference: the server's own limits.
    let (mut raw_pipelined, mut raw_awaiting) = (Vec::new(), Vec::new());
    for run in 0..PRODUCER_RUNS {
        let order = alternated(run, [true, false]);
        for pipelined_run in order {
            let topic = Topic::gdn(
                "bench",
                "_system",
                &format!("raw{run}{pipelined_run}"),
                false,
            )
            .expect("topic");
            let (n, window) = if pipelined_run {
                (PIPELINED_MESSAGES, PRODUCER_WINDOW)
            } else {
                (AWAITED_MESSAGES, 1)
            };
            let server0 = server_threads_cpu();
            let d = raw_publish(&server, &topic, n, window).await;
            let server_cpu = server_threads_cpu() - server0;
            let rate = n as f64 / d.as_secs_f64();
            println!(
                "  bare client run {run} {:26} {rate:>9.0} acknowledged msg/s  ({:.3} s; server CPU {:.0}%)",
                if pipelined_run {
                    format!("pipelined (window {PRODUCER_WINDOW}):")
                } else {
                    "one at a time:".to_string()
                },
                d.as_secs_f64(),
                100.0 * Sample::busy(Some(server_cpu), d),
            );
            if pipelined_run {
                raw_pipelined.push(rate);
            } else {
                raw_awaiting.push(rate);
            }
        }
    }

    let mut consumer_rates = Vec::new();

    for run in 0..PRODUCER_RUNS {
        let topic = Topic::gdn("bench", "_system", &format!("consume{run}"), false).expect("topic");
        let producer = start_producer(&server, &topic);
        publish_pipelined(&producer, CONSUMER_MESSAGES).await;
        producer.close().await.expect("close producer");

        let acks_before = server.stats().acks_received;
        let options = ConsumerOptions::new("bench").initial_position(InitialPosition::Earliest);
        let endpoint =
            Endpoint::consumer(&server.ws_url(), &topic, options).expect("consumer endpoint");
        // The clock includes the subscription's connection (well under a millisecond here).
        let start = Instant::now();
        let mut consumer = Consumer::with_config(move || endpoint.connect(), quick_reconnect());
        let mut received = 0usize;
        while received < CONSUMER_MESSAGES {
            let m = consumer
                .next()
                .await
                .expect("consumer ended")
                .expect("message");
            consumer.ack(&m).await.expect("ack");
            received += 1;
        }
        consumer.flush().await.expect("flush acks");
        let d = start.elapsed();
        let rate = CONSUMER_MESSAGES as f64 / d.as_secs_f64();
        println!(
            "  consumer run {run} receive+ack:               {rate:>9.0} msg/s  ({:.3} s)",
            d.as_secs_f64()
        );
        consumer_rates.push(rate);
        consumer.close().await.expect("close consumer");
        // Every ack reached the server.
        let deadline = Instant::now() + Duration::from_secs(2);
        while server.stats().acks_received - acks_before < CONSUMER_MESSAGES as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            server.stats().acks_received - acks_before,
            CONSUMER_MESSAGES as u64,
            "acks lost"
        );
    }
    server.shutdown().await;
    ProducerResult {
        pipelining: median(
            &pipelined
                .iter()
                .zip(&awaiting)
                .map(|(p, a)| p / a)
                .collect::<Vec<_>>(),
        ),
        pipelined: median(&pipelined),
        awaiting: median(&awaiting),
        consumer: median(&consumer_rates),
        raw_pipelined: median(&raw_pipelined),
        raw_awaiting: median(&raw_awaiting),
    }
}

// ----- section 3: recovery ------------------------------------------------------------------

/// Records when it accepts each connection and when it drops one; sends `hello` right after each
/// handshake; drops every open connection (no close frame) when `drop_epoch` changes.
struct HelloServer {
    accepts: Mutex<Vec<Instant>>,
    drops: Mutex<Vec<Instant>>,
    drop_epoch: watch::Sender<u64>,
}

async fn hello_server(listener: TcpListener, shared: Arc<HelloServer>) {
    while let Ok((tcp, _)) = listener.accept().await {
        shared.accepts.lock().expect("lock").push(Instant::now());
        let _ = tcp.set_nodelay(true);
        let mut epoch = shared.drop_epoch.subscribe();
        epoch.borrow_and_update();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            if ws.send(Message::text("hello")).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = epoch.changed() => {
                        shared.drops.lock().expect("lock").push(Instant::now());
                        drop(ws);
                        return;
                    }
                    m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
                }
            }
        });
    }
}

struct Recovery {
    accept_to_msg: Vec<f64>,
    drop_to_msg: Vec<f64>,
}

fn expect_hello<E: Debug>(m: Option<Result<Message, E>>) {
    match m {
        Some(Ok(Message::Text(t))) if t.as_str() == "hello" => {}
        other => panic!("expected hello, got {other:?}"),
    }
}

/// `drops` drops, each followed by an immediate reconnect; the wrapper (`raw == false`) or a
/// bare client that reconnects as soon as it sees the drop.
async fn recovery(server_rt: &Handle, raw: bool) -> Recovery {
    let (listener, addr) = listener_on(server_rt).await;
    let shared = Arc::new(HelloServer {
        accepts: Mutex::new(Vec::new()),
        drops: Mutex::new(Vec::new()),
        drop_epoch: watch::Sender::new(0),
    });
    let server = server_rt.spawn(hello_server(listener, shared.clone()));
    let url = format!("ws://{addr}");
    let mut received = Vec::with_capacity(RECOVERY_DROPS + 1);
    let pause = Duration::from_millis(3);
    if raw {
        for k in 0..=RECOVERY_DROPS {
            let mut ws = connect(url.clone()).await.expect("connect");
            expect_hello(ws.next().await);
            received.push(Instant::now());
            if k == RECOVERY_DROPS {
                let _ = ws.close(None).await;
                break;
            }
            tokio::time::sleep(pause).await;
            shared.drop_epoch.send_modify(|e| *e += 1);
            while let Some(Ok(_)) = ws.next().await {}
        }
    } else {
        // A zero scheduled delay: the first reconnect after a drop is immediate (the default
        // spreads it over a window of up to 580 ms).
        let config = ReconnectConfig::builder()
            .min_delay(FIXED_DELAY)
            .first_reconnect_window(Duration::ZERO)
            .min_uptime(Duration::from_millis(1))
            .event_capacity(4 * RECOVERY_DROPS)
            .build()
            .expect("valid config");
        let mut ws = wrapper_stream(url, config);
        let mut reconnecting = ws.on_reconnecting();
        for k in 0..=RECOVERY_DROPS {
            expect_hello(ws.next().await);
            received.push(Instant::now());
            if k == RECOVERY_DROPS {
                break;
            }
            // Longer than min_uptime: the schedule starts over, so the reconnect is a first
            // reconnect, immediate with a zero window.
            tokio::time::sleep(pause).await;
            shared.drop_epoch.send_modify(|e| *e += 1);
        }
        let mut scheduled = 0;
        while let Ok(e) = reconnecting.try_recv() {
            assert_eq!(e.delay, Duration::ZERO, "a reconnect was not immediate");
            scheduled += 1;
        }
        assert_eq!(scheduled, RECOVERY_DROPS);
        let _ = ws.close().await;
    }
    server.abort();
    let accepts = shared.accepts.lock().expect("lock").clone();
    let drops = shared.drops.lock().expect("lock").clone();
    assert_eq!(accepts.len(), RECOVERY_DROPS + 1, "unexpected connections");
    let mut r = Recovery {
        accept_to_msg: Vec::new(),
        drop_to_msg: Vec::new(),
    };
    for k in 1..=RECOVERY_DROPS {
        r.accept_to_msg.push(ms(received[k] - accepts[k]));
        r.drop_to_msg.push(ms(received[k] - drops[k - 1]));
    }
    r
}

/// Delay accuracy: a server that drops every connection right after accepting it, a fixed
/// scheduled delay, and the time from each failure (when the delay is scheduled) to the next
/// factory call.
async fn delay_accuracy(server_rt: &Handle) -> Vec<f64> {
    let (listener, addr) = listener_on(server_rt).await;
    let server = server_rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let url = format!("ws://{addr}");
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let failures: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let done = Arc::new(Notify::new());
    // The first retry is immediate (a zero first-reconnect window), the others wait the fixed
    // delay: 2 more calls than that.
    let wanted_calls = ACCURACY_RECONNECTS + 2;
    let factory = {
        let (calls, failures, done) = (calls.clone(), failures.clone(), done.clone());
        move || {
            let n = {
                let mut c = calls.lock().expect("lock");
                c.push(Instant::now());
                c.len()
            };
            if n == wanted_calls {
                done.notify_one();
            }
            let (url, failures) = (url.clone(), failures.clone());
            async move {
                let r = connect(url).await;
                if r.is_err() {
                    failures.lock().expect("lock").push(Instant::now());
                }
                r
            }
        }
    };
    let config = ReconnectConfig::builder()
        .min_delay(FIXED_DELAY)
        .max_delay(FIXED_DELAY)
        .first_reconnect_window(Duration::ZERO)
        .grow_factor(1.0)
        .event_capacity(4 * wanted_calls)
        .build()
        .expect("valid config");
    let mut ws = ReconnectingStream::with_codec(factory, config, RawCodec);
    let mut reconnecting = ws.on_reconnecting();
    tokio::select! {
        m = ws.next() => panic!("the stream yielded {m:?}"),
        _ = done.notified() => {}
    }
    drop(ws);
    server.abort();
    let calls = calls.lock().expect("lock").clone();
    let failures = failures.lock().expect("lock").clone();
    let mut errors = Vec::new();
    let mut i = 0;
    while let Ok(event) = reconnecting.try_recv() {
        i += 1; // event i follows failure i-1 and precedes call i
        if event.delay.is_zero() || i >= calls.len() {
            continue;
        }
        let actual = calls[i] - failures[i - 1];
        errors.push(ms(actual) - ms(event.delay));
    }
    errors.truncate(ACCURACY_RECONNECTS);
    errors
}

// ----- section 4: allocations and memory -----------------------------------------------------

/// Completes the WebSocket handshake by hand, then reads and discards everything: a server that
/// allocates nothing per message, so the allocation counters see only the client.
async fn discard_server(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            let head_end = loop {
                match tcp.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    break p;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let Some(key) = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            }) else {
                return;
            };
            let accept =
                stream_websocket::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if tcp.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

fn publish_item(payload: &Bytes) -> Outgoing {
    Outgoing::Publish(Publish::new(payload.clone()))
}

struct Allocs {
    stream_calls: f64,
    stream_bytes: f64,
    encode_calls: f64,
    encode_bytes: f64,
}

async fn allocations(server_rt: &Handle) -> Allocs {
    let (listener, addr) = listener_on(server_rt).await;
    let server = server_rt.spawn(discard_server(listener));
    let payload = bench_payload();
    COUNTING.store(true, Ordering::Relaxed);

    // What encoding alone allocates.
    let (c0, b0) = alloc_counts();
    for _ in 0..ALLOC_MESSAGES {
        std::hint::black_box(PulsarCodec::encode_outgoing(&publish_item(&payload)));
    }
    let (c1, b1) = alloc_counts();

    let url = format!("ws://{addr}");
    let mut ws: ReconnectingStream<_, PulsarCodec> =
        ReconnectingStream::with_config(move || connect(url.clone()), ReconnectConfig::default());
    ws.flush().await.expect("connect");
    // Warm up: queues and buffers reach their working size.
    for _ in 0..ALLOC_MESSAGES / 10 {
        ws.feed(publish_item(&payload)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let (s0, sb0) = alloc_counts();
    for _ in 0..ALLOC_MESSAGES {
        ws.feed(publish_item(&payload)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let (s1, sb1) = alloc_counts();
    COUNTING.store(false, Ordering::Relaxed);
    assert_eq!(ws.connections(), 1);
    // The discarding server never answers a Close frame: just drop the connection.
    drop(ws);
    server.abort();
    let n = ALLOC_MESSAGES as f64;
    Allocs {
        stream_calls: (s1 - s0) as f64 / n,
        stream_bytes: (sb1 - sb0) as f64 / n,
        encode_calls: (c1 - c0) as f64 / n,
        encode_bytes: (b1 - b0) as f64 / n,
    }
}

/// The child process: a producer publishing 1 KiB messages (each its own allocation) through a
/// proxy that refuses every connection for `OUTAGE`. Prints `key value` lines.
async fn outage_child(server_rt: &Handle) {
    let server = server_rt
        .spawn(LocalServer::start())
        .await
        .expect("server task")
        .expect("local server");
    let target = server.addr();
    let proxy = server_rt
        .spawn(FaultProxy::start(target, 7))
        .await
        .expect("proxy task")
        .expect("proxy");
    let topic = Topic::gdn("bench", "_system", "outage", false).expect("topic");
    let endpoint =
        Endpoint::producer(&proxy.ws_url(), &topic, ProducerOptions::default()).expect("endpoint");
    let reconnect = ReconnectConfig::builder()
        .min_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1))
        .build()
        .expect("valid config");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = vm_rss_kib();

    let producer = Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(reconnect).max_pending(PRODUCER_WINDOW),
    );
    producer
        .send(Publish::new(vec![0u8; OUTAGE_MESSAGE_BYTES]))
        .await
        .expect("first message");
    let rss_connected = vm_rss_kib();

    // The outage: the live connection is reset, and every new one is refused.
    proxy.refuse(true);
    proxy.cut_all(Cut::Reset);
    let outage_start = Instant::now();

    // Keep publishing: each message a fresh 1 KiB allocation; receipts of the oldest are awaited
    // once the window is full (enqueue waits for room in the window anyway).
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let publisher = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut receipts = VecDeque::with_capacity(PRODUCER_WINDOW);
            let mut enqueued = 0u64;
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                if receipts.len() == PRODUCER_WINDOW {
                    let r: stream_websocket::gdn::Receipt = receipts.pop_front().expect("full");
                    tokio::select! {
                        res = r => { res.expect("confirmed"); }
                        _ = stop_rx.changed() => break,
                    }
                }
                let fill = (enqueued % 251) as u8;
                let msg = Publish::new(vec![fill; OUTAGE_MESSAGE_BYTES]);
                tokio::select! {
                    r = producer.enqueue(msg) => {
                        receipts.push_back(r.expect("enqueue"));
                        enqueued += 1;
                    }
                    _ = stop_rx.changed() => break,
                }
            }
            (receipts, enqueued)
        })
    };

    let mut peak = 0u64;
    let mut at_5s = 0u64;
    let mut peak_after_5s = 0u64;
    while outage_start.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rss = vm_rss_kib();
        peak = peak.max(rss);
        if outage_start.elapsed() >= Duration::from_secs(5) {
            if at_5s == 0 {
                at_5s = rss;
            }
            peak_after_5s = peak_after_5s.max(rss);
        }
    }
    let stats_in_outage = producer.stats();
    let reconnects_tried = proxy.accepted();

    // Recovery: everything in flight is confirmed.
    proxy.refuse(false);
    let back = Instant::now();
    stop_tx.send_replace(true);
    let (receipts, enqueued) = publisher.await.expect("publisher");
    for r in receipts {
        r.await.expect("confirmed after the outage");
    }
    let catch_up = back.elapsed();
    let stats = producer.stats();
    producer.close().await.expect("close producer");
    drop(proxy);
    server.shutdown().await;

    println!("rss_base_kib {rss_base}");
    println!("rss_connected_kib {rss_connected}");
    println!("rss_peak_kib {peak}");
    println!("rss_at_5s_kib {at_5s}");
    println!("rss_peak_after_5s_kib {peak_after_5s}");
    println!(
        "in_flight_during_outage {}",
        stats_in_outage.sent - stats_in_outage.confirmed
    );
    println!("peak_in_flight {}", stats.peak_in_flight);
    println!("enqueued {}", enqueued + 1);
    println!("confirmed {}", stats.confirmed);
    println!("attempts_refused {reconnects_tried}");
    println!("catch_up_ms {:.1}", ms(catch_up));
}

struct Outage {
    values: Vec<(String, f64)>,
}

impl Outage {
    fn get(&self, key: &str) -> f64 {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| *v)
    }
}

fn run_outage_child() -> Outage {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg("--outage-child")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the outage child");
    assert!(
        out.status.success(),
        "outage child failed: {:?}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Outage {
        values: text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect(),
    }
}

// ----- section 5: faults --------------------------------------------------------------------

/// Publishes `n` numbered messages (`numbered_payload`) with up to `PRODUCER_WINDOW` receipts
/// outstanding, each receipt awaited (a message that is not confirmed panics); returns when the
/// last is confirmed.
async fn publish_numbered(producer: &Producer, n: usize) -> Instant {
    let mut receipts = VecDeque::with_capacity(PRODUCER_WINDOW);
    for i in 0..n {
        if receipts.len() == PRODUCER_WINDOW {
            let r: stream_websocket::gdn::Receipt = receipts.pop_front().expect("full");
            r.await.expect("confirmed");
        }
        receipts.push_back(
            producer
                .enqueue(Publish::new(numbered_payload(i)))
                .await
                .expect("enqueue"),
        );
    }
    for r in receipts {
        r.await.expect("confirmed");
    }
    Instant::now()
}

/// A `PAYLOAD_BYTES` payload that starts with its sequence number.
fn numbered_payload(i: usize) -> Bytes {
    let mut v = format!("{i:08}").into_bytes();
    v.resize(PAYLOAD_BYTES, b'p');
    Bytes::from(v)
}

fn sequence_of(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload.get(..8)?).ok()?.parse().ok()
}

/// Receives and acknowledges until every one of the `n` numbered messages arrived; returns
/// when the last one did, and how many messages were handed over in all (more than `n` if one
/// was handed over twice).
async fn consume_numbered<F: Connect>(
    consumer: &mut Consumer<F>,
    n: usize,
    received: &std::cell::Cell<usize>,
) -> (Instant, usize) {
    let mut seen = vec![false; n];
    let (mut distinct, mut handed) = (0, 0);
    while distinct < n {
        let m = consumer
            .next()
            .await
            .expect("consumer ended")
            .expect("message");
        handed += 1;
        if let Some(i) = sequence_of(&m.payload).filter(|i| *i < n) {
            if !seen[i] {
                seen[i] = true;
                distinct += 1;
                received.set(distinct);
            }
        }
        consumer.ack(&m).await.expect("ack");
    }
    (Instant::now(), handed)
}

/// What a run's connections went through, from a client's lifecycle events.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    closes: u64,
    /// Closes of connections the peer made progress on (which start the schedule over).
    with_progress: u64,
    /// The backoff delays scheduled, summed.
    waited: Duration,
    /// Events missed by falling behind (none expected: the tally task reads as they come).
    lagged: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            closes: self.closes + o.closes,
            with_progress: self.with_progress + o.with_progress,
            waited: self.waited + o.waited,
            lagged: self.lagged + o.lagged,
        }
    }
}

/// Counts a client's closes and scheduled delays until `stop` turns true.
fn tally_events(
    client: &impl Listen,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Tally> {
    let mut events = client.events();
    tokio::spawn(async move {
        let mut t = Tally::default();
        let count = |t: &mut Tally, e: Result<Event, ListenerError>| match e {
            Ok(Event::Close(c)) => {
                t.closes += 1;
                t.with_progress += u64::from(c.progress);
            }
            Ok(Event::Reconnecting(r)) => t.waited += r.delay,
            Ok(_) => {}
            Err(ListenerError::Lagged(k)) => t.lagged += k,
            Err(_) => {}
        };
        loop {
            tokio::select! {
                e = events.recv() => {
                    let closed = matches!(e, Err(ListenerError::Closed));
                    count(&mut t, e);
                    if closed {
                        return t;
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        loop {
            match events.try_recv() {
                Err(ListenerError::Empty | ListenerError::Closed) => return t,
                e => count(&mut t, e),
            }
        }
    })
}

fn fast_delays() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .build()
        .expect("valid config")
}

/// Turns the faults of section 5 on or off for connections from now on.
fn set_faults(server: &LocalServer, on: bool) {
    if on {
        server.drop_after_frames_between(Some(FAULT_DROP_FRAMES));
        server.refuse_fraction(FAULT_REFUSE_FRACTION, 503);
    } else {
        server.drop_after_frames_between(None);
        server.refuse_fraction(0.0, 503);
    }
}

/// One run of a section 5 workload.
struct FaultRun {
    elapsed: Duration,
    /// Connections the server dropped on reaching their frame limit.
    drops: u64,
    /// Handshakes the server refused.
    refusals: u64,
    /// Connections opened after the first, producer and consumer together.
    reconnects: u64,
    /// Messages the producer wrote again after a drop.
    resent: u64,
    /// Messages the server stored beyond the `FAULT_MESSAGES` published (stored twice).
    stored_twice: u64,
    /// Messages the consumer handed over more than once (end to end only).
    handed_twice: u64,
    /// The clients' closes and scheduled delays.
    tally: Tally,
}

impl FaultRun {
    fn describe(&self) -> String {
        format!(
            "{:7.3} s  ({} drops, {} refusals; {} reconnects, {} closes with progress of {}, \
             {:.0} ms of backoff scheduled; {} re-sent, {} stored twice{})",
            self.elapsed.as_secs_f64(),
            self.drops,
            self.refusals,
            self.reconnects,
            self.tally.with_progress,
            self.tally.closes,
            ms(self.tally.waited),
            self.resent,
            self.stored_twice,
            if self.handed_twice > 0 {
                format!(", {} handed over twice", self.handed_twice)
            } else {
                String::new()
            }
        )
    }
}

/// A producer alone: `FAULT_MESSAGES` published pipelined, the clock running from the
/// producer's creation (its first connection included) to the last confirmation.
async fn fault_producer_run(
    server: &LocalServer,
    name: &str,
    config: ReconnectConfig,
    faulted: bool,
) -> FaultRun {
    let topic = Topic::gdn("bench", "_system", name, false).expect("topic");
    let endpoint = Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default())
        .expect("producer endpoint");
    set_faults(server, faulted);
    let before = server.stats();
    let start = Instant::now();
    let producer = Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(config).max_pending(PRODUCER_WINDOW),
    );
    let (stop, stop_rx) = watch::channel(false);
    let tally = tally_events(&producer, stop_rx);
    let done = tokio::time::timeout(FAULT_RUN_LIMIT, publish_numbered(&producer, FAULT_MESSAGES))
        .await
        .expect("the producer did not get every message confirmed in time");
    let elapsed = done - start;
    set_faults(server, false);
    stop.send_replace(true);
    let tally = tally.await.expect("tally task");
    let stats = producer.stats();
    producer.close().await.expect("close producer");
    let after = server.stats();
    assert_eq!(stats.confirmed, FAULT_MESSAGES as u64, "not all confirmed");
    let stored = server.stored(&topic.full_name());
    let mut seen = vec![false; FAULT_MESSAGES];
    for p in &stored {
        if let Some(i) = sequence_of(p).filter(|i| *i < FAULT_MESSAGES) {
            seen[i] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "a confirmed message is not stored");
    FaultRun {
        elapsed,
        drops: after.connections_dropped_after_frames - before.connections_dropped_after_frames,
        refusals: after.handshakes_refused - before.handshakes_refused,
        reconnects: stats.reconnects,
        resent: stats.resent,
        stored_twice: (stored.len() - FAULT_MESSAGES) as u64,
        handed_twice: 0,
        tally,
    }
}

/// End to end: a consumer subscribed first (not timed), with this `receiverQueueSize` (`None`:
/// the server's default, 1000), then a producer publishing `FAULT_MESSAGES` pipelined; the
/// clock runs from the producer's creation until the consumer received (and acknowledged)
/// every message and the producer had every one confirmed. `Err` describes a run that did not
/// end within `limit`.
async fn fault_e2e_run(
    server: &LocalServer,
    name: &str,
    config: ReconnectConfig,
    faulted: bool,
    receiver_queue: Option<u32>,
    limit: Duration,
) -> Result<FaultRun, String> {
    let topic = Topic::gdn("bench", "_system", name, false).expect("topic");
    set_faults(server, faulted);
    let before = server.stats();
    let mut options = ConsumerOptions::new("bench");
    if let Some(q) = receiver_queue {
        options = options.receiver_queue_size(q);
    }
    let c_endpoint =
        Endpoint::consumer(&server.ws_url(), &topic, options).expect("consumer endpoint");
    let mut consumer = Consumer::with_config(move || c_endpoint.connect(), config.clone());
    let (stop, stop_rx) = watch::channel(false);
    let c_tally = tally_events(&consumer, stop_rx.clone());
    tokio::time::timeout(FAULT_RUN_LIMIT, consumer.ready())
        .await
        .expect("the consumer did not subscribe in time")
        .expect("subscribed");
    let p_endpoint = Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default())
        .expect("producer endpoint");
    let start = Instant::now();
    let producer = Producer::with_config(
        move || p_endpoint.connect(),
        ProducerConfig::new(config).max_pending(PRODUCER_WINDOW),
    );
    let p_tally = tally_events(&producer, stop_rx);
    let received = std::cell::Cell::new(0);
    let work = async {
        tokio::join!(
            publish_numbered(&producer, FAULT_MESSAGES),
            consume_numbered(&mut consumer, FAULT_MESSAGES, &received)
        )
    };
    let Ok((published, (consumed, handed))) = tokio::time::timeout(limit, work).await else {
        set_faults(server, false);
        let (p, c, after) = (producer.stats(), consumer.stats(), server.stats());
        let stalled = format!(
            "after {} s the consumer had received {} of {FAULT_MESSAGES} ({} redeliveries of \
             messages it had acknowledged, {} connections; the server got {} acks for {} \
             deliveries); the producer had {} confirmed",
            limit.as_secs(),
            received.get(),
            c.skipped,
            c.connections,
            after.acks_received - before.acks_received,
            after.messages_delivered - before.messages_delivered,
            p.confirmed
        );
        stop.send_replace(true);
        drop(consumer);
        let _ = producer.close().await;
        return Err(stalled);
    };
    let elapsed = published.max(consumed) - start;
    set_faults(server, false);
    stop.send_replace(true);
    let tally = p_tally.await.expect("tally task") + c_tally.await.expect("tally task");
    let p_stats = producer.stats();
    let c_stats = consumer.stats();
    producer.close().await.expect("close producer");
    // Acknowledgements still queued are written before the close (faults are off now).
    let _ = consumer.close().await;
    let after = server.stats();
    assert_eq!(
        p_stats.confirmed, FAULT_MESSAGES as u64,
        "not all confirmed"
    );
    let stored = server.stored(&topic.full_name()).len();
    Ok(FaultRun {
        elapsed,
        drops: after.connections_dropped_after_frames - before.connections_dropped_after_frames,
        refusals: after.handshakes_refused - before.handshakes_refused,
        reconnects: p_stats.reconnects + c_stats.reconnects,
        resent: p_stats.resent,
        stored_twice: (stored - FAULT_MESSAGES) as u64,
        handed_twice: (handed - FAULT_MESSAGES) as u64,
        tally,
    })
}

/// Alternated faulted / fault-free runs of one workload and configuration.
struct FaultSeries {
    faulted: Vec<FaultRun>,
    clean: Vec<FaultRun>,
    /// Faulted time / fault-free time, per pair.
    ratios: Vec<f64>,
}

impl FaultSeries {
    fn ratio(&self) -> f64 {
        median(&self.ratios)
    }

    fn median_ms(runs: &[FaultRun]) -> f64 {
        median(&runs.iter().map(|r| ms(r.elapsed)).collect::<Vec<_>>())
    }

    /// The row's result: the ratio, the medians, and what the faulted runs paid for.
    fn result(&self) -> String {
        let range = |f: fn(&FaultRun) -> u64| {
            let v: Vec<u64> = self.faulted.iter().map(f).collect();
            let (lo, hi) = (v.iter().min().copied(), v.iter().max().copied());
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo == hi => format!("{lo}"),
                (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
                _ => "-".to_string(),
            }
        };
        let ratio = match median_interval(&self.ratios) {
            Some(_) => ratio_text(self.ratio(), &self.ratios),
            None => {
                let s = sorted(&self.ratios);
                format!(
                    "{:.2} (pairs {:.2}-{:.2})",
                    self.ratio(),
                    s.first().copied().unwrap_or(f64::NAN),
                    s.last().copied().unwrap_or(f64::NAN)
                )
            }
        };
        let closes: Vec<f64> = self.faulted.iter().map(|r| r.tally.closes as f64).collect();
        let no_progress: Vec<f64> = self
            .faulted
            .iter()
            .map(|r| (r.tally.closes - r.tally.with_progress) as f64)
            .collect();
        let waited: Vec<f64> = self.faulted.iter().map(|r| ms(r.tally.waited)).collect();
        format!(
            "{ratio}; median {:.0} ms faulted vs {:.1} ms fault-free; per faulted run {} drops, {} refusals \
             (medians: {:.1} closes, {:.1} without progress, {:.0} ms of backoff scheduled)",
            Self::median_ms(&self.faulted),
            Self::median_ms(&self.clean),
            range(|r| r.drops),
            range(|r| r.refusals),
            median(&closes),
            median(&no_progress),
            median(&waited),
        )
    }
}

async fn fault_series(
    server: &LocalServer,
    e2e: bool,
    label: &str,
    tag: &str,
    config: &ReconnectConfig,
    pairs: usize,
) -> FaultSeries {
    let mut series = FaultSeries {
        faulted: Vec::new(),
        clean: Vec::new(),
        ratios: Vec::new(),
    };
    for run in 0..pairs {
        let mut times = [Duration::ZERO; 2];
        for faulted in alternated(run, [true, false]) {
            let name = format!("faults{tag}{run}{}", if faulted { "x" } else { "o" });
            let r = if e2e {
                let queue = Some(FAULT_RECEIVER_QUEUE);
                fault_e2e_run(
                    server,
                    &name,
                    config.clone(),
                    faulted,
                    queue,
                    FAULT_RUN_LIMIT,
                )
                .await
                .unwrap_or_else(|e| panic!("messages were lost: {e}"))
            } else {
                fault_producer_run(server, &name, config.clone(), faulted).await
            };
            println!(
                "  {label} run {run} {:10} {}",
                if faulted { "faulted:" } else { "fault-free:" },
                r.describe()
            );
            times[faulted as usize] = r.elapsed;
            if faulted {
                series.faulted.push(r);
            } else {
                series.clean.push(r);
            }
        }
        series
            .ratios
            .push(times[1].as_secs_f64() / times[0].as_secs_f64());
    }
    series
}

/// PASS or FAIL against a goal, with "(stretch met)" when a stretch goal is met too.
fn goal_verdict(ratio: f64, goal: f64, stretch: Option<f64>) -> &'static str {
    match stretch {
        Some(s) if ratio <= s => "PASS (stretch met)",
        _ if ratio <= goal => "PASS",
        _ => "FAIL",
    }
}

// ----- section 6: a fleet of idle streams ---------------------------------------------------

/// The state of the fleet server (the child process `--fleet-server-child`).
struct FleetServer {
    /// Handshake arrivals are reported relative to this: the last `drop` or `mark`.
    t0: Mutex<Instant>,
    /// Every handshake: when its TCP connection was accepted, and whether it was upgraded.
    handshakes: Mutex<Vec<(Instant, bool)>>,
    /// Every handshake is answered 503 until then.
    refuse_until: Mutex<Option<Instant>>,
    /// Upgrade, then drop the connection at once.
    accept_and_drop: AtomicBool,
    /// WebSocket connections open now.
    open: AtomicU64,
    /// When each connection dropped by the last `drop` was closed.
    closed: Mutex<Vec<Instant>>,
    /// Bumped by `drop`: every open connection is dropped (no close frame).
    drop_epoch: watch::Sender<u64>,
}

impl FleetServer {
    fn refusing(&self) -> bool {
        self.refuse_until
            .lock()
            .expect("lock")
            .is_some_and(|until| Instant::now() < until)
    }
}

async fn fleet_accept(listener: TcpListener, shared: Arc<FleetServer>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let accepted_at = Instant::now();
                let mut epoch = shared.drop_epoch.subscribe();
                epoch.borrow_and_update();
                tokio::spawn(fleet_conn(tcp, accepted_at, shared.clone(), epoch));
            }
            // Out of file descriptors and the like: do not spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn fleet_conn(
    tcp: tokio::net::TcpStream,
    accepted_at: Instant,
    shared: Arc<FleetServer>,
    mut epoch: watch::Receiver<u64>,
) {
    let _ = tcp.set_nodelay(true);
    // The callback's signature is tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |_: &HsRequest, resp: HsResponse| -> Result<HsResponse, HsErrorResponse> {
        if shared.refusing() {
            let mut refusal = HsErrorResponse::new(Some("try again later".to_string()));
            *refusal.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Err(refusal)
        } else {
            Ok(resp)
        }
    };
    // A small read buffer (tungstenite's default is 128 KiB): with the default, closing 10,000
    // connections at once took the server a second of freeing buffers, so the "drop at once"
    // was spread over that second.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let handshake = tokio::select! {
        r = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)) => r,
        _ = epoch.changed() => return,
    };
    shared
        .handshakes
        .lock()
        .expect("lock")
        .push((accepted_at, handshake.is_ok()));
    let Ok(mut ws) = handshake else {
        return;
    };
    if shared.accept_and_drop.load(Ordering::Relaxed) {
        return;
    }
    shared.open.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = epoch.changed() => {
                drop(ws);
                shared.open.fetch_sub(1, Ordering::Relaxed);
                shared.closed.lock().expect("lock").push(Instant::now());
                return;
            }
            m = ws.next() => if !matches!(m, Some(Ok(_))) { break },
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
}

/// The child process `--fleet-server-child`: a plain tokio-tungstenite server on 127.0.0.1
/// (accepting on the server runtime), which prints `port <port>` and then obeys lines on stdin:
/// `drop [ms]` (refuse every handshake with 503 for `ms`, if given, and drop every connection;
/// handshake times count from here; answers `dropped_at <ns since the Unix epoch>` and `ok`), `mark` (count handshake times from here), `refuse <ms>`,
/// `accept-and-drop`, `open` (answers `open <n>`), `report` (answers `closed <connections
/// dropped by the last drop>`, `last_close_ms <when the last of them was closed>`,
/// `handshakes <k>`, then
/// `h <ms since the drop or mark> <1 upgraded | 0 refused>` per handshake, then `end`), `quit`.
/// Commands without an answer of their own answer `ok`. Ends at `quit` or at the end of stdin.
async fn fleet_server_child(server_rt: &Handle) {
    let listener = server_rt
        .spawn(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(FLEET_BACKLOG)
        })
        .await
        .expect("bind task")
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let shared = Arc::new(FleetServer {
        t0: Mutex::new(Instant::now()),
        handshakes: Mutex::new(Vec::new()),
        refuse_until: Mutex::new(None),
        accept_and_drop: AtomicBool::new(false),
        open: AtomicU64::new(0),
        closed: Mutex::new(Vec::new()),
        drop_epoch: watch::Sender::new(0),
    });
    let server = server_rt.spawn(fleet_accept(listener, shared.clone()));
    println!("port {port}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        let arg = |w: Option<&str>| w.and_then(|v| v.parse::<u64>().ok());
        match words.next() {
            Some("drop") => {
                let now = Instant::now();
                if let Some(refuse) = arg(words.next()) {
                    *shared.refuse_until.lock().expect("lock") =
                        Some(now + Duration::from_millis(refuse));
                }
                *shared.t0.lock().expect("lock") = now;
                shared.handshakes.lock().expect("lock").clear();
                shared.closed.lock().expect("lock").clear();
                let wall = unix_nanos();
                shared.drop_epoch.send_modify(|e| *e += 1);
                println!("dropped_at {wall}");
                println!("ok");
            }
            Some("mark") => {
                *shared.t0.lock().expect("lock") = Instant::now();
                shared.handshakes.lock().expect("lock").clear();
                println!("ok");
            }
            Some("refuse") => {
                let refuse = Duration::from_millis(arg(words.next()).unwrap_or(0));
                *shared.refuse_until.lock().expect("lock") = Some(Instant::now() + refuse);
                println!("ok");
            }
            Some("accept-and-drop") => {
                shared.accept_and_drop.store(true, Ordering::Relaxed);
                println!("ok");
            }
            Some("open") => println!("open {}", shared.open.load(Ordering::Relaxed)),
            Some("report") => {
                let t0 = *shared.t0.lock().expect("lock");
                let handshakes = shared.handshakes.lock().expect("lock").clone();
                let since: Vec<(f64, bool)> = handshakes
                    .iter()
                    .filter_map(|(at, ok)| Some((ms(at.checked_duration_since(t0)?), *ok)))
                    .collect();
                let closed = shared.closed.lock().expect("lock").clone();
                let last_close = closed
                    .iter()
                    .filter_map(|at| at.checked_duration_since(t0))
                    .max()
                    .unwrap_or_default();
                let mut out = format!(
                    "closed {}\nlast_close_ms {:.3}\nhandshakes {}\n",
                    closed.len(),
                    ms(last_close),
                    since.len()
                );
                for (t, ok) in since {
                    out.push_str(&format!("h {t:.3} {}\n", u8::from(ok)));
                }
                out.push_str("end");
                println!("{out}");
            }
            Some("quit") => break,
            _ => println!("error unknown command: {line}"),
        }
    }
    server.abort();
}

/// The wall clock in ns since the Unix epoch: comparable between the processes of one machine.
fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU time of this whole process, all threads (from /proc/self/task/*/schedstat).
fn process_cpu() -> Duration {
    let mut total = Duration::ZERO;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in dir.flatten() {
        if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += Duration::from_nanos(ns);
        }
    }
    total
}

/// The soft limit on open files of this process (from /proc/self/limits).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The child process `--fleet-client-child <kind> <n> <port>`: opens `n` idle connections to
/// the fleet server, `FLEET_CONNECT_AT_ONCE` at a time, each driven by a task of its own, and
/// prints `base_kib`, `rss_kib` (a second after the last one opened), `opened`, `failed`,
/// `connect_ms`, then `ready`. `kind`: `wrapper` (`ReconnectingStream<_, RawCodec>`, default
/// configuration, polled by `next()`), `wrapper-zero` (the same with
/// `first_reconnect_window(Duration::ZERO)`) or `raw` (bare `WebSocketStream`s, each read by a
/// task). Then obeys stdin: `cpu <ms>` (answers `cpu_ns <CPU time of the process over that
/// long>` and `done`), `record` (start noting the wall-clock time, in ns since the Unix epoch,
/// of every connection attempt of the streams; answers `ok`), `attempts` (stop, and answer
/// `a <ns>` per attempt, then `end`) and `quit` (or the end of stdin).
async fn fleet_client_child(kind: &str, n: usize, port: u16) {
    let url = format!("ws://127.0.0.1:{port}");
    // The wall-clock times of the streams' connection attempts, while recording.
    let attempts: Arc<(AtomicBool, Mutex<Vec<u64>>)> = Arc::default();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = vm_rss_kib();
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(FLEET_CONNECT_AT_ONCE));
    let start = Instant::now();
    for _ in 0..n {
        let (url, opened, failed, permits) =
            (url.clone(), opened.clone(), failed.clone(), permits.clone());
        if kind == "raw" {
            tokio::spawn(async move {
                let ws = {
                    let _permit = permits.acquire().await.expect("semaphore");
                    connect(url).await
                };
                let Ok(mut ws) = ws else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                while let Some(Ok(_)) = ws.next().await {}
            });
        } else {
            let config = if kind == "wrapper-zero" {
                ReconnectConfig::builder()
                    .first_reconnect_window(Duration::ZERO)
                    .build()
                    .expect("valid config")
            } else {
                ReconnectConfig::default()
            };
            let attempts = attempts.clone();
            tokio::spawn(async move {
                // As `wrapper_stream`, noting when each attempt starts while recording.
                let factory = move || {
                    if attempts.0.load(Ordering::Relaxed) {
                        attempts.1.lock().expect("lock").push(unix_nanos());
                    }
                    connect(url.clone())
                };
                let mut ws = ReconnectingStream::with_codec(factory, config, RawCodec);
                {
                    let _permit = permits.acquire().await.expect("semaphore");
                    if ws.ready().await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                opened.fetch_add(1, Ordering::Relaxed);
                while ws.next().await.is_some() {}
            });
        }
    }
    let deadline = Instant::now() + FLEET_OPEN_LIMIT;
    while opened.load(Ordering::Relaxed) < n as u64
        && failed.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_time = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = vm_rss_kib();
    println!("base_kib {base}");
    println!("rss_kib {rss}");
    println!("opened {}", opened.load(Ordering::Relaxed));
    println!("failed {}", failed.load(Ordering::Relaxed));
    println!("connect_ms {:.0}", ms(connect_time));
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                let period = Duration::from_millis(
                    words.next().and_then(|v| v.parse().ok()).unwrap_or(1000),
                );
                let cpu0 = process_cpu();
                tokio::time::sleep(period).await;
                let cpu = process_cpu().saturating_sub(cpu0);
                println!("cpu_ns {}", cpu.as_nanos());
                println!("done");
            }
            Some("record") => {
                attempts.1.lock().expect("lock").clear();
                attempts.0.store(true, Ordering::Relaxed);
                println!("ok");
            }
            Some("attempts") => {
                attempts.0.store(false, Ordering::Relaxed);
                let mut out = String::new();
                for t in attempts.1.lock().expect("lock").iter() {
                    out.push_str(&format!("a {t}\n"));
                }
                out.push_str("end");
                println!("{out}");
            }
            Some("quit") => break,
            _ => println!("error unknown command: {line}"),
        }
    }
}

/// A child process of this program, talked to over its stdin and stdout, one line at a time.
/// Killed if dropped before it ends.
struct ChildProc {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl ChildProc {
    fn spawn(args: &[String]) -> ChildProc {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start a child process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        ChildProc {
            child,
            stdin,
            stdout,
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to child");
        stdin.flush().await.expect("flush to child");
    }

    /// The lines up to (not including) `end`; `None` if the child ended or took longer than
    /// `limit`.
    async fn read_until(&mut self, end: &str, limit: Duration) -> Option<Vec<String>> {
        let read = async {
            let mut lines = Vec::new();
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(l)) if l == end => return Some(lines),
                    Ok(Some(l)) => lines.push(l),
                    _ => return None,
                }
            }
        };
        tokio::time::timeout(limit, read).await.ok().flatten()
    }

    /// Sends `cmd` and returns the one line it answers.
    async fn ask_line(&mut self, cmd: &str) -> String {
        self.send(cmd).await;
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line()).await;
        match line {
            Ok(Ok(Some(l))) => l,
            _ => panic!("no answer to {cmd:?} from a child process"),
        }
    }

    /// Sends `cmd` and returns the answer up to the line `end`.
    async fn ask(&mut self, cmd: &str, end: &str) -> Vec<String> {
        self.send(cmd).await;
        self.read_until(end, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no answer to {cmd:?} from a child process"))
    }

    /// Asks it to quit; kills it if it has not ended 10 s later.
    async fn finish(mut self) {
        if let Some(stdin) = &mut self.stdin {
            let _ = stdin.write_all(b"quit\n").await;
        }
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The value of the line `key value` among `lines`.
fn value_of(lines: &[String], key: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What a fleet client child reported once its connections were open.
struct FleetClient {
    proc: ChildProc,
    /// Resident memory over the baseline, per connection, in KiB.
    rss_per_conn_kib: f64,
    rss_total_kib: f64,
    base_kib: f64,
    connect_ms: f64,
}

/// Starts a fleet client child and waits until its `n` connections are open; `Err` if they
/// could not all be opened.
async fn fleet_client(kind: &str, n: usize, port: u16) -> Result<FleetClient, String> {
    let mut proc = ChildProc::spawn(&[
        "--fleet-client-child".to_string(),
        kind.to_string(),
        n.to_string(),
        port.to_string(),
    ]);
    let Some(lines) = proc
        .read_until("ready", FLEET_OPEN_LIMIT + Duration::from_secs(30))
        .await
    else {
        proc.finish().await;
        return Err("the client process ended early".to_string());
    };
    let opened = value_of(&lines, "opened").unwrap_or(0.0);
    let failed = value_of(&lines, "failed").unwrap_or(0.0);
    if opened < n as f64 {
        proc.finish().await;
        return Err(format!("{opened} of {n} opened, {failed} failed"));
    }
    let base = value_of(&lines, "base_kib").unwrap_or(f64::NAN);
    let rss = value_of(&lines, "rss_kib").unwrap_or(f64::NAN);
    Ok(FleetClient {
        proc,
        rss_per_conn_kib: (rss - base) / n as f64,
        rss_total_kib: rss - base,
        base_kib: base,
        connect_ms: value_of(&lines, "connect_ms").unwrap_or(f64::NAN),
    })
}

/// Starts a fleet server child; returns it and its port.
async fn fleet_server() -> (ChildProc, u16) {
    let mut server = ChildProc::spawn(&["--fleet-server-child".to_string()]);
    let line = server
        .stdout
        .next_line()
        .await
        .ok()
        .flatten()
        .expect("the fleet server's port");
    let port = line
        .strip_prefix("port ")
        .and_then(|p| p.trim().parse().ok())
        .expect("a port line");
    (server, port)
}

/// The handshakes the server saw after a drop: (ms since the drop, upgraded).
/// The handshakes the server saw after a drop (or mark): (ms since, upgraded); and when it
/// had closed the last connection the drop dropped (ms since).
async fn handshake_report(server: &mut ChildProc) -> (Vec<(f64, bool)>, f64) {
    let lines = server.ask("report", "end").await;
    let last_close = value_of(&lines, "last_close_ms").unwrap_or(f64::NAN);
    let handshakes = lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "h").then_some(())?;
            let t: f64 = w.next()?.parse().ok()?;
            Some((t, w.next()? == "1"))
        })
        .collect();
    (handshakes, last_close)
}

/// Events per `FLEET_BIN` from the drop, against the size of the fleet.
struct Histogram {
    n: usize,
    bins: Vec<usize>,
}

impl Histogram {
    /// From times in ms since the drop (earlier ones are left out).
    fn of(n: usize, times: impl IntoIterator<Item = f64>) -> Histogram {
        let bin_ms = ms(FLEET_BIN);
        let mut bins = Vec::new();
        for t in times.into_iter().filter(|t| *t >= 0.0) {
            let bin = (t / bin_ms) as usize;
            if bins.len() <= bin {
                bins.resize(bin + 1, 0);
            }
            bins[bin] += 1;
        }
        Histogram { n, bins }
    }

    fn share(&self, count: usize) -> f64 {
        count as f64 / self.n as f64
    }

    /// The fullest bin: (index, share of the fleet).
    fn peak(&self) -> (usize, f64) {
        let (i, c) = self
            .bins
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|(i, c)| (*c, std::cmp::Reverse(*i)))
            .unwrap_or((0, 0));
        (i, self.share(c))
    }

    fn first(&self) -> f64 {
        self.share(self.bins.first().copied().unwrap_or(0))
    }

    /// "peak 17.2% (200-300 ms), first 3.1%": the peak bin and the first.
    fn summary(&self) -> String {
        let (i, peak) = self.peak();
        let bin_ms = FLEET_BIN.as_millis() as usize;
        format!(
            "peak {:.1}% ({}-{} ms), first {:.1}%",
            100.0 * peak,
            i * bin_ms,
            (i + 1) * bin_ms,
            100.0 * self.first()
        )
    }

    /// The first second in 100 ms bins (% of the fleet), then whole seconds (counts).
    fn text(&self) -> String {
        let per_second = (1000.0 / ms(FLEET_BIN)).round() as usize;
        let first: Vec<String> = self
            .bins
            .iter()
            .take(per_second)
            .map(|c| format!("{:.1}", 100.0 * self.share(*c)))
            .collect();
        let seconds: Vec<String> = self
            .bins
            .chunks(per_second)
            .enumerate()
            .skip(1)
            .map(|(s, c)| format!("{s}-{}s {}", s + 1, c.iter().sum::<usize>()))
            .collect();
        format!(
            "first second per 100 ms (% of the fleet): {}; then per second: {}",
            first.join(" "),
            seconds.join(", ")
        )
    }
}

struct MassDrop {
    /// When the server had closed the last connection of the fleet, ms after the drop.
    last_close_ms: f64,
    /// Handshakes as they reached the server (TCP accept), by the server's clock.
    arrivals: Histogram,
    /// Connection attempts as the streams started them (the factory call), by the client's
    /// wall clock against the server's at the drop.
    attempts: Histogram,
    refused: usize,
    upgraded: usize,
    /// From the server's return to the `n`-th upgrade after the drop, if all came back.
    back: Option<Duration>,
}

impl MassDrop {
    /// The larger of the two peak shares.
    fn peak(&self) -> f64 {
        self.arrivals.peak().1.max(self.attempts.peak().1)
    }

    fn print(&self, what: &str) {
        println!(
            "  mass drop, {what}: the server closed the last connection {:.0} ms after the drop; \
             {} handshakes reached it ({} refused, {} upgraded); {} attempts",
            self.last_close_ms,
            self.refused + self.upgraded,
            self.refused,
            self.upgraded,
            self.attempts.bins.iter().sum::<usize>()
        );
        println!("    arrivals at the server: {}", self.arrivals.text());
        println!("    attempts by the clients: {}", self.attempts.text());
    }
}

/// Drops every connection of the fleet at once and refuses handshakes for `FLEET_REFUSE`, then
/// waits until all `n` are open again (at most `FLEET_BACK_LIMIT` after the server's return).
/// `client` notes its streams' connection attempts meanwhile.
async fn mass_drop(server: &mut ChildProc, client: &mut ChildProc, n: usize) -> MassDrop {
    client.ask("record", "ok").await;
    let answer = server
        .ask(&format!("drop {}", FLEET_REFUSE.as_millis()), "ok")
        .await;
    let dropped_at = value_of(&answer, "dropped_at").expect("the drop's time") as u64;
    let dropped = Instant::now();
    tokio::time::sleep(FLEET_REFUSE).await;
    while dropped.elapsed() < FLEET_REFUSE + FLEET_BACK_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open = server.ask_line("open").await;
        if value_of(&[open], "open").is_some_and(|o| o >= n as f64) {
            break;
        }
    }
    let (handshakes, last_close_ms) = handshake_report(server).await;
    let attempts: Vec<f64> = client
        .ask("attempts", "end")
        .await
        .iter()
        .filter_map(|l| l.strip_prefix("a ")?.trim().parse::<u64>().ok())
        .map(|t| (t as f64 - dropped_at as f64) / 1e6)
        .collect();
    let mut upgrades: Vec<f64> = handshakes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .collect();
    upgrades.sort_by(|a, b| a.total_cmp(b));
    let back = (upgrades.len() >= n)
        .then(|| Duration::from_secs_f64(((upgrades[n - 1] - ms(FLEET_REFUSE)) / 1e3).max(0.0)));
    MassDrop {
        last_close_ms,
        arrivals: Histogram::of(n, handshakes.iter().map(|(t, _)| *t)),
        attempts: Histogram::of(n, attempts),
        refused: handshakes.len() - upgrades.len(),
        upgraded: upgrades.len(),
        back,
    }
}

/// How many handshakes a client makes within `within` against a server that drops every
/// connection at once, by the schedule: the first at 0, then a first reconnect `first` later,
/// then the minimum delay growing by the factor up to the maximum.
fn scheduled_handshakes(
    config: &ReconnectConfig,
    min: Duration,
    first: Duration,
    within: Duration,
) -> usize {
    let policy = config.backoff();
    let (mut t, mut count, mut retry) = (Duration::ZERO, 0, 0u32);
    while t < within {
        count += 1;
        retry += 1;
        t += if retry == 1 {
            first
        } else {
            min.mul_f64(policy.grow_factor().powi(retry as i32 - 2))
                .min(policy.max_delay())
        };
    }
    count
}

struct FleetResult {
    n: usize,
    wrapper_rss_kib: f64,
    wrapper_total_kib: f64,
    wrapper_base_kib: f64,
    wrapper_connect_ms: f64,
    raw_rss_kib: f64,
    raw_total_kib: f64,
    raw_base_kib: f64,
    raw_connect_ms: f64,
    raw_n: usize,
    cpu: Duration,
    spread: MassDrop,
    zero: MassDrop,
    /// The same with `FLEET_N_FALLBACK` streams, if `n` is larger: default, zero window.
    small: Option<(MassDrop, MassDrop)>,
    /// Handshakes of the lone client within `HPM_FIRST` and within `HPM_PERIOD`.
    hpm_first: usize,
    hpm_all: usize,
    /// What its schedule allows in those periods: (fewest, most), over the draw of its first
    /// reconnect.
    hpm_first_expected: (usize, usize),
    hpm_all_expected: (usize, usize),
    hpm_min_delay: Duration,
}

/// Opens a fleet client of this kind with `n` connections, falling back to
/// `FLEET_N_FALLBACK` connections (and lowering `n` for what follows) if they cannot all open.
async fn open_fleet(kind: &str, n: &mut usize, port: u16) -> FleetClient {
    let what = if kind == "raw" {
        "bare connections"
    } else {
        "streams"
    };
    loop {
        match fleet_client(kind, *n, port).await {
            Ok(c) => {
                println!(
                    "  {n} {kind} {what} open in {:.0} ms; RSS +{:.1} MiB over a {:.1} MiB base: \
                     {:.1} KiB each",
                    c.connect_ms,
                    c.rss_total_kib / 1024.0,
                    c.base_kib / 1024.0,
                    c.rss_per_conn_kib
                );
                return c;
            }
            Err(e) if *n > FLEET_N_FALLBACK => {
                println!("  opening {n} {what} failed ({e}); falling back to {FLEET_N_FALLBACK}");
                *n = FLEET_N_FALLBACK;
            }
            Err(e) => panic!("opening {n} {kind} {what} failed: {e}"),
        }
    }
}

async fn fleet_section() -> FleetResult {
    // The handshake rate of one default client against a server that accepts and drops every
    // connection at once: in the background, for `HPM_PERIOD`, while the rest runs.
    let (mut hpm_server, hpm_port) = fleet_server().await;
    hpm_server.ask("accept-and-drop", "ok").await;
    let hpm_config = ReconnectConfig::default();
    let mut hpm_client = wrapper_stream(format!("ws://127.0.0.1:{hpm_port}"), hpm_config.clone());
    let hpm_min_delay = hpm_client.min_delay();
    let window = hpm_config
        .backoff()
        .first_reconnect_window()
        .min(hpm_min_delay);
    let expected = |within| {
        (
            scheduled_handshakes(&hpm_config, hpm_min_delay, window, within),
            scheduled_handshakes(&hpm_config, hpm_min_delay, Duration::ZERO, within),
        )
    };
    hpm_server.ask("mark", "ok").await;
    let hpm_start = Instant::now();
    let hpm_task = tokio::spawn(async move { while hpm_client.next().await.is_some() {} });
    println!(
        "  handshake rate: one default client (min delay {:.2} s) against a server that accepts and \
         drops at once, {} s in the background",
        hpm_min_delay.as_secs_f64(),
        HPM_PERIOD.as_secs()
    );

    let (mut server, port) = fleet_server().await;
    let limit = open_file_limit();
    let mut n = if limit.is_some_and(|l| l >= FLEET_N as u64 + FLEET_FD_MARGIN) {
        FLEET_N
    } else {
        FLEET_N_FALLBACK
    };
    println!(
        "  fleet: {n} connections (open file limit {}), server in a child process, each client \
         kind in a fresh child process",
        limit.map_or("unknown".to_string(), |l| l.to_string())
    );
    let raw = open_fleet("raw", &mut n, port).await;
    let raw_n = n;
    raw.proc.finish().await;
    let mut wrapper = open_fleet("wrapper", &mut n, port).await;
    let ready = Instant::now();
    let cpu_lines = wrapper
        .proc
        .ask(&format!("cpu {}", FLEET_CPU_PERIOD.as_millis()), "done")
        .await;
    let cpu = Duration::from_nanos(value_of(&cpu_lines, "cpu_ns").unwrap_or(f64::NAN) as u64);
    println!(
        "  idle for {} s: {:.0} ms of CPU in the client process",
        FLEET_CPU_PERIOD.as_secs(),
        ms(cpu)
    );
    // Every stream has been up long enough for `min_uptime` to restart its schedule.
    tokio::time::sleep_until((ready + FLEET_UP_BEFORE_DROP).into()).await;
    let spread = mass_drop(&mut server, &mut wrapper.proc, n).await;
    spread.print("default config");
    wrapper.proc.finish().await;
    let mut zero_client = open_fleet("wrapper-zero", &mut n, port).await;
    let ready = Instant::now();
    tokio::time::sleep_until((ready + FLEET_UP_BEFORE_DROP).into()).await;
    let zero = mass_drop(&mut server, &mut zero_client.proc, n).await;
    zero.print("first_reconnect_window(Duration::ZERO)");
    zero_client.proc.finish().await;
    // The same at the smaller size, which this machine tears down and reconnects without
    // falling far behind the schedule.
    let mut small = None;
    if n > FLEET_N_FALLBACK {
        let mut drops = Vec::new();
        for kind in ["wrapper", "wrapper-zero"] {
            let mut m = FLEET_N_FALLBACK;
            let mut client = open_fleet(kind, &mut m, port).await;
            let ready = Instant::now();
            tokio::time::sleep_until((ready + FLEET_UP_BEFORE_DROP).into()).await;
            let d = mass_drop(&mut server, &mut client.proc, m).await;
            d.print(&format!("{m} {kind} streams"));
            client.proc.finish().await;
            drops.push(d);
        }
        let zero = drops.pop().expect("two");
        small = Some((drops.pop().expect("two"), zero));
    }
    server.finish().await;

    let left = HPM_PERIOD.saturating_sub(hpm_start.elapsed());
    if !left.is_zero() {
        println!(
            "  waiting {:.0} s more for the handshake-rate client",
            left.as_secs_f64()
        );
    }
    tokio::time::sleep_until((hpm_start + HPM_PERIOD).into()).await;
    let (handshakes, _) = handshake_report(&mut hpm_server).await;
    hpm_task.abort();
    hpm_server.finish().await;
    let within = |d: Duration| handshakes.iter().filter(|(t, _)| *t < ms(d)).count();
    FleetResult {
        n,
        wrapper_rss_kib: wrapper.rss_per_conn_kib,
        wrapper_total_kib: wrapper.rss_total_kib,
        wrapper_base_kib: wrapper.base_kib,
        wrapper_connect_ms: wrapper.connect_ms,
        raw_rss_kib: raw.rss_per_conn_kib,
        raw_total_kib: raw.rss_total_kib,
        raw_base_kib: raw.base_kib,
        raw_connect_ms: raw.connect_ms,
        raw_n,
        cpu,
        spread,
        zero,
        small,
        hpm_first: within(HPM_FIRST),
        hpm_all: within(HPM_PERIOD),
        hpm_first_expected: expected(HPM_FIRST),
        hpm_all_expected: expected(HPM_PERIOD),
        hpm_min_delay,
    }
}

// ----- main -------------------------------------------------------------------------------

fn main() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let handle = server_rt.handle().clone();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--outage-child") {
        client_rt.block_on(outage_child(&handle));
        return;
    }
    if args.iter().any(|a| a == "--fleet-server-child") {
        client_rt.block_on(fleet_server_child(&handle));
        // Exit at once: a runtime dropped normally would wait for its thread blocked on stdin.
        std::process::exit(0);
    }
    // `--fleet-client-child <raw|wrapper|wrapper-zero> <n> <port>`.
    if let Some(i) = args.iter().position(|a| a == "--fleet-client-child") {
        let kind = args.get(i + 1).cloned().unwrap_or_default();
        let n = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .expect("connection count");
        let port = args.get(i + 3).and_then(|p| p.parse().ok()).expect("port");
        client_rt.block_on(fleet_client_child(&kind, n, port));
        std::process::exit(0);
    }
    // `--profile raw|wrapper oneway|echo`: that workload only, once per run of section 1 (for
    // perf or callgrind).
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let client = match args.get(i + 1).map(String::as_str) {
            Some("raw") => Client::Raw,
            _ => Client::Wrapper,
        };
        let workload = match args.get(i + 2).map(String::as_str) {
            Some("echo") => Workload::Echo,
            _ => Workload::OneWay,
        };
        // `--runs N`: how many times (default: as many as section 1 runs each).
        let runs = args
            .iter()
            .position(|a| a == "--runs")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(THROUGHPUT_RUNS);
        client_rt.block_on(profile(&handle, client, workload, runs));
        return;
    }
    // `--only 1,3` runs some sections (for profiling); the default is all six.
    let sections: Vec<u32> = match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_default(),
        None => vec![1, 2, 3, 4, 5, 6],
    };
    client_rt.block_on(bench(&handle, &sections));
    server_rt.shutdown_timeout(Duration::from_secs(1));
}

async fn profile(server_rt: &Handle, client: Client, workload: Workload, runs: usize) {
    let (listener, addr) = listener_on(server_rt).await;
    let (cpu_tx, mut cpu_rx) = mpsc::unbounded_channel();
    let server = server_rt.spawn(throughput_server(listener, cpu_tx));
    let url = format!("ws://{addr}");
    for _ in 0..runs {
        let s = measure(client, workload, &url, &mut cpu_rx).await;
        let n = match workload {
            Workload::OneWay => ONEWAY_MESSAGES,
            Workload::Echo => ECHO_MESSAGES,
        };
        println!(
            "{client:?}: {:.0} msg/s, client CPU {:.0} ns/msg",
            s.rate(n),
            s.client_cpu
                .map_or(f64::NAN, |c| c.as_nanos() as f64 / n as f64)
        );
    }
    server.abort();
}

async fn bench(server_rt: &Handle, sections: &[u32]) {
    let total = Instant::now();
    let run = |n: u32| sections.contains(&n);
    println!(
        "stream-websocket bench: {} CPUs; servers on their own runtime thread, clients on the main thread",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows: Vec<String> = Vec::new();
    let mut row = |what: &str, result: String, target: &str, verdict: &str| {
        rows.push(format!("| {what} | {result} | {target} | {verdict} |"));
    };
    // Printed after the table, before the last line.
    let mut notes: Vec<String> = Vec::new();

    // 1. Raw throughput.
    let mut last_ratio = None;
    if run(1) {
        println!(
            "\n1. Throughput, {PAYLOAD_BYTES}-byte text frames: bare WebSocketStream (raw) vs \
             ReconnectingStream<_, RawCodec> (wrapper, default keepalive), same connect function and server"
        );
        let (listener, addr) = listener_on(server_rt).await;
        let (cpu_tx, mut cpu_rx) = mpsc::unbounded_channel();
        let server = server_rt.spawn(throughput_server(listener, cpu_tx));
        let url = format!("ws://{addr}");
        // Warm-up, not counted.
        for client in [Client::Raw, Client::Wrapper] {
            let _ = measure(client, Workload::Echo, &url, &mut cpu_rx).await;
        }
        println!(
            "  one-way: {ONEWAY_MESSAGES} frames server -> client, {THROUGHPUT_RUNS} runs each, alternated"
        );
        let oneway = throughput_pair(Workload::OneWay, &url, &mut cpu_rx).await;
        println!(
            "  echo: {ECHO_MESSAGES} round trips, {ECHO_WINDOW} in flight, {THROUGHPUT_RUNS} runs each, alternated"
        );
        let echo = throughput_pair(Workload::Echo, &url, &mut cpu_rx).await;
        server.abort();
        let fmt = |r: &[f64]| {
            r.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  one-way ratios per run: {}", fmt(&oneway.ratios));
        println!("  echo ratios per run:    {}", fmt(&echo.ratios));
        println!("  echo ratio wrapper/raw: {:.2}", echo.ratio);
        for (name, pair) in [("one-way", &oneway), ("echo", &echo)] {
            row(
                &format!("{name}, raw WebSocketStream"),
                format!("{:.0} msg/s", pair.raw_rate),
                "",
                "",
            );
            row(
                &format!("{name}, ReconnectingStream (RawCodec)"),
                format!("{:.0} msg/s", pair.wrapper_rate),
                "",
                "",
            );
            row(
                &format!("{name} ratio wrapper/raw"),
                pair.ratio_text(),
                "",
                "",
            );
        }
        // The target is on workload 1 as a whole: the median over the pairs of both parts.
        let all: Vec<f64> = oneway.ratios.iter().chain(&echo.ratios).copied().collect();
        let ratio = median(&all);
        row(
            &format!(
                "section 1 ratio wrapper/raw, one-way and echo ({} pairs)",
                all.len()
            ),
            ratio_text(ratio, &all),
            ">= 0.95",
            verdict(ratio >= 0.95),
        );
        last_ratio = Some(ratio);
    }

    // 2. Producer and consumer.
    if run(2) {
        println!(
            "\n2. GDN producer and consumer against the embedded LocalServer ({PAYLOAD_BYTES}-byte payloads)"
        );
        let p = producer_section(server_rt).await;
        let pipelining = p.pipelining;
        row(
            &format!("producer, pipelined (window {PRODUCER_WINDOW})"),
            format!("{:.0} confirmed msg/s", p.pipelined),
            "",
            "",
        );
        row(
            "producer, awaiting each send",
            format!("{:.0} confirmed msg/s", p.awaiting),
            "",
            "",
        );
        row(
            "pipelined / awaiting each",
            format!("{pipelining:.1}x"),
            ">= 20x",
            verdict(pipelining >= 20.0),
        );
        row(
            "reference: bare client, pre-encoded frames, pipelined (window 1000) / one at a time",
            format!(
                "{:.0} / {:.0} acknowledged msg/s = {:.1}x",
                p.raw_pipelined,
                p.raw_awaiting,
                p.raw_pipelined / p.raw_awaiting
            ),
            "",
            "",
        );
        row(
            "consumer receive + ack",
            format!("{:.0} msg/s", p.consumer),
            "",
            "",
        );
    }

    // 3. Recovery.
    if run(3) {
        println!(
            "\n3. Recovery: {RECOVERY_DROPS} drops with a zero scheduled delay (wrapper with \
             first_reconnect_window(Duration::ZERO), then a bare client reconnecting by hand); \
             {ACCURACY_RECONNECTS} reconnects with a fixed {} ms delay",
            FIXED_DELAY.as_millis()
        );
        let wrapper = recovery(server_rt, false).await;
        let raw = recovery(server_rt, true).await;
        let accuracy = delay_accuracy(server_rt).await;
        let p99 = percentile(&wrapper.accept_to_msg, 99.0);
        row(
            "recovery, zero delay (first_reconnect_window 0): server accepts -> first message (wrapper)",
            format!(
                "median {:.3} ms, p99 {p99:.3} ms",
                median(&wrapper.accept_to_msg)
            ),
            "<= 5 ms",
            verdict(p99 <= 5.0),
        );
        row(
            "recovery, zero delay (first_reconnect_window 0): server drops -> first message (wrapper)",
            format!(
                "median {:.3} ms, p99 {:.3} ms",
                median(&wrapper.drop_to_msg),
                percentile(&wrapper.drop_to_msg, 99.0)
            ),
            "",
            "",
        );
        row(
            "same with a bare client reconnecting by hand: accepts -> message; drops -> message",
            format!(
                "median {:.3}; {:.3} ms, p99 {:.3}; {:.3} ms",
                median(&raw.accept_to_msg),
                median(&raw.drop_to_msg),
                percentile(&raw.accept_to_msg, 99.0),
                percentile(&raw.drop_to_msg, 99.0)
            ),
            "",
            "",
        );
        row(
            &format!(
                "delay accuracy, actual - scheduled ({} ms delay, n = {})",
                FIXED_DELAY.as_millis(),
                accuracy.len()
            ),
            format!(
                "median {:+.3} ms, p99 {:+.3} ms",
                median(&accuracy),
                percentile(&accuracy, 99.0)
            ),
            "",
            "",
        );
    }

    // 4. Cost per message.
    if run(4) {
        println!("\n4. Cost per message");
        let allocs = allocations(server_rt).await;
        println!(
            "  outage: a producer (window {PRODUCER_WINDOW}, {OUTAGE_MESSAGE_BYTES}-byte messages) keeps \
             publishing through {} s of refused connections (child process) ...",
            OUTAGE.as_secs()
        );
        let outage = run_outage_child();
        let allocs_ok = allocs.stream_calls <= allocs.encode_calls + 0.01;
        row(
            &format!("allocations per published message, {ALLOC_MESSAGES} through the stream (PulsarCodec)"),
            format!(
                "{:.3} allocs, {:.0} bytes",
                allocs.stream_calls, allocs.stream_bytes
            ),
            "no more than encoding",
            verdict(allocs_ok),
        );
        row(
            "allocations of encoding the JSON frame alone",
            format!(
                "{:.3} allocs, {:.0} bytes",
                allocs.encode_calls, allocs.encode_bytes
            ),
            "",
            "",
        );
        let bound_kib = (PRODUCER_WINDOW * OUTAGE_MESSAGE_BYTES) as f64 / 1024.0;
        let base = outage.get("rss_base_kib");
        let peak = outage.get("rss_peak_kib");
        let limit = base + bound_kib + RSS_CONSTANT_KIB as f64;
        row(
            &format!(
                "RSS through a {} s outage: peak (base before the producer {base:.0} KiB)",
                OUTAGE.as_secs()
            ),
            format!("{peak:.0} KiB (+{:.0} KiB)", peak - base),
            &format!(
                "<= base + window x size ({bound_kib:.0} KiB) + {RSS_CONSTANT_KIB} KiB = {limit:.0} KiB"
            ),
            verdict(peak <= limit),
        );
        row(
            "RSS growth from 5 s into the outage to its end",
            format!(
                "{:+.0} KiB",
                outage.get("rss_peak_after_5s_kib") - outage.get("rss_at_5s_kib")
            ),
            "",
            "",
        );
        println!(
            "  outage: {} in flight during it (peak {}), {} connection attempts refused; {} enqueued, \
             {} confirmed, all confirmed {:.0} ms after the server came back",
            outage.get("in_flight_during_outage"),
            outage.get("peak_in_flight"),
            outage.get("attempts_refused"),
            outage.get("enqueued"),
            outage.get("confirmed"),
            outage.get("catch_up_ms"),
        );
    }

    // 5. Faults.
    if run(5) {
        let section = Instant::now();
        println!(
            "\n5. Faults: {FAULT_MESSAGES} messages of {PAYLOAD_BYTES} bytes through LocalServer, every \
             connection dropped after {}-{} frames (drawn per connection; a producer's after storing \
             and before confirming, a consumer's after delivering) and {:.0}% of handshakes refused \
             with 503, against the same without faults; {FAULT_RUNS_FAST} alternated pairs each with fast delays, \
             {FAULT_RUNS_DEFAULTS} with the defaults",
            FAULT_DROP_FRAMES.start(),
            FAULT_DROP_FRAMES.end(),
            100.0 * FAULT_REFUSE_FRACTION
        );
        let server = server_rt
            .spawn(LocalServer::start())
            .await
            .expect("server task")
            .expect("local server");
        let configs = [
            (
                "fast delays (min 20 ms, max 200 ms)",
                "f",
                fast_delays(),
                FAULT_RUNS_FAST,
            ),
            (
                "default config",
                "d",
                ReconnectConfig::default(),
                FAULT_RUNS_DEFAULTS,
            ),
        ];
        let (mut runs, mut stored_twice, mut handed_twice) = (0, 0, 0);
        for e2e in [false, true] {
            if e2e {
                // The consumer's default receiverQueueSize against these faults, once.
                let r = fault_e2e_run(
                    &server,
                    "faultsstall",
                    fast_delays(),
                    true,
                    None,
                    FAULT_STALL_LIMIT,
                )
                .await;
                let (result, verdict) = match &r {
                    Ok(r) => (
                        format!("finished in {:.3} s", r.elapsed.as_secs_f64()),
                        "PASS",
                    ),
                    Err(e) => (format!("stalled: {e}"), "FAIL"),
                };
                println!("  end to end, consumer's default receiverQueueSize (1000), fast delays, faulted: {result}");
                row(
                    "faults, end to end with the consumer's default receiverQueueSize (1000), fast delays, one faulted run",
                    result,
                    "finishes",
                    verdict,
                );
                println!(
                    "  end to end below: consumers with receiverQueueSize {FAULT_RECEIVER_QUEUE} (below the \
                     smallest drop limit), faulted and fault-free alike"
                );
            }
            for (config_name, tag, config, pairs) in &configs {
                let what = if e2e {
                    format!("end to end (producer + consumer, receiverQueueSize {FAULT_RECEIVER_QUEUE})")
                } else {
                    "producer alone".to_string()
                };
                let label = format!(
                    "{}, {}",
                    if e2e { "end to end" } else { "producer" },
                    if *tag == "f" { "fast" } else { "defaults" }
                );
                let tag = format!("{}{tag}", if e2e { "e" } else { "p" });
                let series = fault_series(&server, e2e, &label, &tag, config, *pairs).await;
                let ratio = series.ratio();
                let (target, verdict) = if e2e {
                    (
                        format!("<= {FAULT_GOAL_E2E}"),
                        goal_verdict(ratio, FAULT_GOAL_E2E, None),
                    )
                } else {
                    (
                        format!("<= {FAULT_GOAL_PRODUCER} (stretch {FAULT_STRETCH_PRODUCER})"),
                        goal_verdict(ratio, FAULT_GOAL_PRODUCER, Some(FAULT_STRETCH_PRODUCER)),
                    )
                };
                row(
                    &format!(
                        "faults, {what}, {FAULT_MESSAGES} x {PAYLOAD_BYTES} B, {config_name}: faulted / fault-free time"
                    ),
                    series.result(),
                    &target,
                    verdict,
                );
                if *tag.as_bytes().last().expect("tag") == b'd' {
                    let clean_ms = FaultSeries::median_ms(&series.clean);
                    let refusals: Vec<f64> =
                        series.faulted.iter().map(|r| r.refusals as f64).collect();
                    let spared: Vec<(f64, f64)> = series
                        .faulted
                        .iter()
                        .zip(&series.ratios)
                        .filter(|(r, _)| r.refusals == 0)
                        .map(|(r, ratio)| (ms(r.elapsed), *ratio))
                        .collect();
                    let no_progress: Vec<f64> = series
                        .faulted
                        .iter()
                        .map(|r| (r.tally.closes - r.tally.with_progress) as f64)
                        .collect();
                    let waited: Vec<f64> =
                        series.faulted.iter().map(|r| ms(r.tally.waited)).collect();
                    let mut note = format!(
                        "faults, {what}, default config: a refused handshake (503 without \
                         Retry-After), like the close of a connection on which the client had read no \
                         acknowledgement or message yet (no progress), leaves the schedule running, so \
                         the retry after it waits the instance's min delay, drawn from [1 s, 2 s] (1.3x \
                         more for each further one in a row): {:.0}-{:.0}x a whole fault-free run \
                         ({clean_ms:.0} ms, median) each. The faulted runs met a median of {:.1} \
                         refusals and {:.1} closes without progress, and scheduled {:.0} ms of backoff \
                         (median{})",
                        1000.0 / clean_ms,
                        2000.0 / clean_ms,
                        median(&refusals),
                        median(&no_progress),
                        median(&waited),
                        if e2e {
                            "; producer and consumer together"
                        } else {
                            ""
                        }
                    );
                    if spared.is_empty() {
                        note.push_str("; every faulted run met a refusal.");
                    } else {
                        note.push_str(&format!(
                            "; the faulted run(s) without a refusal took {} ms (ratio {}).",
                            spared
                                .iter()
                                .map(|(t, _)| format!("{t:.0}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            spared
                                .iter()
                                .map(|(_, r)| format!("{r:.2}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    println!("  note: {note}");
                    notes.push(note);
                }
                for r in series.faulted.iter().chain(&series.clean) {
                    runs += 1;
                    stored_twice += r.stored_twice;
                    handed_twice += r.handed_twice;
                }
            }
        }
        server.shutdown().await;
        row(
            "faults: nothing lost",
            format!(
                "all {FAULT_MESSAGES} confirmed and stored in each of {runs} runs; end to end the consumer \
                 received all {FAULT_MESSAGES} in each run ({stored_twice} stored twice by re-sends in all, \
                 {handed_twice} handed to the application twice)"
            ),
            "nothing lost",
            "PASS",
        );
        println!("  section 5 took {:.0} s", section.elapsed().as_secs_f64());
    }

    // 6. A fleet.
    if run(6) {
        let section = Instant::now();
        println!(
            "\n6. A fleet of idle streams against a plain tokio-tungstenite server in a child process \
             (memory, keepalive CPU, a mass drop, the handshake rate against a server that drops at once)"
        );
        let f = fleet_section().await;
        let n = f.n;
        row(
            &format!(
                "idle RSS per stream: {n} ReconnectingStreams (RawCodec, default config, a task each polling next()), own process"
            ),
            format!(
                "{:.1} KiB (+{:.1} MiB over a {:.1} MiB base; opened in {:.1} s)",
                f.wrapper_rss_kib,
                f.wrapper_total_kib / 1024.0,
                f.wrapper_base_kib / 1024.0,
                f.wrapper_connect_ms / 1e3
            ),
            "",
            "",
        );
        row(
            &format!(
                "idle RSS per connection: {} bare WebSocketStreams (a task each reading), own process",
                f.raw_n
            ),
            format!(
                "{:.1} KiB (+{:.1} MiB over a {:.1} MiB base; opened in {:.1} s)",
                f.raw_rss_kib,
                f.raw_total_kib / 1024.0,
                f.raw_base_kib / 1024.0,
                f.raw_connect_ms / 1e3
            ),
            "",
            "",
        );
        let per_minute = 60.0 / FLEET_CPU_PERIOD.as_secs_f64();
        row(
            &format!(
                "CPU per idle stream, keepalive ping every 20 s ({n} streams; client process CPU over {} s idle)",
                FLEET_CPU_PERIOD.as_secs()
            ),
            format!(
                "{:.1} us per stream per minute ({:.0} ms in {} s for all {n}: {:.2}% of a core)",
                ms(f.cpu) * 1e3 * per_minute / n as f64,
                ms(f.cpu),
                FLEET_CPU_PERIOD.as_secs(),
                100.0 * f.cpu.as_secs_f64() / FLEET_CPU_PERIOD.as_secs_f64()
            ),
            "",
            "",
        );
        row(
            &format!(
                "mass drop of {n} idle streams (default config, up > 6 s), server refusing (503) for {} s: \
                 peak share of the fleet's handshakes in a 100 ms bin, and in the first 100 ms; as they \
                 reached the server / as the clients attempted them",
                FLEET_REFUSE.as_secs()
            ),
            format!(
                "{} / {}",
                f.spread.arrivals.summary(),
                f.spread.attempts.summary()
            ),
            &format!("<= {:.0}% (both)", 100.0 * FLEET_PEAK_GOAL),
            pass_fail(f.spread.peak() <= FLEET_PEAK_GOAL),
        );
        let back = |m: &MassDrop| match m.back {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => format!(
                "not all back: {} of {} after {} s",
                m.upgraded,
                m.arrivals.n,
                FLEET_BACK_LIMIT.as_secs()
            ),
        };
        row(
            "same: from the server's return to all streams open again",
            back(&f.spread),
            &format!("<= {} s (max_delay)", FLEET_BACK_GOAL.as_secs()),
            pass_fail(f.spread.back.is_some_and(|d| d <= FLEET_BACK_GOAL)),
        );
        row(
            "same with first_reconnect_window(Duration::ZERO), for contrast: server / clients; back after",
            format!(
                "{} / {}; {}",
                f.zero.arrivals.summary(),
                f.zero.attempts.summary(),
                back(&f.zero)
            ),
            "(a stampede expected)",
            "",
        );
        if f.small.is_some() {
            // With a zero window a stream's first attempt follows its seeing the drop at once,
            // and a second one waits at least the min delay (1 s): the attempts of the first
            // second show how fast the fleet noticed.
            let per_second = (1000.0 / ms(FLEET_BIN)).round() as usize;
            let mut noticed = 0;
            let ninety = f
                .zero
                .attempts
                .bins
                .iter()
                .take(per_second)
                .position(|c| {
                    noticed += c;
                    f.zero.attempts.share(noticed) >= 0.9
                })
                .map_or("more than 1 s".to_string(), |i| {
                    format!("{} ms", (i + 1) * FLEET_BIN.as_millis() as usize)
                });
            let note = format!(
                "section 6, mass drop of {n}: the server took {:.0} ms (default config run) and \
                 {:.0} ms (zero window run) to close every connection, and 90% of the streams with \
                 first_reconnect_window(0), which reconnect as soon as they see the drop, had made \
                 their first attempt only after {ninety}: that is how fast the client and server \
                 processes of this 2-core machine tear down and reconnect {n} connections, and \
                 reconnects scheduled meanwhile go out late and together, so at that size the \
                 histograms show the machine's pace as much as the schedule (see the \
                 {FLEET_N_FALLBACK}-stream rows).",
                f.spread.last_close_ms, f.zero.last_close_ms,
            );
            println!("  note: {note}");
            notes.push(note);
        }
        if let Some((spread, zero)) = &f.small {
            row(
                &format!(
                    "same at {FLEET_N_FALLBACK} streams (which this machine tears down and reconnects \
                     without falling far behind): default config, server / clients; back after"
                ),
                format!(
                    "{} / {}; {}",
                    spread.arrivals.summary(),
                    spread.attempts.summary(),
                    back(spread)
                ),
                &format!("<= {:.0}% (both)", 100.0 * FLEET_PEAK_GOAL),
                pass_fail(spread.peak() <= FLEET_PEAK_GOAL),
            );
            row(
                &format!("same at {FLEET_N_FALLBACK} streams with first_reconnect_window(Duration::ZERO)"),
                format!(
                    "{} / {}; {}",
                    zero.arrivals.summary(),
                    zero.attempts.summary(),
                    back(zero)
                ),
                "(a stampede expected)",
                "",
            );
        }
        let in_range = |v: usize, (lo, hi): (usize, usize)| (lo..=hi).contains(&v);
        let range = |(lo, hi): (usize, usize)| {
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}-{hi}")
            }
        };
        row(
            &format!(
                "handshakes of one default client (min delay {:.2} s) against a server that accepts and drops at once: first {} s; {} s",
                f.hpm_min_delay.as_secs_f64(),
                HPM_FIRST.as_secs(),
                HPM_PERIOD.as_secs()
            ),
            format!("{}; {}", f.hpm_first, f.hpm_all),
            &format!(
                "about 9 in 20 s; by the schedule {}; {}",
                range(f.hpm_first_expected),
                range(f.hpm_all_expected)
            ),
            pass_fail(
                in_range(f.hpm_first, f.hpm_first_expected)
                    && in_range(f.hpm_all, f.hpm_all_expected),
            ),
        );
        println!("  section 6 took {:.0} s", section.elapsed().as_secs_f64());
    }

    println!(
        "\nResults (medians; {} s in all)",
        total.elapsed().as_secs()
    );
    println!("| measurement | result | target | |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    for n in &notes {
        println!("Note: {n}");
    }
    match last_ratio {
        Some(r) => println!("ratio wrapper/raw: {r:.2}"),
        None => println!("ratio wrapper/raw: not measured (section 1 not run)"),
    }
}
