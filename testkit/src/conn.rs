//! One task per connection: the upgrade (with authentication and registration), then a loop
//! that reads client frames, writes replies and deliveries, and obeys the fault switches.

use std::collections::VecDeque;
use std::future::{pending, poll_fn};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{self as http_types, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::broker::{State, Topic};
use super::http::{self, Next, ReadError};
use super::rest;
use super::transport::{Io, Replay};
use super::wire::{self, Command, EndpointKind, Query, ReaderStart, Rejection, SendError};
use super::Shared;

/// How long a close frame (shutdown, 1003, 1009) may take to go out before the socket is
/// dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_millis(200);
/// At most this many frames of a burst are handled before their replies are written.
const READ_BATCH: usize = 256;

/// The reply to `isEndOfTopic`: topics here are never terminated.
const END_OF_TOPIC: &str = r#"{"endOfTopic":false}"#;

/// Serves one accepted TCP connection until it ends, is dropped by a fault, or the server shuts
/// down.
pub(super) async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    let mut drop_rx = shared.drop_epoch.subscribe();
    let mut stall_rx = shared.stall.subscribe();
    let mut shutdown_rx = shared.shutdown.subscribe();
    if *shutdown_rx.borrow() {
        return;
    }
    // A stalled server does not even read the upgrade request.
    if *stall_rx.borrow_and_update() {
        tokio::select! {
            ok = async { stall_rx.wait_for(|s| !*s).await.is_ok() } => if !ok { return },
            _ = drop_rx.changed() => return,
            _ = shutdown_rx.changed() => return,
        }
    }

    // TLS if the first byte asks for it, then REST calls until a WebSocket upgrade arrives.
    let max_body = shared.config.max_message_size;
    let timeout = shared.config.handshake_timeout;
    let prelude = async {
        let io = tokio::time::timeout(timeout, Io::accept(tcp, shared.identity.as_ref()))
            .await
            .ok()?
            .map_err(|e| tracing::debug!(error = %e, "local server TLS handshake failed"))
            .ok()?;
        let mut conn = http::Conn::new(io);
        loop {
            match tokio::time::timeout(timeout, conn.next(max_body))
                .await
                .ok()?
            {
                Ok(Next::Upgrade) => return Some(conn),
                Ok(Next::Rest(req)) => {
                    let resp = rest::handle(&shared, &req);
                    tracing::debug!(
                        method = %req.method,
                        status = resp.status,
                        tls = conn.io.is_tls(),
                        "local server answered a REST call"
                    );
                    if !conn.respond(Some(&req), &resp).await.ok()? {
                        return None;
                    }
                }
                Ok(Next::Closed) => return None,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(error = %e, "local server lost a connection before its request");
                    return None;
                }
                Err(ReadError::Bad(status, message)) => {
                    let resp = http::Response::error(status, u32::from(status), message);
                    let _ = conn.respond(None, &resp).await;
                    return None;
                }
            }
        }
    };
    let conn = tokio::select! {
        c = prelude => match c {
            Some(c) => c,
            None => return,
        },
        _ = drop_rx.changed() => return,
        _ = shutdown_rx.changed() => return,
    };
    let transport = Replay {
        prefix: conn.buf.freeze(),
        inner: conn.io,
    };

    let mut admitted: Option<Session> = None;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(shared.config.max_message_size))
        .max_frame_size(Some(shared.config.max_message_size));
    let handshake = {
        let shared = &shared;
        let admitted = &mut admitted;
        // The callback's signature is tungstenite's; its error is an HTTP response.
        #[allow(clippy::result_large_err)]
        let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            match admit(shared, req) {
                Ok(session) => {
                    *admitted = Some(session);
                    Ok(resp)
                }
                Err(rejection) => {
                    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        path = req.uri().path(),
                        status = rejection.status,
                        "local server refused an upgrade"
                    );
                    Err(error_response(rejection))
                }
            }
        };
        tokio::time::timeout(
            timeout,
            tokio_tungstenite::accept_hdr_async_with_config(transport, callback, Some(ws_config)),
        )
    };
    let ws = tokio::select! {
        r = handshake => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "local server handshake failed");
                return;
            }
            Err(_) => return,
        },
        _ = drop_rx.changed() => return,
        _ = shutdown_rx.changed() => return,
    };
    let Some(session) = admitted else {
        return;
    };
    let _open = OpenGuard::new(&shared);
    let drawn = shared.draw_frame_limit();
    if shared.drop_after.load(Ordering::Relaxed) == 0 || drawn == Some(0) {
        shared.counters.frame_drops.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let signals = Signals {
        drop_rx,
        stall_rx,
        shutdown_rx,
    };
    run(ws, session, &shared, drawn, signals).await;
}

/// Counts a connection as open while it lives.
struct OpenGuard<'a>(&'a Shared);

impl<'a> OpenGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn error_response(rejection: Rejection) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(rejection.body));
    *resp.status_mut() =
        StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    resp.headers_mut().insert(
        http_types::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The caller's tenant if the upgrade request may pass (`Some(None)`: any tenant, on an open
/// server); see `Credentials::upgrade_caller`. A presented one-time password is consumed.
fn authenticate(
    shared: &Shared,
    req: &Request,
    query: &Query,
    st: &mut State,
) -> Option<Option<String>> {
    let headers = req.headers().get_all(http_types::header::AUTHORIZATION);
    let headers = headers.iter().filter_map(|v| v.to_str().ok());
    let State { sessions, otps, .. } = st;
    let creds = &shared.config.credentials;
    creds.upgrade_caller(headers, query.get("otp"), sessions, otps)
}

/// Decides an upgrade: injected refusals, authentication, the path, the parameters, then the
/// registration (which can still refuse with 409).
fn admit(shared: &Arc<Shared>, req: &Request) -> Result<Session, Rejection> {
    let mut st = shared.lock();
    if st.refuse_left > 0 {
        st.refuse_left -= 1;
        return Err(injected_refusal(st.refuse_status, "refuse_next"));
    }
    if let Some(status) = shared.roll_refusal() {
        return Err(injected_refusal(status, "refuse_fraction"));
    }
    let query = wire::Query::parse(req.uri().query())?;
    let Some(caller) = authenticate(shared, req, &query, &mut st) else {
        return Err(Rejection::new(401, "Failed to authenticate"));
    };
    let route = wire::parse_route(&rest::normalize_path(req.uri().path()))?;
    if !super::auth::may_use_topic(caller.as_deref(), &route.topic) {
        let message = "Forbidden: the topic belongs to another tenant";
        return Err(Rejection::new(403, message));
    }
    if !shared.config.auto_create && !st.topics.contains_key(&route.topic) {
        return Err(Rejection::new(
            404,
            format!("Topic not found: {} (create the stream first)", route.topic),
        ));
    }
    let conn = st.next_conn();
    match route.kind {
        EndpointKind::Producer => {
            let name = query
                .get("producerName")
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            let topic = st.topic(&route.topic);
            if let Some(n) = &name {
                if !topic.producer_names.insert(n.clone()) {
                    return Err(Rejection::new(
                        409,
                        format!("Producer with name '{n}' is already connected to topic"),
                    ));
                }
            }
            Ok(Session::Producer(ProducerSession {
                shared: shared.clone(),
                topic: route.topic,
                name,
            }))
        }
        EndpointKind::Consumer => {
            let params = wire::consumer_params(&query, shared.config.negative_ack_delay)?;
            let sub = route.subscription.unwrap_or_default();
            let notify = Arc::new(Notify::new());
            st.topic(&route.topic)
                .subscribe(&sub, &params, conn, notify.clone())?;
            Ok(Session::Consumer(ConsumerSession {
                shared: shared.clone(),
                topic: route.topic,
                sub,
                conn,
                notify,
                nack_delay: params.nack_delay,
            }))
        }
        EndpointKind::Reader => {
            let params = wire::reader_params(&query)?;
            let topic = st.topic(&route.topic);
            let next = match &params.start {
                ReaderStart::Earliest => 0,
                ReaderStart::Latest => topic.messages.len(),
                ReaderStart::After(id) => topic.position_after(id).ok_or_else(|| {
                    Rejection::new(
                        400,
                        "Invalid query params: messageId is not a message id of this topic",
                    )
                })?,
            };
            let notify = Arc::new(Notify::new());
            topic.readers.insert(conn, notify.clone());
            Ok(Session::Reader(ReaderSession {
                shared: shared.clone(),
                topic: route.topic,
                conn,
                notify,
                next,
                outstanding: 0,
                queue: params.queue,
            }))
        }
    }
}

/// What a connection is, with its registration; dropping it unregisters (a consumer's
/// unacknowledged messages become pending again).
enum Session {
    Producer(ProducerSession),
    Consumer(ConsumerSession),
    Reader(ReaderSession),
}

struct ProducerSession {
    shared: Arc<Shared>,
    topic: String,
    name: Option<String>,
}

impl Drop for ProducerSession {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            if let Some(t) = self.shared.lock().topics.get_mut(&self.topic) {
                t.producer_names.remove(name);
            }
        }
    }
}

struct ConsumerSession {
    shared: Arc<Shared>,
    topic: String,
    sub: String,
    conn: u64,
    notify: Arc<Notify>,
    nack_delay: Duration,
}

impl ConsumerSession {
    /// Runs `f` on this consumer's subscription (with the topic's log), if both exist.
    fn with_sub<R>(&self, f: impl FnOnce(&mut Topic, &str) -> Option<R>) -> Option<R> {
        let mut st = self.shared.lock();
        let topic = st.topics.get_mut(&self.topic)?;
        f(topic, &self.sub)
    }
}

impl Drop for ConsumerSession {
    fn drop(&mut self) {
        let conn = self.conn;
        self.with_sub(|topic, sub| {
            let Topic { messages, subs, .. } = topic;
            subs.get_mut(sub)?.unsubscribe(conn, messages);
            Some(())
        });
    }
}

struct ReaderSession {
    shared: Arc<Shared>,
    topic: String,
    conn: u64,
    notify: Arc<Notify>,
    /// The next log entry to send.
    next: usize,
    /// Sent and not yet answered with a `{"messageId"}` frame.
    outstanding: usize,
    queue: usize,
}

impl Drop for ReaderSession {
    fn drop(&mut self) {
        if let Some(t) = self.shared.lock().topics.get_mut(&self.topic) {
            t.readers.remove(&self.conn);
        }
    }
}

/// What to do after a client frame.
enum Flow {
    Continue,
    /// Send this reply (not counted as a frame of its own for `drop_after_frames`).
    Reply(String),
    /// The frame limit was reached: drop the connection now, abruptly.
    Drop,
    /// Close the connection with this code.
    Close(CloseCode, &'static str),
}

/// Counts the frames a connection handled, for `drop_after_frames` and
/// `drop_after_frames_between`.
struct Budget<'a> {
    shared: &'a Shared,
    /// Every frame, for `drop_after_frames`.
    handled: u64,
    /// This connection's limit from `drop_after_frames_between`, if it drew one.
    drawn: Option<u64>,
    /// The frames that count against `drawn`: a producer's data frames, deliveries.
    counted: u64,
}

impl Budget<'_> {
    /// Counts one frame (`against_drawn`: also against the drawn limit); true if the
    /// connection must now be dropped.
    fn tick(&mut self, against_drawn: bool) -> bool {
        self.handled += 1;
        if against_drawn {
            self.counted += 1;
        }
        let drop = self.handled >= self.shared.drop_after.load(Ordering::Relaxed)
            || self.drawn.is_some_and(|n| self.counted >= n);
        if drop {
            self.shared
                .counters
                .frame_drops
                .fetch_add(1, Ordering::Relaxed);
        }
        drop
    }
}

impl Session {
    fn notify(&self) -> Option<Arc<Notify>> {
        match self {
            Session::Producer(_) => None,
            Session::Consumer(c) => Some(c.notify.clone()),
            Session::Reader(r) => Some(r.notify.clone()),
        }
    }

    /// Moves deliveries that are due into `out`; returns when to look again without a wake-up.
    fn pull(&mut self, out: &mut VecDeque<Out>) -> Option<Instant> {
        match self {
            Session::Producer(_) => None,
            Session::Consumer(c) => {
                let conn = c.conn;
                c.with_sub(|topic, sub| {
                    let Topic { messages, subs, .. } = topic;
                    let (taken, wake) = subs.get_mut(sub)?.take(conn, messages, Instant::now());
                    for (entry, count) in taken {
                        if let Some(m) = messages.get(entry) {
                            out.push_back(Out::delivery(m.frame(count)));
                        }
                    }
                    wake
                })
            }
            Session::Reader(r) => {
                let st = r.shared.lock();
                if let Some(topic) = st.topics.get(&r.topic) {
                    while r.outstanding < r.queue {
                        let Some(m) = topic.messages.get(r.next) else {
                            break;
                        };
                        out.push_back(Out::delivery(m.frame(0)));
                        r.next += 1;
                        r.outstanding += 1;
                    }
                }
                None
            }
        }
    }

    fn on_text(&mut self, text: &str, budget: &mut Budget<'_>) -> Flow {
        let reply = match self {
            Session::Producer(p) => Some(match wire::parse_publish(text) {
                Ok(msg) => {
                    let context = msg.context.clone();
                    let id = p.shared.lock().topic(&p.topic).append(msg);
                    p.shared.counters.stored.fetch_add(1, Ordering::Relaxed);
                    wire::ok_ack(&id, context.as_deref())
                }
                Err(e) => wire::error_ack(&e),
            }),
            Session::Consumer(c) => match wire::parse_command(text) {
                Err(_) => {
                    return Flow::Close(CloseCode::Unsupported, "Failed to deserialize from JSON")
                }
                Ok(Command::Ack(Some(id))) => {
                    c.shared.counters.acks.fetch_add(1, Ordering::Relaxed);
                    let conn = c.conn;
                    c.with_sub(|topic, sub| {
                        let entry = topic.entry_of(&id)?;
                        let Topic { messages, subs, .. } = topic;
                        subs.get_mut(sub)?.ack(conn, entry, messages);
                        Some(())
                    });
                    None
                }
                Ok(Command::Nack(Some(id))) => {
                    let delay = c.nack_delay;
                    c.with_sub(|topic, sub| {
                        let entry = topic.entry_of(&id)?;
                        let Topic { messages, subs, .. } = topic;
                        subs.get_mut(sub)?.nack(entry, delay, messages);
                        Some(())
                    });
                    None
                }
                Ok(Command::IsEndOfTopic) => Some(END_OF_TOPIC.to_string()),
                Ok(Command::Ack(None) | Command::Nack(None) | Command::Permit) => None,
            },
            Session::Reader(r) => match wire::parse_command(text) {
                Err(_) => {
                    return Flow::Close(CloseCode::Unsupported, "Failed to deserialize from JSON")
                }
                Ok(Command::IsEndOfTopic) => Some(END_OF_TOPIC.to_string()),
                Ok(Command::Ack(Some(_)) | Command::Nack(Some(_))) => {
                    r.outstanding = r.outstanding.saturating_sub(1);
                    None
                }
                Ok(_) => None,
            },
        };
        if budget.tick(matches!(self, Session::Producer(_))) {
            return Flow::Drop;
        }
        reply.map_or(Flow::Continue, Flow::Reply)
    }

    fn on_binary(&mut self, budget: &mut Budget<'_>) -> Flow {
        let reply = match self {
            Session::Producer(_) => Some(wire::error_ack(&SendError {
                code: 3,
                message: "Failed to deserialize from JSON: binary frames are not supported".into(),
                context: None,
            })),
            Session::Consumer(_) | Session::Reader(_) => None,
        };
        if budget.tick(matches!(self, Session::Producer(_))) {
            return Flow::Drop;
        }
        reply.map_or(Flow::Continue, Flow::Reply)
    }
}

/// A frame to write.
struct Out {
    msg: Message,
    /// A delivery (counted for `drop_after_frames` and in the stats), not a reply.
    delivery: bool,
}

impl Out {
    fn delivery(text: String) -> Self {
        Out {
            msg: Message::text(text),
            delivery: true,
        }
    }

    fn reply(text: String) -> Self {
        Out {
            msg: Message::text(text),
            delivery: false,
        }
    }
}

enum Written {
    All,
    LimitReached,
}

/// Writes and flushes everything in `out`. Cancel-safe: a frame leaves `out` only once the sink
/// has taken it.
async fn write_out<S>(
    sink: &mut S,
    out: &mut VecDeque<Out>,
    budget: &mut Budget<'_>,
) -> Result<Written, tungstenite::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    poll_fn(|cx| {
        while !out.is_empty() {
            ready!(sink.poll_ready_unpin(cx))?;
            let Some(item) = out.pop_front() else { break };
            sink.start_send_unpin(item.msg)?;
            if item.delivery {
                budget
                    .shared
                    .counters
                    .delivered
                    .fetch_add(1, Ordering::Relaxed);
                if budget.tick(true) {
                    return Poll::Ready(Ok(Written::LimitReached));
                }
            }
        }
        sink.poll_flush_unpin(cx).map_ok(|()| Written::All)
    })
    .await
}

/// What a frame from the client leads to.
enum Step {
    /// Carry on.
    Go,
    /// Close the connection with this code.
    Close(CloseCode, &'static str),
    /// Drop the connection at once (it failed, ended, or hit `drop_after_frames`).
    End,
    /// The client sent a Close frame.
    PeerClosed,
}

/// Handles one item read from the client; replies go to the back of `out`.
fn on_frame(
    m: Option<Result<Message, tungstenite::Error>>,
    session: &mut Session,
    out: &mut VecDeque<Out>,
    budget: &mut Budget<'_>,
) -> Step {
    let flow = match m {
        None => return Step::End,
        Some(Err(tungstenite::Error::Capacity(_))) => {
            return Step::Close(CloseCode::Size, "message too big")
        }
        Some(Err(_)) => return Step::End,
        Some(Ok(Message::Close(_))) => return Step::PeerClosed,
        Some(Ok(Message::Text(t))) => session.on_text(t.as_str(), budget),
        Some(Ok(Message::Binary(_))) => session.on_binary(budget),
        Some(Ok(_)) => Flow::Continue,
    };
    match flow {
        Flow::Continue => Step::Go,
        Flow::Reply(r) => {
            out.push_back(Out::reply(r));
            Step::Go
        }
        Flow::Drop => Step::End,
        Flow::Close(code, reason) => Step::Close(code, reason),
    }
}

struct Signals {
    drop_rx: watch::Receiver<u64>,
    stall_rx: watch::Receiver<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

async fn run<S>(ws: S, session: Session, shared: &Shared, drawn: Option<u64>, mut signals: Signals)
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut session = session;
    let notify = session.notify();
    let mut out: VecDeque<Out> = VecDeque::new();
    let mut budget = Budget {
        shared,
        handled: 0,
        drawn,
        counted: 0,
    };
    let Signals {
        drop_rx,
        stall_rx,
        shutdown_rx,
    } = &mut signals;

    loop {
        if *stall_rx.borrow_and_update() {
            // Half-open: read nothing (so no pongs), write nothing.
            tokio::select! {
                r = stall_rx.changed() => if r.is_err() { return },
                _ = drop_rx.changed() => return,
                _ = shutdown_rx.changed() => return,
            }
            continue;
        }
        let wake = session.pull(&mut out);
        let notified = async {
            match &notify {
                Some(n) => n.notified().await,
                None => pending().await,
            }
        };
        let timer = async {
            match wake {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => pending().await,
            }
        };
        let close = tokio::select! {
            biased;
            _ = shutdown_rx.changed() => Some((CloseCode::Away, "server shutting down")),
            _ = drop_rx.changed() => return,
            _ = stall_rx.changed() => None,
            r = write_out(&mut sink, &mut out, &mut budget), if !out.is_empty() => match r {
                Ok(Written::All) => None,
                Ok(Written::LimitReached) => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.flush()).await;
                    return;
                }
                Err(_) => return,
            },
            m = stream.next() => {
                // Take the rest of a burst before answering, so that it is answered with one
                // write and one flush instead of one of each per frame.
                let batch_start = out.len();
                let mut step = on_frame(m, &mut session, &mut out, &mut budget);
                let mut taken = 1;
                while matches!(step, Step::Go) && taken < READ_BATCH {
                    match poll_fn(|cx| Poll::Ready(stream.poll_next_unpin(cx))).await {
                        Poll::Ready(m) => step = on_frame(m, &mut session, &mut out, &mut budget),
                        Poll::Pending => break,
                    }
                    taken += 1;
                }
                if !matches!(step, Step::Go) && out.len() > batch_start {
                    // Whatever ends the connection, the frames before it in the burst were
                    // handled, and their replies go out first, as if answered one by one.
                    // (Replies are not deliveries: writing them counts nothing.)
                    let mut replies = out.split_off(batch_start);
                    let _ = tokio::time::timeout(
                        CLOSE_GRACE,
                        write_out(&mut sink, &mut replies, &mut budget),
                    )
                    .await;
                }
                match step {
                    Step::Go => None,
                    Step::Close(code, reason) => Some((code, reason)),
                    Step::End => return,
                    Step::PeerClosed => {
                        // Leave the subscription first, so a quick reconnect finds it free, then
                        // let the stream send the close reply.
                        drop(session);
                        let _ = tokio::time::timeout(CLOSE_GRACE, async {
                            while let Some(Ok(_)) = stream.next().await {}
                        })
                        .await;
                        return;
                    }
                }
            }
            _ = notified => None,
            _ = timer => None,
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
            return;
        }
    }
}

/// An upgrade refused by a fault injector (`LocalServer::<injector>`), with the status's reason.
fn injected_refusal(status: u16, injector: &str) -> Rejection {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Refused");
    Rejection::new(
        status,
        format!("{reason} (injected by LocalServer::{injector})"),
    )
}
