//! Secrets (API keys, JWTs, one-time passwords) never appear in logs, errors or `Debug` output.

mod support;

use support::chain;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stream_websocket::Listen;

use futures::{SinkExt, StreamExt};
use stream_websocket::gdn::{
    Auth, Consumer, ConsumerOptions, Endpoint, Producer, ProducerConfig, ProducerOptions, Topic,
};
use stream_websocket::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use stream_websocket::tungstenite::{http, Message};
use stream_websocket::{Event, Publish, ReconnectConfig, ReconnectingStream, Secret};
use tokio::net::TcpListener;

const API_KEY: &str = "APIKEY-d41d8cd98f00b204";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.JWT-SECRET-PAYLOAD.sig";
const OTP_PREFIX: &str = "OTP-SECRET-";
const URL_TOKEN: &str = "URLTOKEN-5f4dcc3b5aa765d6";

/// Everything the run printed or formatted.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn push(&self, text: String) {
        self.0.lock().unwrap().extend_from_slice(text.as_bytes());
        self.0.lock().unwrap().push(b'\n');
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures everything logged on this thread (at every level) until the guard is dropped.
fn capture_logs() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

/// A server that accepts only `Authorization: apikey <API_KEY>`, answers 401 otherwise (echoing
/// nothing of the request), and drops each accepted connection after one message.
async fn server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // the callback type is tungstenite's
                let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    let ok = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == format!("apikey {API_KEY}").as_bytes());
                    if ok {
                        Ok(resp)
                    } else {
                        let mut e = http::Response::new(Some("Failed to authenticate".into()));
                        *e.status_mut() = http::StatusCode::UNAUTHORIZED;
                        Err(e)
                    }
                };
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let ack = r#"{"result":"ok","messageId":"m1","context":"0"}"#;
                    let _ = ws.next().await;
                    let _ = ws.send(Message::Text(ack.into())).await;
                }
            });
        }
    });
    (url, accepted)
}

fn config() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
        .max_retries(2)
        .build()
        .unwrap()
}

/// Formats every event a listener holds, both ways.
fn record_events(capture: &Capture, events: &mut stream_websocket::Listener<Event>) {
    while let Ok(e) = events.try_recv() {
        capture.push(format!("{e:?}"));
        if let Event::Error(err) = &e {
            capture.push(chain(err));
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let (capture, _guard) = capture_logs();

    tokio::time::timeout(Duration::from_secs(30), async {
        let (server, accepted) = server().await;
        let topic = Topic::gdn("tenant", "_system", "orders", false).unwrap();

        // 1. The right API key: connects, publishes, gets confirmed.
        let endpoint = Endpoint::producer(&server, &topic, ProducerOptions::default())
            .unwrap()
            .with_auth(Auth::api_key(API_KEY));
        capture.push(format!("{endpoint:?} {:?}", endpoint.auth()));
        let request = endpoint.request().await.unwrap();
        capture.push(format!("{request:?}"));
        let producer =
            Producer::with_config(move || endpoint.connect(), ProducerConfig::new(config()));
        let mut events = producer.events();
        producer.send(Publish::new("hello")).await.unwrap();
        capture.push(format!("{producer:?}"));
        record_events(&capture, &mut events);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // 2. A bearer token the server refuses: 401, stops.
        let endpoint = Endpoint::consumer(&server, &topic, ConsumerOptions::new("s"))
            .unwrap()
            .with_auth(Auth::bearer(JWT));
        capture.push(format!("{endpoint:?}"));
        let mut consumer = Consumer::with_config(move || endpoint.connect(), config());
        let mut events = consumer.events();
        let end = consumer.next().await;
        capture.push(format!("{end:?} {consumer:?}"));
        if let Some(Err(e)) = &end {
            capture.push(chain(e));
            assert_eq!(e.http_status(), Some(401));
        } else {
            panic!("expected a 401, got {end:?}");
        }
        record_events(&capture, &mut events);

        // 3. One-time passwords (a new one each attempt), refused: retried, then gives up.
        let n = Arc::new(AtomicUsize::new(0));
        let issued = n.clone();
        let endpoint = Endpoint::consumer(&server, &topic, ConsumerOptions::new("s"))
            .unwrap()
            .with_auth(Auth::otp(move || {
                let i = issued.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Secret::new(format!("{OTP_PREFIX}{i}"))) }
            }));
        capture.push(format!("{endpoint:?}"));
        let cfg = ReconnectConfig::builder()
            .min_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(20))
            .max_retries(2)
            .classify(|_| stream_websocket::Disposition::Retry)
            .build()
            .unwrap();
        capture.push(format!("{cfg:?}"));
        let mut stream = ReconnectingStream::with_config(move || endpoint.connect(), cfg);
        let mut events = stream.events();
        let end = stream.next().await;
        capture.push(format!("{end:?} {stream:?}"));
        if let Some(Err(e)) = &end {
            capture.push(chain(e));
        }
        record_events(&capture, &mut events);
        assert_eq!(n.load(Ordering::SeqCst), 3, "a fresh OTP for every attempt");

        // 4. A token in a URL, to a port nobody listens on.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://user:{URL_TOKEN}@{}/ws?token={URL_TOKEN}&otp={OTP_PREFIX}x",
            closed.local_addr().unwrap()
        );
        drop(closed);
        let mut stream = ReconnectingStream::with_config(
            move || stream_websocket::connect(url.clone()),
            config(),
        );
        let mut events = stream.events();
        let end = stream.next().await;
        capture.push(format!("{end:?}"));
        if let Some(Err(e)) = &end {
            capture.push(chain(e));
        }
        record_events(&capture, &mut events);
        capture.push(format!("{:?}", Secret::new(API_KEY)));
    })
    .await
    .unwrap();

    let text = capture.text();
    assert!(
        text.contains("connection attempt failed"),
        "the logs were captured"
    );
    assert!(
        text.contains("REDACTED"),
        "secrets were masked, not omitted by chance"
    );
    // Errors were captured with their causes (the retry cap, then the refused handshake).
    assert!(
        text.contains("consecutive failed attempts: handshake rejected with HTTP 401"),
        "{text}"
    );
    // The URLs carrying a one-time password and a token were logged, redacted.
    assert!(text.contains("otp=REDACTED"), "{text}");
    assert!(text.contains("token=REDACTED"), "{text}");
    for secret in [API_KEY, JWT, "JWT-SECRET-PAYLOAD", OTP_PREFIX, URL_TOKEN] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Credentials the old hand-written redaction missed: a percent-encoded or differently written
/// name, a `;` separator, a user name that is the key itself, and secrets in a server address
/// refused by `Endpoint`.
#[tokio::test]
async fn encoded_names_semicolons_and_user_names_are_redacted() {
    let (capture, _guard) = capture_logs();

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    for url in [
        format!("ws://{API_KEY}@{addr}/ws?a=1;o%74p={OTP_PREFIX}1"),
        format!("ws://{addr}/ws?x=1&Access%5FToken={URL_TOKEN}&apiKey={API_KEY}"),
    ] {
        let err = stream_websocket::connect(url).await.unwrap_err();
        capture.push(format!("{err:?} {}", chain(&err)));
    }
    let topic = Topic::gdn("tenant", "_system", "orders", false).unwrap();
    for server in [
        format!("wss://{API_KEY}@host"),
        format!("wss://host/?a=1;o%74p={OTP_PREFIX}2"),
        format!("wss://host/#access_token={URL_TOKEN}"),
    ] {
        let err = Endpoint::producer(&server, &topic, ProducerOptions::default()).unwrap_err();
        capture.push(format!("{err} {err:?}"));
    }

    let text = capture.text();
    for redacted in [
        "ws://REDACTED@127.0.0.1",
        ";o%74p=REDACTED",
        "Access%5FToken=REDACTED&apiKey=REDACTED",
        "\"wss://REDACTED@host\"",
        "#access_token=REDACTED",
    ] {
        assert!(text.contains(redacted), "{redacted} not in:\n{text}");
    }
    for secret in [API_KEY, OTP_PREFIX, URL_TOKEN] {
        assert!(!text.contains(secret), "secret {secret:?} leaked:\n{text}");
    }
}
