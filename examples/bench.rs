//! Performance of the reconnecting layer, side by side with bare `tokio-tungstenite`; the GDN
//! producer and consumer against the embedded server; recovery after drops; and the cost per
//! message in allocations and memory. Everything runs on 127.0.0.1 and ends by itself (about a
//! minute on 2 cores, 30 s of which is the outage of section 4).
//!
//! ```text
//! cargo run --release --example bench
//! cargo run --release --example bench -- --only 1,3            # some sections only
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
//!    to the first message on it, with a zero scheduled delay; and how late the factory is
//!    called after a fixed 10 ms delay, against a server that drops every connection at once.
//! 4. Heap allocations per `Outgoing::Publish` pushed through a connected stream to a server that
//!    discards them (a counting global allocator), against what encoding the frame alone
//!    allocates; and the resident memory of a producer that keeps publishing through a 30 s
//!    outage, in a child process (this program with `--outage-child`) so that earlier sections
//!    do not inflate its baseline.
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
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    connect, Connect, Outgoing, Publish, PulsarCodec, RawCodec, ReconnectConfig,
    ReconnectingStream, WsStream,
};
use stream_websocket_testkit::{Cut, FaultProxy, LocalServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
) -> ReconnectingStream<impl Connect<Transport = WsStream>, RawCodec> {
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
        let config = ReconnectConfig::builder()
            .min_delay(FIXED_DELAY)
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
            // Longer than min_uptime: the retry count resets, so the reconnect is immediate.
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
    // The first retry is immediate, the others wait the fixed delay: 2 more calls than that.
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
    // `--only 1,3` runs some sections (for profiling); the default is all four.
    let sections: Vec<u32> = match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_default(),
        None => vec![1, 2, 3, 4],
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
            "\n3. Recovery: {RECOVERY_DROPS} drops with a zero scheduled delay (wrapper, then a bare client \
             reconnecting by hand); {ACCURACY_RECONNECTS} reconnects with a fixed {} ms delay",
            FIXED_DELAY.as_millis()
        );
        let wrapper = recovery(server_rt, false).await;
        let raw = recovery(server_rt, true).await;
        let accuracy = delay_accuracy(server_rt).await;
        let p99 = percentile(&wrapper.accept_to_msg, 99.0);
        row(
            "recovery, zero delay: server accepts -> first message (wrapper)",
            format!(
                "median {:.3} ms, p99 {p99:.3} ms",
                median(&wrapper.accept_to_msg)
            ),
            "<= 5 ms",
            verdict(p99 <= 5.0),
        );
        row(
            "recovery, zero delay: server drops -> first message (wrapper)",
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

    println!(
        "\nResults (medians; {} s in all)",
        total.elapsed().as_secs()
    );
    println!("| measurement | result | target | |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    match last_ratio {
        Some(r) => println!("ratio wrapper/raw: {r:.2}"),
        None => println!("ratio wrapper/raw: not measured (section 1 not run)"),
    }
}
