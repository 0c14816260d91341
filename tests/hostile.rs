//! Hostile server input against `ReconnectingStream` over real TCP on 127.0.0.1.
//!
//! Each test runs a misbehaving server (a `tokio-tungstenite` server, or a raw `TcpListener`
//! writing handshake and frame bytes by hand where tungstenite would refuse to misbehave) and
//! checks that the client does not panic, does not hang (every body is bounded by a 20 s timeout),
//! reports a typed error and then retries or stops as documented. Assertions are on outcomes
//! (errors, events, counts), never on measured durations.
//!
//! Keepalive is off unless a test is about it: a ping that goes unanswered on a loaded machine
//! would add errors the assertions do not expect.

mod support;

use stream_websocket::Listen;
use support::{bounded, drain, ms, ServerWs};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use stream_websocket::tungstenite::handshake::derive_accept_key;
use stream_websocket::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use stream_websocket::tungstenite::http;
use stream_websocket::tungstenite::protocol::frame::coding::CloseCode;
use stream_websocket::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use stream_websocket::tungstenite::{self, Message};
use stream_websocket::{
    CloseEvent, Connect, DecodeError, Error, Incoming, Outgoing, Publish, ReconnectConfig,
    ReconnectConfigBuilder, ReconnectingStream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Short real-time settings. The connect timeout is generous (a loaded machine must never hit
/// it by accident); the tests about it set their own.
fn base() -> ReconnectConfigBuilder {
    support::trace_init();
    // An immediate first reconnect, so that schedules are exact; the spread first reconnect has
    // tests of its own (tests/reconnect.rs, tests/fleet.rs).
    ReconnectConfig::builder()
        .min_delay(ms(10))
        .max_delay(ms(50))
        .first_reconnect_window(Duration::ZERO)
        .seed(3)
        .connect_timeout(ms(2000))
        .no_keepalive()
}

/// A listener on an ephemeral port of 127.0.0.1, and the WebSocket URL that reaches it.
async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("ws://{addr}/ws"))
}

/// The stream under test: a real `connect` to `url` on every attempt, counted in `attempts`.
fn client(
    url: String,
    config: ReconnectConfig,
    attempts: &Arc<AtomicUsize>,
) -> ReconnectingStream<impl Connect> {
    let attempts = attempts.clone();
    ReconnectingStream::with_config(
        move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            stream_websocket::connect(url.clone())
        },
        config,
    )
}

/// Accepts connections forever, counting them, and hands each (with its 1-based number) to
/// `handler` in a task of its own.
fn serve<H, Fut>(listener: TcpListener, accepted: &Arc<AtomicUsize>, handler: H) -> JoinHandle<()>
where
    H: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accepted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(handler(n, tcp));
        }
    })
}

/// Waits until the accept loop has counted `n` connections (a finished client attempt means the
/// kernel completed its TCP connect, but the accept loop may not have run yet), then checks that
/// there are exactly `n`.
async fn assert_accepted(accepted: &AtomicUsize, n: usize) {
    for _ in 0..200 {
        if accepted.load(Ordering::SeqCst) >= n {
            break;
        }
        tokio::time::sleep(ms(10)).await;
    }
    // A moment more, so that an unexpected extra connection would be counted too.
    tokio::time::sleep(ms(50)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        n,
        "TCP connections accepted"
    );
}

/// A consumer message frame with id `id` and payload `payload`.
fn consumer_text(id: &str, payload: &str) -> String {
    support::consumer_frame(id, payload.as_bytes())
}

async fn send_text(ws: &mut ServerWs, text: String) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// Reads (answering pings, completing a close handshake) until the client goes away.
async fn read_until_gone(ws: &mut ServerWs) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// The payload of a consumer message, as text; panics on anything else.
fn payload(item: Option<Result<Incoming, Error>>) -> String {
    match item {
        Some(Ok(Incoming::Message(m))) => String::from_utf8(m.payload.to_vec()).unwrap(),
        other => panic!("expected a consumer message, got {other:?}"),
    }
}

/// A well-behaved connection: one consumer message `c<n>`, then read until the client goes.
async fn good_connection(n: usize, tcp: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    if ws
        .send(Message::Text(
            consumer_text(&format!("id-{n}"), &format!("c{n}")).into(),
        ))
        .await
        .is_ok()
    {
        read_until_gone(&mut ws).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket bytes
// ---------------------------------------------------------------------------------------------

/// Reads an HTTP request head (up to the blank line) and returns it as text.
async fn read_request_head(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || tcp.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The `101` answer to a WebSocket upgrade request head.
fn upgrade_response(request_head: &str) -> String {
    let key = request_head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim().to_string())
        .expect("the client sent a Sec-WebSocket-Key");
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

/// Reads the upgrade request and answers it at once. `None` if the client went away.
async fn raw_handshake(tcp: &mut TcpStream) -> Option<()> {
    let head = read_request_head(tcp).await.ok()?;
    tcp.write_all(upgrade_response(&head).as_bytes()).await.ok()
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// A server-to-client frame: never masked. `first` is the first header byte without the opcode
/// (FIN and RSV bits).
fn raw_frame_with(first: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A final (FIN) frame.
fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame_with(0x80, opcode, payload)
}

/// A Close frame with this code and reason.
fn raw_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    raw_frame(OP_CLOSE, &payload)
}

/// Waits for the client to answer (its Close reply) or go away, then drops the socket: a server
/// closes TCP after the closing handshake.
async fn await_reply_then_drop(mut tcp: TcpStream) {
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(ms(5000), tcp.read(&mut buf)).await;
}

/// A raw connection: handshake, one consumer message `c<n>`, then `bytes`, then wait for the
/// client's answer and drop.
async fn raw_connection_then(n: usize, mut tcp: TcpStream, bytes: Vec<u8>) {
    if raw_handshake(&mut tcp).await.is_none() {
        return;
    }
    let text = consumer_text(&format!("id-{n}"), &format!("c{n}"));
    let mut out = raw_frame(OP_TEXT, text.as_bytes());
    out.extend_from_slice(&bytes);
    if tcp.write_all(&out).await.is_err() {
        return;
    }
    await_reply_then_drop(tcp).await;
}

// ---------------------------------------------------------------------------------------------
// Frames that do not decode
// ---------------------------------------------------------------------------------------------

/// What the client should report for one hostile frame.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Json,
    Shape,
    Base64,
    Binary(usize),
}

fn matches_expectation(error: &Error, expect: Expect) -> bool {
    match (error, expect) {
        (Error::Decode(DecodeError::Json(_)), Expect::Json) => true,
        (Error::Decode(DecodeError::Shape(_)), Expect::Shape) => true,
        (Error::Decode(DecodeError::Base64 { field, .. }), Expect::Base64) => *field == "payload",
        (Error::Decode(DecodeError::Binary(n)), Expect::Binary(want)) => *n == want,
        _ => false,
    }
}

#[tokio::test]
async fn frames_that_do_not_decode_are_reported_and_skipped_without_reconnecting() {
    bounded(async {
        let bad: Vec<(Message, Expect)> = vec![
            (Message::text("this is not json"), Expect::Json),
            (Message::text(""), Expect::Json),
            (Message::text(r#"{"messageId":"m1","payload":"#), Expect::Json),
            (Message::text("[1,2,3]"), Expect::Shape),
            (Message::text("[]"), Expect::Shape),
            (Message::text(r#""a string""#), Expect::Shape),
            (Message::text("12345"), Expect::Shape),
            (Message::text("null"), Expect::Shape),
            (
                Message::text(r#"{"messageId":5,"payload":"aGk="}"#),
                Expect::Shape,
            ),
            (
                Message::text(r#"{"messageId":"m2","payload":"aGk=","properties":"x"}"#),
                Expect::Shape,
            ),
            (
                Message::text(r#"{"messageId":"m3","payload":"aGk=","redeliveryCount":-1}"#),
                Expect::Shape,
            ),
            (
                Message::text(r#"{"messageId":"m4","payload":"%%% not base64 %%%"}"#),
                Expect::Base64,
            ),
            (
                Message::text(r#"{"messageId":"m5","payload":"aGk"}"#),
                Expect::Base64,
            ),
            (Message::binary(vec![0u8, 1, 2, 3, 255]), Expect::Binary(5)),
        ];
        let expected: Vec<Expect> = bad.iter().map(|(_, e)| *e).collect();
        let extra_fields = r#"{"messageId":"extra","payload":"d2l0aCBleHRyYXM=","properties":{"a":"b"},
            "unknownField":{"nested":[1,2,{"x":null}]},"anotherOne":42,"publishTime":"2024-01-01T00:00:00Z"}"#;

        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(Mutex::new(Some(bad)));
        let server = serve(listener, &accepted, move |_, tcp| {
            let frames = frames.lock().unwrap().take().expect("one connection only");
            async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                for (frame, _) in frames {
                    ws.send(frame).await.unwrap();
                }
                send_text(&mut ws, extra_fields.to_string()).await;
                send_text(&mut ws, consumer_text("good", "still here")).await;
                read_until_gone(&mut ws).await;
            }
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().build().unwrap(), &attempts);
        let mut errors = stream.on_error();
        let mut closes = stream.on_close();
        let mut reconnecting = stream.on_reconnecting();

        // Unknown fields are ignored: the frame decodes.
        match stream.next().await {
            Some(Ok(Incoming::Message(m))) => {
                assert_eq!(m.message_id.as_str(), "extra");
                assert_eq!(&m.payload[..], b"with extras");
                assert_eq!(m.properties.get("a").map(String::as_str), Some("b"));
                assert_eq!(m.publish_time.as_deref(), Some("2024-01-01T00:00:00Z"));
            }
            other => panic!("expected the message with extra fields, got {other:?}"),
        }
        // After all the bad ones, a good frame still arrives.
        assert_eq!(payload(stream.next().await), "still here");

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), expected.len(), "one error per bad frame: {errors:?}");
        for (i, (error, want)) in errors.iter().zip(&expected).enumerate() {
            assert!(
                matches_expectation(error, *want),
                "frame {i}: expected {want:?}, got {error:?}"
            );
            assert!(error.is_retryable(), "a decode error never ends the stream");
        }
        // Nothing reconnected: one attempt, one connection, still open.
        assert!(drain(&mut closes).is_empty());
        assert!(drain(&mut reconnecting).is_empty());
        assert!(stream.is_open());
        assert_eq!(stream.connections(), 1);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_accepted(&accepted, 1).await;

        stream.close().await.unwrap();
        assert!(stream.next().await.is_none());
        server.abort();
    })
    .await;
}

/// A JSON array whose elements line up with the fields of a consumer message frame.
const ARRAY_SHAPED_LIKE_A_MESSAGE: &str = r#"["array-id","aGk="]"#;

#[tokio::test]
async fn a_json_array_is_a_shape_error_even_when_it_lines_up_with_a_message() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, |_, tcp| async move {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            send_text(&mut ws, ARRAY_SHAPED_LIKE_A_MESSAGE.to_string()).await;
            send_text(&mut ws, consumer_text("good", "after the array")).await;
            read_until_gone(&mut ws).await;
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().build().unwrap(), &attempts);
        let mut errors = stream.on_error();

        assert_eq!(payload(stream.next().await), "after the array");
        let errors = drain(&mut errors);
        assert!(
            matches!(errors.as_slice(), [Error::Decode(DecodeError::Shape(_))]),
            "{errors:?}"
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "a decode error does not reconnect"
        );
        assert_accepted(&accepted, 1).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_a_protocol_error_and_reconnects() {
    let (close, errors) = bounded(reconnects_after_first(|n, tcp| {
        raw_connection_then(n, tcp, raw_frame(OP_TEXT, &[b'{', 0xff, 0xfe, b'}']))
    }))
    .await;
    assert_eq!(close.code, None);
    assert!(matches!(close.error, Some(Error::Protocol(_))), "{close:?}");
    assert!(
        matches!(errors.as_slice(), [Error::Protocol(_)]),
        "{errors:?}"
    );
}

#[tokio::test]
async fn protocol_violations_are_reported_and_reconnected() {
    let mut masked = raw_frame(OP_TEXT, b"");
    masked[1] |= 0x80; // a masked frame from a server (with a zero mask key and no payload)
    masked.extend_from_slice(&[0, 0, 0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("masked frame from the server", masked),
        ("reserved opcode 0x3", raw_frame(0x3, b"x")),
        (
            "RSV1 without an extension",
            raw_frame_with(0xC0, OP_TEXT, b"{}"),
        ),
        (
            "control frame over 125 bytes",
            raw_frame(OP_PING, &[b'p'; 126]),
        ),
        (
            "fragmented control frame",
            raw_frame_with(0x00, OP_PING, b"p"),
        ),
        (
            "continuation without a start",
            raw_frame(OP_CONTINUATION, b"x"),
        ),
        (
            "close frame with a 1-byte payload",
            raw_frame(OP_CLOSE, &[3]),
        ),
    ];
    for (what, bytes) in cases {
        let (close, errors) = bounded(reconnects_after_first(move |n, tcp| {
            raw_connection_then(n, tcp, bytes.clone())
        }))
        .await;
        assert!(
            matches!(close.error, Some(Error::Protocol(_))),
            "{what}: {close:?}"
        );
        assert!(
            matches!(errors.as_slice(), [Error::Protocol(_)]),
            "{what}: {errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------------------------

/// A stream whose connections refuse messages and frames over 1 KiB.
fn small_limit_client(
    url: String,
    attempts: &Arc<AtomicUsize>,
) -> ReconnectingStream<impl Connect> {
    let attempts = attempts.clone();
    let limits = WebSocketConfig::default()
        .max_message_size(Some(1024))
        .max_frame_size(Some(1024));
    ReconnectingStream::with_config(
        move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            stream_websocket::connect_with_config(url.clone(), limits)
        },
        base().build().unwrap(),
    )
}

/// Runs `server_conn` for every connection of a 1 KiB-limited client: it must yield the small
/// message `c1`, then end with `Error::Capacity` after that one connection.
async fn capacity_ends_the_stream<H, Fut>(server_conn: H)
where
    H: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, url) = bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, &accepted, server_conn);
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut stream = small_limit_client(url, &attempts);
    let mut errors = stream.on_error();
    let mut closes = stream.on_close();
    let mut reconnecting = stream.on_reconnecting();

    assert_eq!(payload(stream.next().await), "c1");
    match stream.next().await {
        Some(Err(Error::Capacity(e))) => {
            assert!(matches!(*e, tungstenite::Error::Capacity(_)), "{e:?}")
        }
        other => panic!("expected Error::Capacity, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
    assert!(stream.next().await.is_none(), "fused");

    let errors = drain(&mut errors);
    assert!(
        matches!(errors.as_slice(), [Error::Capacity(_)]),
        "{errors:?}"
    );
    let closes = drain(&mut closes);
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert!(!closes[0].reconnect, "{closes:?}");
    assert!(matches!(closes[0].error, Some(Error::Capacity(_))));
    assert!(drain(&mut reconnecting).is_empty(), "not retried");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_accepted(&accepted, 1).await;
    server.abort();
}

#[tokio::test]
async fn a_frame_over_the_size_limit_ends_the_stream_with_capacity() {
    bounded(capacity_ends_the_stream(|n, tcp| async move {
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        send_text(&mut ws, consumer_text(&format!("id-{n}"), &format!("c{n}"))).await;
        // 64 KiB of valid JSON in one text frame.
        let big = consumer_text("big", &"x".repeat(48 * 1024));
        assert!(big.len() >= 64 * 1024);
        let _ = ws.send(Message::Text(big.into())).await;
        read_until_gone(&mut ws).await;
    }))
    .await;
}

#[tokio::test]
async fn a_fragmented_message_over_the_size_limit_ends_the_stream_with_capacity() {
    bounded(capacity_ends_the_stream(|n, tcp| {
        // 128 fragments of 512 bytes: each frame is within the limit, the message is not.
        let mut bytes = raw_frame_with(0x00, OP_TEXT, &[b'a'; 512]);
        for i in 1..128 {
            let fin = if i == 127 { 0x80 } else { 0x00 };
            bytes.extend(raw_frame_with(fin, OP_CONTINUATION, &[b'a'; 512]));
        }
        raw_connection_then(n, tcp, bytes)
    }))
    .await;
}

// ---------------------------------------------------------------------------------------------
// Close codes and dropped connections
// ---------------------------------------------------------------------------------------------

/// Serves connection 1 with `first` and every later one with [`good_connection`]; the client must
/// read `c1` (sent by `first` before it misbehaves) and then `c2` from a second connection.
/// Returns the one close event and the errors reported.
async fn reconnects_after_first<H, Fut>(first: H) -> (CloseEvent, Vec<Error>)
where
    H: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, url) = bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(first);
    let server = serve(listener, &accepted, move |n, tcp| {
        let first = first.clone();
        async move {
            if n == 1 {
                first(n, tcp).await;
            } else {
                good_connection(n, tcp).await;
            }
        }
    });
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut stream = client(url, base().build().unwrap(), &attempts);
    let mut errors = stream.on_error();
    let mut closes = stream.on_close();
    let mut opens = stream.on_open();
    let mut reconnecting = stream.on_reconnecting();

    assert_eq!(payload(stream.next().await), "c1");
    assert_eq!(payload(stream.next().await), "c2");

    let opened: Vec<u64> = drain(&mut opens).iter().map(|o| o.connection).collect();
    assert_eq!(opened, [1, 2]);
    let mut closed = drain(&mut closes);
    assert_eq!(closed.len(), 1, "{closed:?}");
    let close = closed.remove(0);
    assert_eq!(close.connection, 1);
    assert!(close.reconnect, "{close:?}");
    let reconnecting = drain(&mut reconnecting);
    assert_eq!(reconnecting.len(), 1, "{reconnecting:?}");
    assert_eq!(reconnecting[0].attempt, 1);
    assert_eq!(
        reconnecting[0].delay,
        Duration::ZERO,
        "the first reconnect is immediate"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_accepted(&accepted, 2).await;
    assert!(stream.is_open());
    stream.close().await.unwrap();
    server.abort();
    (close, drain(&mut errors))
}

/// Connection 1 sends `c1` and then closes with this frame (tungstenite server), finishing the
/// closing handshake.
async fn close_with(n: usize, tcp: TcpStream, frame: Option<CloseFrame>) {
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    send_text(&mut ws, consumer_text(&format!("id-{n}"), &format!("c{n}"))).await;
    let _ = ws.close(frame).await;
    read_until_gone(&mut ws).await;
}

/// The close event of a clean close carries the code and reason, and the error the classifier
/// was given: `ConnectionClosed` with the same code and reason.
fn assert_clean_close(close: &CloseEvent, code: Option<CloseCode>, reason: &str) {
    assert_eq!(close.code, code, "{close:?}");
    assert_eq!(close.reason, reason, "{close:?}");
    match &close.error {
        Some(Error::ConnectionClosed { code: c, reason: r }) => {
            assert_eq!((*c, r.as_str()), (code, reason), "{close:?}")
        }
        other => panic!("a close event carries the classified error, got {other:?}"),
    }
}

/// A clean close with `code`: reported on the close event and reconnected. `alarm`: whether it
/// is also an error event (the server failed), rather than a quiet close (restart, idle).
async fn clean_close_is_reconnected(code: CloseCode, reason: &'static str, alarm: bool) {
    let (close, errors) = bounded(reconnects_after_first(move |n, tcp| {
        close_with(
            n,
            tcp,
            Some(CloseFrame {
                code,
                reason: reason.into(),
            }),
        )
    }))
    .await;
    assert_clean_close(&close, Some(code), reason);
    if alarm {
        assert_eq!(errors.len(), 1, "{code}: {errors:?}");
        assert_eq!(errors[0].close_code(), Some(code), "{errors:?}");
    } else {
        assert!(errors.is_empty(), "{code} is not an error: {errors:?}");
    }
}

#[tokio::test]
async fn close_1000_is_reported_and_reconnected() {
    clean_close_is_reconnected(CloseCode::Normal, "bye", false).await;
}

#[tokio::test]
async fn close_1001_is_reported_and_reconnected() {
    clean_close_is_reconnected(CloseCode::Away, "idle timeout", false).await;
}

#[tokio::test]
async fn close_1012_is_reported_and_reconnected() {
    clean_close_is_reconnected(CloseCode::Restart, "restarting", false).await;
}

#[tokio::test]
async fn close_1011_is_reconnected_with_an_error_event() {
    clean_close_is_reconnected(CloseCode::Error, "server error", true).await;
}

#[tokio::test]
async fn an_application_close_code_is_reconnected_quietly() {
    clean_close_is_reconnected(CloseCode::Library(4100), "rebalancing", false).await;
}

/// A close that says the client is at fault ends the stream: one attempt, the close error
/// yielded and on the error listeners, a close event that does not reconnect.
async fn client_fault_close_ends_the_stream(code: CloseCode) {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, move |n, tcp| {
            let frame = CloseFrame {
                code,
                reason: "refused".into(),
            };
            close_with(n, tcp, Some(frame))
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().build().unwrap(), &attempts);
        let mut errors = stream.on_error();
        let mut closes = stream.on_close();

        assert_eq!(payload(stream.next().await), "c1");
        match stream.next().await {
            Some(Err(e)) => assert_eq!(e.close_code(), Some(code), "{e:?}"),
            other => panic!("{code}: expected the close error, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        let closes = drain(&mut closes);
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert_clean_close(&closes[0], Some(code), "refused");
        assert!(!closes[0].reconnect, "{closes:?}");
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].close_code(), Some(code));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "{code}: not retried");
        assert_accepted(&accepted, 1).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn close_1008_policy_violation_ends_the_stream() {
    client_fault_close_ends_the_stream(CloseCode::Policy).await;
}

#[tokio::test]
async fn closes_1003_1007_1009_end_the_stream() {
    for code in [CloseCode::Unsupported, CloseCode::Invalid, CloseCode::Size] {
        client_fault_close_ends_the_stream(code).await;
    }
}

#[tokio::test]
async fn a_close_without_status_reports_no_code_and_reconnects() {
    let (close, errors) = bounded(reconnects_after_first(|n, tcp| close_with(n, tcp, None))).await;
    // 1005: no status was sent.
    assert_clean_close(&close, None, "");
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn an_abrupt_drop_1006_is_an_error_and_reconnects() {
    let (close, errors) = bounded(reconnects_after_first(|n, tcp| async move {
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        send_text(&mut ws, consumer_text(&format!("id-{n}"), &format!("c{n}"))).await;
        drop(ws); // no Close frame
    }))
    .await;
    assert_eq!(close.code, None);
    let dropped = |e: &Error| {
        matches!(
            e,
            Error::Protocol(_) | Error::Io(_) | Error::ConnectionClosed { code: None, .. }
        )
    };
    assert!(close.error.as_ref().is_some_and(dropped), "{close:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(dropped(&errors[0]), "{errors:?}");
}

/// A raw Close frame with a code that is illegal on the wire: tungstenite answers it with 1002
/// "Protocol violation" and reports that code; the stream reconnects, with an error event (a
/// server that breaks the protocol deserves an alarm).
async fn illegal_close_code_is_reconnected(code: u16) {
    let (close, errors) = bounded(reconnects_after_first(move |n, tcp| {
        raw_connection_then(n, tcp, raw_close(code, "illegal"))
    }))
    .await;
    assert_clean_close(&close, Some(CloseCode::Protocol), "Protocol violation");
    assert_eq!(errors.len(), 1, "code {code}: {errors:?}");
    assert_eq!(errors[0].close_code(), Some(CloseCode::Protocol));
}

#[tokio::test]
async fn an_illegal_close_code_1_is_reconnected() {
    illegal_close_code_is_reconnected(1).await;
}

#[tokio::test]
async fn an_illegal_close_code_999_is_reconnected() {
    illegal_close_code_is_reconnected(999).await;
}

#[tokio::test]
async fn close_codes_reserved_for_local_use_on_the_wire_are_reconnected() {
    // 1005 and 1006 must never be sent; 1015 neither; 0 and 5000 are outside every range.
    for code in [1005, 1006, 1015, 0, 5000] {
        illegal_close_code_is_reconnected(code).await;
    }
}

#[tokio::test]
async fn a_legal_raw_close_code_is_reported_as_sent() {
    let (close, errors) = bounded(reconnects_after_first(|n, tcp| {
        raw_connection_then(n, tcp, raw_close(4000, "application"))
    }))
    .await;
    assert_clean_close(&close, Some(CloseCode::Library(4000)), "application");
    assert!(errors.is_empty(), "{close:?} {errors:?}");
}

#[tokio::test]
async fn a_close_frame_without_tcp_close_is_still_reconnected() {
    let (close, errors) = bounded(reconnects_after_first(|n, mut tcp| async move {
        if raw_handshake(&mut tcp).await.is_none() {
            return;
        }
        let text = consumer_text(&format!("id-{n}"), &format!("c{n}"));
        let mut out = raw_frame(OP_TEXT, text.as_bytes());
        out.extend(raw_close(1000, "done"));
        tcp.write_all(&out).await.unwrap();
        // Never close the TCP connection; keep it for the rest of the test.
        std::future::pending::<()>().await;
    }))
    .await;
    assert_eq!(close.code, Some(CloseCode::Normal));
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn with_keepalive_a_close_frame_without_tcp_close_is_eventually_replaced() {
    // The same server as above, with keepalive on: the next ping finds the connection closed.
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, |n, mut tcp| async move {
            if n > 1 {
                return good_connection(n, tcp).await;
            }
            if raw_handshake(&mut tcp).await.is_none() {
                return;
            }
            let text = consumer_text(&format!("id-{n}"), &format!("c{n}"));
            let mut out = raw_frame(OP_TEXT, text.as_bytes());
            out.extend(raw_close(1000, "done"));
            tcp.write_all(&out).await.unwrap();
            std::future::pending::<()>().await;
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let config = base()
            .ping_interval(ms(200))
            .pong_timeout(ms(400))
            .build()
            .unwrap();
        let mut stream = client(url, config, &attempts);
        let mut closes = stream.on_close();

        assert_eq!(payload(stream.next().await), "c1");
        assert_eq!(payload(stream.next().await), "c2");
        let closes = drain(&mut closes);
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert_eq!(closes[0].code, Some(CloseCode::Normal), "{closes:?}");
        assert!(closes[0].reconnect);
        // The peer's Close ends the connection cleanly: nothing is written after it.
        assert_clean_close(&closes[0], Some(CloseCode::Normal), "done");
        assert_accepted(&accepted, 2).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn an_item_sent_after_the_peers_close_keeps_the_close_clean() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        // Connection 1: c1; on `go` a Close 1000; then it waits for `done` before reading (so it
        // neither answers nor closes TCP in between).
        let go = Arc::new(tokio::sync::Notify::new());
        let close_sent = Arc::new(tokio::sync::Notify::new());
        let done = Arc::new(tokio::sync::Notify::new());
        let received = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
        let signals = (
            go.clone(),
            close_sent.clone(),
            done.clone(),
            received.clone(),
        );
        let server = serve(listener, &accepted, move |n, tcp| {
            let (go, close_sent, done, record) = signals.clone();
            async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                send_text(&mut ws, consumer_text(&format!("id-{n}"), &format!("c{n}"))).await;
                if n == 1 {
                    go.notified().await;
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "bye".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    close_sent.notify_one();
                    done.notified().await;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        record.lock().unwrap().push((n, t.as_str().to_string()));
                    }
                }
            }
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().build().unwrap(), &attempts);
        let mut errors = stream.on_error();
        let mut closes = stream.on_close();

        assert_eq!(payload(stream.next().await), "c1");
        go.notify_one();
        close_sent.notified().await;
        // Not a timing assertion: give the Close frame time to reach the client's socket.
        tokio::time::sleep(ms(100)).await;
        let item = Outgoing::Publish(Publish::new("after the close"));
        stream.send(item).await.unwrap();
        done.notify_one();
        assert_eq!(payload(stream.next().await), "c2");

        let closes = drain(&mut closes);
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert_eq!(closes[0].code, Some(CloseCode::Normal));
        let errors = drain(&mut errors);
        // Nothing is lost either way: the item goes out on the second connection.
        for _ in 0..200 {
            if !received.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0].0, 2);
        // The close was clean.
        assert!(
            matches!(closes[0].error, Some(Error::ConnectionClosed { .. })),
            "a clean close: {:?}",
            closes[0]
        );
        assert!(errors.is_empty(), "no error for a clean close: {errors:?}");
        server.abort();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Handshake answered with an HTTP error
// ---------------------------------------------------------------------------------------------

/// Answers every upgrade request with `status` (and a `Location` header for 3xx).
fn rejecting_server(
    listener: TcpListener,
    status: u16,
    accepted: &Arc<AtomicUsize>,
) -> JoinHandle<()> {
    serve(listener, accepted, move |_, tcp| async move {
        // The Err type is tungstenite's `ErrorResponse`, fixed by its `Callback` trait.
        #[allow(clippy::result_large_err)]
        let reject = move |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
            let mut response = http::Response::builder().status(status);
            if (300..400).contains(&status) {
                response = response.header(http::header::LOCATION, "ws://127.0.0.1:1/elsewhere");
            }
            Err(response
                .body(Some(format!("rejected with {status}")))
                .unwrap())
        };
        let result = tokio_tungstenite::accept_hdr_async(tcp, reject).await;
        assert!(result.is_err(), "the handshake was rejected");
    })
}

/// A permanent rejection: `Error::Http { status }` after exactly one attempt.
async fn rejection_ends_the_stream(status: u16) {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = rejecting_server(listener, status, &accepted);
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().max_retries(5).build().unwrap(), &attempts);
        let mut errors = stream.on_error();
        let mut reconnecting = stream.on_reconnecting();
        let mut gave_up = stream.on_gave_up();
        let mut opens = stream.on_open();

        match stream.next().await {
            Some(Err(Error::Http {
                status: got, body, ..
            })) => {
                assert_eq!(got, status);
                let body = body.unwrap_or_default();
                assert!(body.contains("rejected with"), "{status}: body {body:?}");
            }
            other => panic!("{status}: expected Error::Http, got {other:?}"),
        }
        assert!(stream.next().await.is_none(), "{status}");
        assert!(stream.next().await.is_none(), "{status}: fused");

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 1, "{status}: {errors:?}");
        assert_eq!(errors[0].http_status(), Some(status));
        assert!(
            drain(&mut reconnecting).is_empty(),
            "{status} is not retried"
        );
        assert!(drain(&mut gave_up).is_empty());
        assert!(drain(&mut opens).is_empty());
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "{status}: one attempt");
        assert_accepted(&accepted, 1).await;
        server.abort();
    })
    .await;
}

/// A transient rejection: retried; with `max_retries(2)` three attempts, then `GaveUp`.
async fn rejection_is_retried(status: u16) {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = rejecting_server(listener, status, &accepted);
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().max_retries(2).build().unwrap(), &attempts);
        let mut errors = stream.on_error();
        let mut reconnecting = stream.on_reconnecting();
        let mut gave_up = stream.on_gave_up();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 2, "{status}");
                assert!(
                    matches!(*last, Error::Http { status: s, .. } if s == status),
                    "{status}: last {last:?}"
                );
            }
            other => panic!("{status}: expected GaveUp, got {other:?}"),
        }
        assert!(stream.next().await.is_none(), "{status}");

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 3, "{status}: {errors:?}");
        assert!(
            errors.iter().all(|e| e.http_status() == Some(status)),
            "{status}: {errors:?}"
        );
        let reconnecting = drain(&mut reconnecting);
        let schedule: Vec<(u32, Duration)> =
            reconnecting.iter().map(|r| (r.attempt, r.delay)).collect();
        assert_eq!(schedule, [(1, Duration::ZERO), (2, ms(10))], "{status}");
        let gave_up = drain(&mut gave_up);
        assert_eq!(gave_up.len(), 1, "{status}");
        assert_eq!(gave_up[0].attempts, 2);
        assert_eq!(gave_up[0].last_error.http_status(), Some(status));
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            3,
            "{status}: three attempts"
        );
        assert_accepted(&accepted, 3).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn http_301_ends_the_stream() {
    rejection_ends_the_stream(301).await;
}

#[tokio::test]
async fn http_302_ends_the_stream() {
    rejection_ends_the_stream(302).await;
}

#[tokio::test]
async fn http_400_ends_the_stream() {
    rejection_ends_the_stream(400).await;
}

#[tokio::test]
async fn http_401_ends_the_stream() {
    rejection_ends_the_stream(401).await;
}

#[tokio::test]
async fn http_403_ends_the_stream() {
    rejection_ends_the_stream(403).await;
}

#[tokio::test]
async fn http_404_ends_the_stream() {
    rejection_ends_the_stream(404).await;
}

#[tokio::test]
async fn http_409_is_retried_then_gives_up() {
    rejection_is_retried(409).await;
}

#[tokio::test]
async fn http_429_is_retried_then_gives_up() {
    rejection_is_retried(429).await;
}

#[tokio::test]
async fn http_500_is_retried_then_gives_up() {
    rejection_is_retried(500).await;
}

#[tokio::test]
async fn http_503_is_retried_then_gives_up() {
    rejection_is_retried(503).await;
}

#[tokio::test]
async fn a_garbage_handshake_response_is_a_protocol_error_and_retried() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, |_, mut tcp| async move {
            if read_request_head(&mut tcp).await.is_ok() {
                let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                await_reply_then_drop(tcp).await;
            }
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut stream = client(url, base().max_retries(1).build().unwrap(), &attempts);
        let mut errors = stream.on_error();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 1);
                assert!(matches!(*last, Error::Protocol(_)), "{last:?}");
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| matches!(e, Error::Protocol(_))),
            "{errors:?}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_accepted(&accepted, 2).await;
        server.abort();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Stalled and slow handshakes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_handshake_never_answered_times_out_and_is_retried() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        // The first two connections are held open and never answered; the third is served.
        let server = serve(listener, &accepted, |n, tcp| async move {
            if n <= 2 {
                let _held = tcp;
                std::future::pending::<()>().await;
            } else {
                good_connection(n, tcp).await;
            }
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let config = base().connect_timeout(ms(500)).build().unwrap();
        let mut stream = client(url, config, &attempts);
        let mut errors = stream.on_error();
        let mut opens = stream.on_open();
        let mut reconnecting = stream.on_reconnecting();

        assert_eq!(payload(stream.next().await), "c3");

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| matches!(e, Error::ConnectTimeout(d) if *d == ms(500))),
            "{errors:?}"
        );
        let opens = drain(&mut opens);
        assert_eq!(opens.len(), 1, "{opens:?}");
        assert_eq!((opens[0].connection, opens[0].attempt), (1, 2));
        assert_eq!(drain(&mut reconnecting).len(), 2);
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_accepted(&accepted, 3).await;
        server.abort();
    })
    .await;
}

/// Answers the upgrade `chunk` bytes at a time, one chunk every 20 ms, then sends one consumer
/// message `c<n>` and holds the connection until the client leaves.
async fn trickling_connection(n: usize, mut tcp: TcpStream, chunk: usize) {
    let Ok(head) = read_request_head(&mut tcp).await else {
        return;
    };
    let response = upgrade_response(&head);
    for piece in response.as_bytes().chunks(chunk) {
        if tcp.write_all(piece).await.is_err() {
            return;
        }
        tokio::time::sleep(ms(20)).await;
    }
    let text = consumer_text(&format!("id-{n}"), &format!("c{n}"));
    if tcp
        .write_all(&raw_frame(OP_TEXT, text.as_bytes()))
        .await
        .is_ok()
    {
        await_reply_then_drop(tcp).await;
    }
}

#[tokio::test]
async fn a_slowly_trickled_handshake_completes_within_the_connect_timeout() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        // 8 bytes every 20 ms: ~17 writes over ~0.35 s.
        let server = serve(listener, &accepted, |n, tcp| {
            trickling_connection(n, tcp, 8)
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let config = base()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut stream = client(url, config, &attempts);
        let mut errors = stream.on_error();

        assert_eq!(payload(stream.next().await), "c1");
        assert!(drain(&mut errors).is_empty());
        assert_eq!(stream.connections(), 1);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_accepted(&accepted, 1).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn a_handshake_trickled_one_byte_at_a_time_is_refused_by_the_handshake_flood_check() {
    // tungstenite's handshake reader treats more than 64 reads averaging under 128 bytes as an
    // attack (`Error::AttackAttempt`): a ~130-byte response sent one byte per 20 ms fails at the
    // 65th byte, well within a 10 s connect timeout, as a retried protocol error.
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, |n, tcp| trickling_connection(n, tcp, 1));
        let attempts = Arc::new(AtomicUsize::new(0));
        let config = base()
            .connect_timeout(Duration::from_secs(10))
            .max_retries(1)
            .build()
            .unwrap();
        let mut stream = client(url, config, &attempts);
        let mut errors = stream.on_error();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 1);
                assert!(
                    matches!(&*last, Error::Protocol(e) if matches!(**e, tungstenite::Error::AttackAttempt)),
                    "{last:?}"
                );
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| matches!(e, Error::Protocol(_))), "{errors:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_accepted(&accepted, 2).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn a_handshake_trickled_past_the_connect_timeout_times_out_and_is_retried() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, &accepted, |n, tcp| {
            trickling_connection(n, tcp, 1)
        });
        let attempts = Arc::new(AtomicUsize::new(0));
        let config = base()
            .connect_timeout(ms(300))
            .max_retries(1)
            .build()
            .unwrap();
        let mut stream = client(url, config, &attempts);
        let mut errors = stream.on_error();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 1);
                assert!(
                    matches!(*last, Error::ConnectTimeout(d) if d == ms(300)),
                    "{last:?}"
                );
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| matches!(e, Error::ConnectTimeout(_))),
            "{errors:?}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_accepted(&accepted, 2).await;
        server.abort();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A flooding server and the read-ahead bound
// ---------------------------------------------------------------------------------------------

/// A transport that counts the data messages taken from the connection (each one is decoded at
/// once by the stream, so this is how many messages the stream has read).
struct Counted<T> {
    inner: T,
    data_messages: Arc<AtomicUsize>,
}

impl<T> Stream for Counted<T>
where
    T: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(Message::Text(_) | Message::Binary(_)))) = &poll {
            self.data_messages.fetch_add(1, Ordering::SeqCst);
        }
        poll
    }
}

impl<T> Sink<Message> for Counted<T>
where
    T: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    type Error = tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[tokio::test]
async fn a_flood_is_read_no_further_ahead_than_configured_and_nothing_is_lost() {
    const FLOOD: usize = 10_000;
    const READ_AHEAD: usize = 8;
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let flooded = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::<String>::new()));
        let (flooded_s, received_s) = (flooded.clone(), received.clone());
        let server = serve(listener, &accepted, move |_, tcp| {
            let (flooded, received) = (flooded_s.clone(), received_s.clone());
            async move {
                let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let (mut tx, mut rx) = ws.split();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(msg)) = rx.next().await {
                        if let Message::Text(t) = msg {
                            received.lock().unwrap().push(t.as_str().to_string());
                        }
                    }
                });
                for i in 0..FLOOD {
                    let frame = consumer_text(&i.to_string(), &format!("m{i}"));
                    if tx.send(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                    flooded.fetch_add(1, Ordering::SeqCst);
                }
                let _ = reader.await;
            }
        });

        let read = Arc::new(AtomicUsize::new(0));
        let counter = read.clone();
        let config = base().read_ahead(READ_AHEAD).build().unwrap();
        let mut stream = ReconnectingStream::with_config(
            move || {
                let url = url.clone();
                let data_messages = counter.clone();
                async move {
                    let inner = stream_websocket::connect(url).await?;
                    Ok::<_, Error>(Counted {
                        inner,
                        data_messages,
                    })
                }
            },
            config,
        );
        let mut errors = stream.on_error();
        let mut closes = stream.on_close();
        let publish = |i: usize| Outgoing::Publish(Publish::new(format!("s{i}")));

        // Only the sink side is polled: connect and send one item.
        stream.send(publish(0)).await.unwrap();
        // Let the server get far ahead of the client (the kernel buffers its frames).
        while flooded.load(Ordering::SeqCst) < 200 || received.lock().unwrap().is_empty() {
            tokio::time::sleep(ms(5)).await;
        }
        for i in 1..=20 {
            stream.send(publish(i)).await.unwrap();
        }
        assert_eq!(stream.pending(), 0, "every send was flushed");
        assert_eq!(
            read.load(Ordering::SeqCst),
            READ_AHEAD,
            "a sink-only user makes the stream read exactly read_ahead messages, no more"
        );

        // The read-ahead messages are there at once, in order.
        for i in 0..READ_AHEAD {
            match stream.next().now_or_never() {
                Some(Some(Ok(Incoming::Message(m)))) => {
                    assert_eq!(m.message_id.as_str(), i.to_string())
                }
                other => panic!("read-ahead message {i}: {other:?}"),
            }
        }
        // And the rest of the flood follows, in order, nothing lost or repeated.
        for i in READ_AHEAD..FLOOD {
            match stream.next().await {
                Some(Ok(Incoming::Message(m))) => {
                    assert_eq!(m.message_id.as_str(), i.to_string());
                    assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert_eq!(read.load(Ordering::SeqCst), FLOOD);

        // Everything sent reached the server, in order.
        let want: Vec<String> = (0..=20)
            .map(|i| {
                stream_websocket::PulsarCodec::encode_outgoing(&publish(i))
                    .into_text()
                    .unwrap()
                    .as_str()
                    .to_string()
            })
            .collect();
        while received.lock().unwrap().len() < want.len() {
            tokio::time::sleep(ms(5)).await;
        }
        assert_eq!(*received.lock().unwrap(), want);

        assert!(drain(&mut errors).is_empty());
        assert!(drain(&mut closes).is_empty());
        assert_eq!(stream.connections(), 1);
        assert_accepted(&accepted, 1).await;
        stream.close().await.unwrap();
        server.abort();
    })
    .await;
}
