//! The read-ahead bound and liveness for a sink-only user, in virtual time over in-memory
//! connections: messages waiting unread are not a sign of life, and read-ahead is bounded in
//! bytes as well as in messages.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stream_websocket::Listen;

use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use stream_websocket::tungstenite::Message;
use stream_websocket::{Error, Outgoing, Publish, ReconnectConfig, ReconnectingStream};
use support::{consumer_frame, pair, Ws};
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

/// What the server of the first connection does; later connections are quiet and healthy.
#[derive(Clone, Copy)]
enum First {
    /// Sends `frames` messages, then a Close frame if `close`, then goes silent for an hour:
    /// it neither reads (so pings go unanswered) nor closes the socket.
    FloodThenSilence { frames: usize, close: bool },
    /// Sends up to `frames` messages of `size` bytes as fast as the client takes them, reading
    /// nothing; `sent` counts those written.
    Flood { frames: usize, size: usize },
}

struct Servers {
    first: First,
    calls: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    opened_at: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl Servers {
    fn new(first: First) -> Self {
        Servers {
            first,
            calls: Arc::default(),
            sent: Arc::default(),
            opened_at: Arc::default(),
        }
    }

    fn factory(&self) -> impl FnMut() -> BoxFuture<'static, Result<Ws, Error>> + Send + 'static {
        let (first, calls, sent) = (self.first, self.calls.clone(), self.sent.clone());
        let opened_at = self.opened_at.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let sent = sent.clone();
            let opened_at = opened_at.clone();
            async move {
                let (client, server) = pair().await;
                opened_at.lock().unwrap().push(Instant::now());
                if n == 0 {
                    tokio::spawn(serve_first(first, server, sent));
                } else {
                    tokio::spawn(quiet(server));
                }
                Ok(client)
            }
            .boxed()
        }
    }

    fn opened_at(&self) -> Vec<Instant> {
        self.opened_at.lock().unwrap().clone()
    }
}

async fn serve_first(first: First, mut ws: Ws, sent: Arc<AtomicUsize>) {
    match first {
        First::FloodThenSilence { frames, close } => {
            for i in 0..frames {
                let frame = consumer_frame(&format!("m{i}"), b"x");
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    return;
                }
            }
            if close {
                let _ = ws.close(None).await;
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        First::Flood { frames, size } => {
            let payload = vec![b'x'; size];
            for i in 0..frames {
                let frame = consumer_frame(&format!("m{i}"), &payload);
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Reads (so pings are answered) and sends nothing.
async fn quiet(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

fn publish(i: usize) -> Outgoing {
    Outgoing::Publish(Publish::new(format!("item-{i}")))
}

/// A sink-only user: sends one item a second for `secs` seconds, never reading.
async fn send_only<F: stream_websocket::Connect>(stream: &mut ReconnectingStream<F>, secs: usize) {
    for i in 0..secs {
        stream.send(publish(i)).await.unwrap();
        tokio::time::sleep(SEC).await;
    }
}

async fn dead_peer_behind_full_read_ahead_is_replaced(close: bool) {
    let servers = Servers::new(First::FloodThenSilence { frames: 40, close });
    let config = ReconnectConfig::builder()
        .min_delay(SEC)
        .seed(1)
        .read_ahead(16)
        .ping_interval(Duration::from_secs(5))
        .pong_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(servers.factory(), config);
    let mut errors = stream.on_error();
    send_only(&mut stream, 30).await;
    let opened = servers.opened_at();
    assert!(
        opened.len() >= 2,
        "the silent connection was never replaced"
    );
    let gap = opened[1] - opened[0];
    // A ping is due 5 s after the last frame seen; 5 s without an answer ends the connection.
    assert!(gap <= Duration::from_secs(11), "replaced after {gap:?}");
    assert!(
        matches!(errors.try_recv(), Ok(Error::KeepaliveTimeout(_))),
        "the connection was ended by keepalive"
    );
    // The 16 messages read ahead are still there for the stream side, in order.
    for i in 0..16 {
        let item = stream.next().now_or_never().flatten().unwrap().unwrap();
        let stream_websocket::Incoming::Message(m) = item else {
            panic!("{item:?}");
        };
        assert_eq!(m.message_id.as_str(), format!("m{i}"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_detected_while_read_ahead_is_full() {
    dead_peer_behind_full_read_ahead_is_replaced(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_close_behind_a_full_read_ahead_still_ends_the_connection() {
    dead_peer_behind_full_read_ahead_is_replaced(true).await;
}

#[tokio::test(start_paused = true)]
async fn read_ahead_is_bounded_in_bytes() {
    // 1 KiB messages, a message bound far away and a byte bound of 8 KiB: a sink-only user
    // holds about 8 messages, and the rest stay with the server (the in-memory pipe holds
    // 256 KiB, so the server gets about 250 more written before it blocks).
    let servers = Servers::new(First::Flood {
        frames: 2000,
        size: 1024,
    });
    let config = ReconnectConfig::builder()
        .min_delay(SEC)
        .seed(1)
        .no_keepalive()
        .read_ahead(10_000)
        .read_ahead_bytes(8 * 1024)
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(servers.factory(), config);
    send_only(&mut stream, 10).await;
    let sent = servers.sent.load(Ordering::SeqCst);
    assert!(
        (100..400).contains(&sent),
        "the server wrote {sent} messages: read-ahead did not stop at its byte bound"
    );
    // Reading the stream side takes them all, in order.
    for i in 0..600 {
        let item = stream.next().await.unwrap().unwrap();
        let stream_websocket::Incoming::Message(m) = item else {
            panic!("{item:?}");
        };
        assert_eq!(m.message_id.as_str(), format!("m{i}"));
    }
}
