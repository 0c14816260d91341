//! Shared test helpers: a scripted connection factory over in-memory sockets.
//!
//! Every "connection" is a `tokio::io::duplex` pair with real WebSocket framing on both ends, so
//! tests exercise the real protocol (pings, pongs, closes) while running in virtual time.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use stream_websocket::tungstenite::protocol::{CloseFrame, Role};
use stream_websocket::tungstenite::Message;
use stream_websocket::Error;
use tokio::io::DuplexStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<DuplexStream>;

/// What one call of the factory does.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Fails at once with a retryable I/O error (connection refused).
    Fail,
    /// Fails at once with HTTP 401 (permanent).
    Permanent,
    /// Fails at once with this HTTP status (429, 503, …) and `Retry-After`.
    Refuse {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Opens; the server sends these text frames as they are, stays up `uptime`, then closes
    /// (a Close frame without status).
    Raw {
        texts: Vec<&'static str>,
        uptime: Duration,
    },
    /// Opens; the server sends `frames` consumer messages, stays up `uptime`, then closes with
    /// a Close frame carrying `code`.
    CloseWith {
        frames: usize,
        uptime: Duration,
        code: u16,
    },
    /// Never completes: the connect timeout has to end it.
    Hang,
    /// Opens; the server sends `frames` consumer messages, stays up `uptime` (reading and
    /// answering pings), then drops the connection, with a Close frame if `close`.
    Open {
        frames: usize,
        uptime: Duration,
        close: bool,
    },
    /// Opens, then the server stops reading and answering entirely (half-open), for `uptime`.
    Stall { uptime: Duration },
    /// Opens as a producer endpoint: records and confirms every published message; after
    /// `drop_after` messages it drops the connection, having stored the last one without
    /// confirming it.
    Broker { drop_after: Option<usize> },
    /// Opens as a consumer endpoint: delivers these message ids (payload = id), records what the
    /// client sends for `uptime`, then closes.
    Deliver {
        ids: Vec<&'static str>,
        uptime: Duration,
    },
}

/// The script and what happened.
#[derive(Debug, Default)]
pub struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    /// When each factory call happened.
    pub calls: Mutex<Vec<Instant>>,
    /// Text frames the servers received: (connection number, text).
    pub received: Mutex<Vec<(usize, String)>>,
    opened: Mutex<usize>,
}

impl Script {
    /// A script; once it runs out, every further call fails permanently (401).
    pub fn new(outcomes: impl IntoIterator<Item = Outcome>) -> Arc<Self> {
        Arc::new(Script {
            outcomes: Mutex::new(outcomes.into_iter().collect()),
            ..Script::default()
        })
    }

    pub fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    /// Gaps between consecutive factory calls, in whole milliseconds.
    pub fn gaps_ms(&self) -> Vec<u128> {
        let calls = self.calls();
        calls
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect()
    }

    pub fn received_texts(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The factory to hand to `ReconnectingStream`.
    pub fn factory(
        self: &Arc<Self>,
    ) -> impl FnMut() -> BoxFuture<'static, Result<Ws, Error>> + Send + 'static {
        let script = self.clone();
        move || {
            script.calls.lock().unwrap().push(Instant::now());
            let next = script.outcomes.lock().unwrap().pop_front();
            let script = script.clone();
            match next.unwrap_or(Outcome::Permanent) {
                Outcome::Fail => {
                    async { Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()) }.boxed()
                }
                Outcome::Permanent => async {
                    Err(Error::Http {
                        status: 401,
                        body: Some("Failed to authenticate".into()),
                        retry_after: None,
                    })
                }
                .boxed(),
                Outcome::Refuse {
                    status,
                    retry_after,
                } => async move {
                    Err(Error::Http {
                        status,
                        body: None,
                        retry_after,
                    })
                }
                .boxed(),
                Outcome::CloseWith {
                    frames,
                    uptime,
                    code,
                } => async move {
                    let conn = script.next_conn();
                    let (client, server) = pair().await;
                    tokio::spawn(async move {
                        let mut server = serve(script, conn, server, frames, uptime, false).await?;
                        let frame = CloseFrame {
                            code: code.into(),
                            reason: "scripted".into(),
                        };
                        let _ = server.close(Some(frame)).await;
                        Some(())
                    });
                    Ok(client)
                }
                .boxed(),
                Outcome::Hang => futures::future::pending().boxed(),
                Outcome::Open {
                    frames,
                    uptime,
                    close,
                } => async move {
                    let conn = script.next_conn();
                    let (client, server) = pair().await;
                    tokio::spawn(serve(script, conn, server, frames, uptime, close));
                    Ok(client)
                }
                .boxed(),
                Outcome::Broker { drop_after } => async move {
                    let conn = script.next_conn();
                    let (client, server) = pair().await;
                    tokio::spawn(broker(script, conn, server, drop_after));
                    Ok(client)
                }
                .boxed(),
                Outcome::Deliver { ids, uptime } => async move {
                    let conn = script.next_conn();
                    let (client, mut server) = pair().await;
                    tokio::spawn(async move {
                        for id in ids {
                            let frame = consumer_frame(id, id.as_bytes());
                            if server.send(Message::Text(frame.into())).await.is_err() {
                                return;
                            }
                        }
                        serve(script, conn, server, 0, uptime, true).await;
                    });
                    Ok(client)
                }
                .boxed(),
                Outcome::Raw { texts, uptime } => async move {
                    let conn = script.next_conn();
                    let (client, mut server) = pair().await;
                    tokio::spawn(async move {
                        for text in texts {
                            if server.send(Message::text(text)).await.is_err() {
                                return;
                            }
                        }
                        serve(script, conn, server, 0, uptime, true).await;
                    });
                    Ok(client)
                }
                .boxed(),
                Outcome::Stall { uptime } => async move {
                    let (client, server) = pair().await;
                    tokio::spawn(async move {
                        tokio::time::sleep(uptime).await;
                        drop(server);
                    });
                    Ok(client)
                }
                .boxed(),
            }
        }
    }

    fn next_conn(&self) -> usize {
        let mut n = self.opened.lock().unwrap();
        *n += 1;
        *n
    }
}

/// A connected client/server pair over an in-memory pipe.
pub async fn pair() -> (Ws, Ws) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    (client, server)
}

/// A consumer message frame as a GDN / Pulsar server sends it.
pub fn consumer_frame(id: &str, payload: &[u8]) -> String {
    format!(
        r#"{{"messageId":"{id}","payload":"{}","properties":{{}},"publishTime":"2024-01-01T00:00:00.000Z","redeliveryCount":0}}"#,
        base64::engine::general_purpose::STANDARD.encode(payload)
    )
}

/// Sends `frames` messages with payloads `c<conn>-m<i>`, then reads (recording text frames and
/// answering pings) for `uptime`, then drains what already arrived and closes the connection
/// (`close`: with a Close frame without status, else by dropping it). Returns the connection,
/// unclosed, if `close` is false and the peer is still there.
async fn serve(
    script: Arc<Script>,
    conn: usize,
    mut ws: Ws,
    frames: usize,
    uptime: Duration,
    close: bool,
) -> Option<Ws> {
    for i in 0..frames {
        let frame = consumer_frame(&format!("{conn}:{i}"), format!("c{conn}-m{i}").as_bytes());
        if ws.send(Message::Text(frame.into())).await.is_err() {
            return None;
        }
    }
    let deadline = tokio::time::sleep(uptime);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m)) => record(&script, conn, m),
                _ => return None,
            },
            _ = &mut deadline => break,
        }
    }
    // Whatever the client flushed before this moment counts as received.
    while let Some(Some(Ok(m))) = ws.next().now_or_never() {
        record(&script, conn, m);
    }
    if close {
        let _ = ws.close(None).now_or_never();
        return None;
    }
    Some(ws)
}

/// A producer endpoint: stores (records) and confirms each message, by its `context`.
async fn broker(script: Arc<Script>, conn: usize, mut ws: Ws, drop_after: Option<usize>) {
    let mut n = 0;
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(text) = &m else { continue };
        let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        record(&script, conn, m.clone());
        n += 1;
        if Some(n) == drop_after {
            return; // stored, never confirmed
        }
        let payload = base64::engine::general_purpose::STANDARD
            .decode(frame["payload"].as_str().unwrap_or_default())
            .unwrap_or_default();
        // Payloads starting with "reject" are refused as a broker failure would be.
        let ack = if payload.starts_with(b"reject") {
            serde_json::json!({
                "result": "send-error:8",
                "errorMsg": "broker is overloaded",
                "context": frame["context"],
            })
        } else {
            serde_json::json!({
                "result": "ok",
                "messageId": format!("{conn}:{n}"),
                "context": frame["context"],
            })
        };
        if ws
            .send(Message::Text(ack.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The payloads of the published messages the servers recorded, decoded, in arrival order.
pub fn published_payloads(script: &Script) -> Vec<String> {
    script
        .received_texts()
        .iter()
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            let b = base64::engine::general_purpose::STANDARD
                .decode(v["payload"].as_str().unwrap())
                .unwrap();
            String::from_utf8(b).unwrap()
        })
        .collect()
}

fn record(script: &Script, conn: usize, m: Message) {
    if let Message::Text(t) = m {
        script
            .received
            .lock()
            .unwrap()
            .push((conn, t.as_str().to_string()));
    }
}

/// A WebSocket server connection over TCP, as the real-socket tests' servers use it.
pub type ServerWs = WebSocketStream<tokio::net::TcpStream>;

/// Bound on every real-socket test body.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs a test body, failing (instead of hanging) if it takes longer than [`TEST_TIMEOUT`].
pub async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test did not finish within 20 s")
}

/// Every event a listener holds right now.
pub fn drain<E: Clone>(listener: &mut stream_websocket::Listener<E>) -> Vec<E> {
    let mut out = Vec::new();
    while let Ok(e) = listener.try_recv() {
        out.push(e);
    }
    out
}

/// Installs a test-friendly tracing subscriber once (output shown only for failing tests).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::DEBUG)
        .try_init();
}

/// An error and every cause below it, joined by ": " (each message names only its own layer).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}
