//! `ReconnectingStream` against real tokio-tungstenite servers over TCP on 127.0.0.1.
//!
//! These tests run in real time (paused time would auto-advance while real I/O is in flight), so
//! every delay and timeout is short, and the assertions are on outcomes (events, errors, counts),
//! never on measured durations. Each test body is bounded by a 20 s timeout so a hang fails.

mod support;

use stream_websocket::Listen;
use support::{bounded, drain, ms, ServerWs};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use stream_websocket::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use stream_websocket::tungstenite::http;
use stream_websocket::tungstenite::protocol::frame::coding::CloseCode;
use stream_websocket::tungstenite::protocol::CloseFrame;
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    Connect, Error, Incoming, ReconnectConfig, ReconnectConfigBuilder, ReconnectingStream,
};
use tokio::net::TcpListener;

/// Short real-time settings. The connect timeout and pong timeout are not what most tests are
/// about, so they are generous enough never to fire on a loaded machine; the tests that exercise
/// them override them.
fn base() -> ReconnectConfigBuilder {
    support::trace_init();
    ReconnectConfig::builder()
        .min_delay(ms(20))
        .max_delay(ms(100))
        .seed(1)
        .connect_timeout(ms(2000))
        .ping_interval(ms(250))
        .pong_timeout(ms(2000))
}

/// A listener on an ephemeral port of 127.0.0.1, and the WebSocket URL that reaches it.
async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("ws://{addr}/ws"))
}

/// The stream under test: a real `connect` to `url` on every attempt.
fn client(url: String, config: ReconnectConfig) -> ReconnectingStream<impl Connect> {
    ReconnectingStream::with_config(move || stream_websocket::connect(url.clone()), config)
}

/// Sends the consumer messages `c<conn>-m<i>` for `i` in `0..count`.
async fn send_frames(ws: &mut ServerWs, conn: usize, count: usize) {
    for i in 0..count {
        let frame =
            support::consumer_frame(&format!("{conn}:{i}"), format!("c{conn}-m{i}").as_bytes());
        ws.send(Message::Text(frame.into())).await.unwrap();
    }
}

/// Reads (answering pings) until the client goes away; returns the text frames received.
async fn read_until_gone(ws: &mut ServerWs) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            texts.push(t.as_str().to_string());
        }
    }
    texts
}

/// The payload of a consumer message, as text; panics on anything else.
fn payload(item: Option<Result<Incoming, Error>>) -> String {
    match item {
        Some(Ok(Incoming::Message(m))) => String::from_utf8(m.payload.to_vec()).unwrap(),
        other => panic!("expected a consumer message, got {other:?}"),
    }
}

/// How a server ends its first connection in [`two_connection_server`].
#[derive(Debug, Clone, Copy)]
enum FirstEnd {
    /// Drop the socket: no Close frame.
    Drop,
    /// Send a Close frame 1001 "going away", then finish the closing handshake.
    CloseAway,
}

/// Serves connection 1 with 3 frames then ends it as `first_end` says; every later connection
/// gets 3 frames and stays open, reading until the client goes away.
async fn two_connection_server(listener: TcpListener, first_end: FirstEnd) {
    let mut n = 0;
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        n += 1;
        let conn = n;
        tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            send_frames(&mut ws, conn, 3).await;
            if conn > 1 {
                read_until_gone(&mut ws).await;
                return;
            }
            match first_end {
                FirstEnd::Drop => drop(ws),
                FirstEnd::CloseAway => {
                    let frame = CloseFrame {
                        code: CloseCode::Away,
                        reason: "going away".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    // Let the client's Close reply arrive, completing the handshake.
                    read_until_gone(&mut ws).await;
                }
            }
        });
    }
}

#[tokio::test]
async fn refused_connections_give_up_after_max_retries() {
    bounded(async {
        let (listener, url) = bind().await;
        drop(listener);
        let config = base().max_retries(3).build().unwrap();
        let mut stream = client(url, config);
        let mut reconnecting = stream.on_reconnecting();
        let mut gave_up = stream.on_gave_up();
        let mut errors = stream.on_error();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts: 3, last })) => {
                assert!(matches!(*last, Error::Io(_)), "last error: {last:?}");
            }
            other => panic!("expected GaveUp after 3 retries, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none(), "fused");

        let attempts: Vec<u32> = drain(&mut reconnecting).iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [1, 2, 3]);
        let gave_up = drain(&mut gave_up);
        assert_eq!(gave_up.len(), 1, "{gave_up:?}");
        assert_eq!(gave_up[0].attempts, 3);
        assert!(matches!(gave_up[0].last_error, Error::Io(_)));
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 4, "one error per attempt: {errors:?}");
        assert!(
            errors.iter().all(|e| matches!(e, Error::Io(_))),
            "{errors:?}"
        );
        assert_eq!(stream.connections(), 0);
    })
    .await;
}

/// Runs a client against `two_connection_server`: all six messages arrive in order over two
/// connections, and the one close event (of connection 1, followed by a reconnect) is returned.
async fn six_messages_over_two_connections(first_end: FirstEnd) -> stream_websocket::CloseEvent {
    let (listener, url) = bind().await;
    let server = tokio::spawn(two_connection_server(listener, first_end));
    let mut stream = client(url, base().build().unwrap());
    let mut opens = stream.on_open();
    let mut closes = stream.on_close();

    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(payload(stream.next().await));
    }
    let want: Vec<String> = (1..=2)
        .flat_map(|c| (0..3).map(move |i| format!("c{c}-m{i}")))
        .collect();
    assert_eq!(got, want);

    let opened: Vec<u64> = drain(&mut opens).iter().map(|o| o.connection).collect();
    assert_eq!(opened, [1, 2]);
    assert_eq!(stream.connections(), 2);
    let mut closed = drain(&mut closes);
    assert_eq!(closed.len(), 1, "{closed:?}");
    let close = closed.remove(0);
    assert_eq!(close.connection, 1);
    assert!(close.reconnect);
    server.abort();
    close
}

#[tokio::test]
async fn an_abruptly_dropped_connection_is_reconnected_without_losing_messages() {
    let close = bounded(six_messages_over_two_connections(FirstEnd::Drop)).await;
    assert_eq!(close.code, None, "no Close frame was sent");
    assert!(close.error.is_some(), "an abrupt drop is an error");
}

#[tokio::test]
async fn a_server_close_frame_is_reported_and_reconnected() {
    let close = bounded(six_messages_over_two_connections(FirstEnd::CloseAway)).await;
    assert_eq!(close.code, Some(CloseCode::Away));
    assert_eq!(close.reason, "going away");
    // A clean close: the classifier got the peer's code and reason, and nothing else.
    assert!(
        matches!(&close.error, Some(Error::ConnectionClosed { code: Some(CloseCode::Away), reason }) if reason == "going away"),
        "a Close frame is a clean close: {close:?}"
    );
    // The messages it delivered were progress.
    assert!(close.progress);
}

#[tokio::test]
async fn a_stalled_handshake_times_out_and_gives_up() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            // Keep every socket open, never answering the handshake.
            let mut sockets = Vec::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                sockets.push(tcp);
            }
        });
        let config = base()
            .connect_timeout(ms(200))
            .max_retries(2)
            .build()
            .unwrap();
        let mut stream = client(url, config);
        let mut errors = stream.on_error();

        match stream.next().await {
            Some(Err(Error::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 2);
                assert!(
                    matches!(*last, Error::ConnectTimeout(d) if d == ms(200)),
                    "last error: {last:?}"
                );
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert!(stream.next().await.is_none());

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors.iter().all(|e| matches!(e, Error::ConnectTimeout(_))),
            "{errors:?}"
        );
        // Every attempt's TCP connect succeeded (the kernel completes it); give the accept loop a
        // chance to catch up with the last one before counting.
        for _ in 0..100 {
            if accepted.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "the initial attempt and 2 retries"
        );
        server.abort();
    })
    .await;
}

/// A server that rejects the handshake of the first `rejections` connections with `status`, then
/// accepts the WebSocket and sends one consumer frame, then reads until the client goes away.
async fn rejecting_server(
    listener: TcpListener,
    status: u16,
    rejections: usize,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            if n <= rejections {
                // The Err type is tungstenite's `ErrorResponse`, fixed by its `Callback` trait.
                #[allow(clippy::result_large_err)]
                let reject = move |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
                    Err(http::Response::builder()
                        .status(status)
                        .body(Some("Failed to authenticate".into()))
                        .unwrap())
                };
                let result = tokio_tungstenite::accept_hdr_async(tcp, reject).await;
                assert!(result.is_err(), "the handshake was rejected");
                return;
            }
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            send_frames(&mut ws, n, 1).await;
            read_until_gone(&mut ws).await;
        });
    }
}

#[tokio::test]
async fn http_401_ends_the_stream_without_retrying() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn(rejecting_server(
            listener,
            401,
            usize::MAX,
            accepted.clone(),
        ));
        let mut stream = client(url, base().build().unwrap());
        let mut errors = stream.on_error();
        let mut reconnecting = stream.on_reconnecting();

        let e = match stream.next().await {
            Some(Err(e)) => e,
            other => panic!("expected the 401, got {other:?}"),
        };
        assert_eq!(e.http_status(), Some(401), "{e:?}");
        assert!(matches!(e, Error::Http { status: 401, .. }), "{e:?}");
        assert!(e.to_string().contains("401"), "{e}");
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none(), "fused");

        // The stream is done; nothing may connect again.
        tokio::time::sleep(ms(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "a 401 is not retried");
        assert!(drain(&mut reconnecting).is_empty());
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].http_status(), Some(401));
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn http_503_is_retried() {
    bounded(async {
        let (listener, url) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn(rejecting_server(listener, 503, 2, accepted.clone()));
        let mut stream = client(url, base().build().unwrap());
        let mut errors = stream.on_error();
        let mut opens = stream.on_open();

        assert_eq!(payload(stream.next().await), "c3-m0");

        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| matches!(e, Error::Http { status: 503, .. })),
            "{errors:?}"
        );
        let opened = drain(&mut opens);
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!(opened[0].connection, 1);
        assert_eq!(opened[0].attempt, 2, "the second retry succeeded");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        server.abort();
    })
    .await;
}
