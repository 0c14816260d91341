//! Clients that break the rules: sockets that name another tenant's topics, malformed or
//! ambiguous HTTP, pipelining clients that never read, and message ids that must not repeat
//! across server starts. Real sockets on 127.0.0.1 only; every test ends within 40 s.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use stream_websocket_testkit::{LocalServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(40), body)
        .await
        .expect("test took longer than 40 s")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with an optional `Authorization` header, or returns the HTTP status of a refused
/// handshake.
async fn try_ws(url: &str, auth: Option<&str>) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect {url}: {e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Sends raw bytes on a fresh plain connection, half-closes nothing, and reads until the server
/// closes (or 10 s pass); the whole answer as text.
async fn raw(server: &LocalServer, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_all(&mut tcp).await
}

/// Reads until the server closes; a reset is a failure (the client must see the answer).
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection")
        .expect("the server reset the connection instead of answering");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `text`.
fn status(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn count_responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

const T1_KEY: &str = "t1.k.s";
const T2_KEY: &str = "t2.k.s";

fn two_tenants() -> ServerConfig {
    ServerConfig::default()
        .tls(false)
        .api_key(T1_KEY)
        .api_key(T2_KEY)
        .user("u@t3", "pw")
}

fn consumer_url(server: &LocalServer, tenant: &str, query: &str) -> String {
    format!(
        "{}/_ws/ws/v2/consumer/persistent/{tenant}/c8global._system/c8globals.secret/sub{query}",
        server.ws_url()
    )
}

fn producer_url(server: &LocalServer, tenant: &str) -> String {
    format!(
        "{}/_ws/ws/v2/producer/persistent/{tenant}/c8global._system/c8globals.secret",
        server.ws_url()
    )
}

/// One REST call over a fresh plain connection: status and JSON body.
async fn rest(
    server: &LocalServer,
    method: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let text = raw(server, request.as_bytes()).await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status(&text),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

// ---- Item 8: sockets are confined to their caller's tenant ----

#[tokio::test]
async fn an_api_key_cannot_open_sockets_on_another_tenants_topics() {
    bounded(async {
        let server = LocalServer::start_with(two_tenants()).await.unwrap();
        let t1 = format!("apikey {T1_KEY}");
        let t2 = format!("apikey {T2_KEY}");
        // Tenant t2 has a consumer and a message.
        let mut own = try_ws(&consumer_url(&server, "t2", ""), Some(&t2))
            .await
            .expect("t2 may use its own topics");
        // t1's key is refused on t2's consumer, producer and reader paths.
        assert_eq!(
            try_ws(&consumer_url(&server, "t2", ""), Some(&t1))
                .await
                .err(),
            Some(403)
        );
        assert_eq!(
            try_ws(&producer_url(&server, "t2"), Some(&t1)).await.err(),
            Some(403)
        );
        let reader = format!(
            "{}/ws/v2/reader/persistent/t2/c8global._system/c8globals.secret",
            server.ws_url()
        );
        assert_eq!(try_ws(&reader, Some(&t1)).await.err(), Some(403));
        // Percent-encoding does not get around it.
        assert_eq!(
            try_ws(&consumer_url(&server, "%74%32", ""), Some(&t1))
                .await
                .err(),
            Some(403)
        );
        // t2's own producer still works, and its consumer gets the message.
        let mut producer = try_ws(&producer_url(&server, "t2"), Some(&t2))
            .await
            .unwrap();
        producer
            .send(Message::text(r#"{"payload":"aGk="}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut producer).await["result"], "ok");
        assert_eq!(next_json(&mut own).await["payload"], "aGk=");
        assert!(server.stats().handshakes_refused >= 4);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_one_time_password_keeps_the_tenant_it_was_fetched_for() {
    bounded(async {
        let server = LocalServer::start_with(two_tenants()).await.unwrap();
        let t1 = format!("apikey {T1_KEY}");
        let (code, body) = rest(&server, "POST", "/apid/otp", &t1, "").await;
        assert_eq!(code, 200);
        let otp = body["otp"].as_str().unwrap().to_string();
        let url = consumer_url(&server, "t2", &format!("?otp={otp}"));
        assert_eq!(try_ws(&url, None).await.err(), Some(403));
        // A fresh one works on t1's own topic.
        let (_, body) = rest(&server, "POST", "/apid/otp", &t1, "").await;
        let otp = body["otp"].as_str().unwrap();
        let url = consumer_url(&server, "t1", &format!("?otp={otp}"));
        assert!(try_ws(&url, None).await.is_ok());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_jwt_keeps_its_users_tenant() {
    bounded(async {
        let server = LocalServer::start_with(two_tenants()).await.unwrap();
        let (code, body) = rest(
            &server,
            "POST",
            "/_open/auth",
            "none",
            r#"{"email":"u@t3","password":"pw"}"#,
        )
        .await;
        assert_eq!(code, 200);
        let bearer = format!("bearer {}", body["jwt"].as_str().unwrap());
        assert_eq!(
            try_ws(&consumer_url(&server, "t2", ""), Some(&bearer))
                .await
                .err(),
            Some(403)
        );
        assert!(try_ws(&consumer_url(&server, "u_t3", ""), Some(&bearer))
            .await
            .is_ok());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_open_server_still_lets_any_key_use_any_tenant() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().tls(false))
            .await
            .unwrap();
        let t1 = format!("apikey {T1_KEY}");
        assert!(try_ws(&consumer_url(&server, "t2", ""), Some(&t1))
            .await
            .is_ok());
        assert!(try_ws(&consumer_url(&server, "t3", ""), None).await.is_ok());
        server.shutdown().await;
    })
    .await;
}

// ---- Item 11: HTTP parsing ----

fn open_server() -> ServerConfig {
    ServerConfig::default().tls(false)
}

#[tokio::test]
async fn a_request_head_over_64_kib_gets_431_in_one_write_or_many() {
    bounded(async {
        let server = LocalServer::start_with(open_server()).await.unwrap();
        for size in [100 * 1024, 130 * 1024] {
            let request = format!(
                "GET /_api/user HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(size)
            );
            let answer = raw(&server, request.as_bytes()).await;
            assert_eq!(status(&answer), 431, "{size} bytes");
        }
        // Also as a WebSocket upgrade.
        let request = format!(
            "GET /ws/v2/consumer/persistent/t/n/x/s HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-big: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        );
        assert_eq!(status(&raw(&server, request.as_bytes()).await), 431);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn ambiguous_request_framing_gets_400_or_501() {
    bounded(async {
        let server = LocalServer::start_with(open_server()).await.unwrap();
        let cases: [(&str, u16); 9] = [
            // Two lengths, different or equal.
            ("content-length: 2\r\ncontent-length: 0\r\n\r\n{}", 400),
            ("content-length: 2\r\ncontent-length: 2\r\n\r\n{}", 400),
            // Length and chunked together.
            ("content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            // "chunked" must be the last coding, and a known one.
            ("transfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
            ("transfer-encoding: notchunked\r\n\r\n0\r\n\r\n", 501),
            ("transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
            ("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            // Chunk sizes are hex digits only.
            ("transfer-encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
            ("transfer-encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
        ];
        for (rest, expected) in cases {
            let request = format!("POST /apid/otp HTTP/1.1\r\nhost: x\r\n{rest}");
            let answer = raw(&server, request.as_bytes()).await;
            assert_eq!(status(&answer), expected, "{rest:?}: {answer}");
            assert_eq!(count_responses(&answer), 1, "{rest:?}: {answer}");
        }
        // Proper chunked bodies (with an extension) still work.
        let request = "POST /apid/otp HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2;x=y\r\n{}\r\n0\r\n\r\n";
        assert_eq!(status(&raw(&server, request.as_bytes()).await), 200);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn http_1_0_connections_close_unless_kept_alive() {
    bounded(async {
        let server = LocalServer::start_with(open_server()).await.unwrap();
        // Two requests in one write: HTTP/1.0 answers the first and closes.
        let answer = raw(
            &server,
            b"GET /_api/user HTTP/1.0\r\n\r\nGET /_api/user HTTP/1.0\r\n\r\n",
        )
        .await;
        assert_eq!(count_responses(&answer), 1, "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        // With keep-alive it serves both (the second asks to close).
        let answer = raw(
            &server,
            b"GET /_api/user HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /_api/user HTTP/1.0\r\n\r\n",
        )
        .await;
        assert_eq!(count_responses(&answer), 2, "{answer}");
        // HTTP/1.1 with a token list naming close closes too.
        let answer = raw(
            &server,
            b"GET /_api/user HTTP/1.1\r\nconnection: foo, close\r\n\r\nGET /_api/user HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(count_responses(&answer), 1, "{answer}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_upgrade_request_gets_400_with_a_status_line() {
    bounded(async {
        let server = LocalServer::start_with(open_server()).await.unwrap();
        let path = "/ws/v2/consumer/persistent/t/n/x/s";
        let ok_headers = "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n";
        for request in [
            // No key.
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n{ok_headers}\r\n"),
            // No version 13.
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
            // Not GET.
            format!("POST {path} HTTP/1.1\r\nhost: x\r\n{ok_headers}sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
        ] {
            let answer = raw(&server, request.as_bytes()).await;
            assert_eq!(status(&answer), 400, "{request:?}: {answer}");
        }
        server.shutdown().await;
    })
    .await;
}

// ---- Item 9: a client that never reads its answers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_never_reads_is_disconnected() {
    bounded(async {
        let server = LocalServer::start_with(open_server()).await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window fills the server's send side sooner.
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(server.addr()).await.unwrap();
        let (_read_half, mut write_half) = tcp.into_split();
        let request = b"GET /datacenter/all HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
        // Writes until the server gives up on the connection; never reads.
        let mut sent = 0usize;
        let outcome = timeout(Duration::from_secs(35), async {
            loop {
                if let Err(e) = write_half.write_all(&request).await {
                    return e;
                }
                sent += request.len();
            }
        })
        .await;
        assert!(
            outcome.is_ok(),
            "the server still held the connection after 35 s ({sent} bytes of requests sent)"
        );
        server.shutdown().await;
    })
    .await;
}

// ---- Item 14b: message ids are unique per server start ----

#[tokio::test]
async fn message_ids_differ_between_server_starts() {
    bounded(async {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let server = LocalServer::start_with(open_server()).await.unwrap();
            let mut producer = try_ws(&producer_url(&server, "t"), None).await.unwrap();
            producer
                .send(Message::text(r#"{"payload":"aGk="}"#))
                .await
                .unwrap();
            let ack = next_json(&mut producer).await;
            ids.push(ack["messageId"].as_str().unwrap().to_string());
            server.shutdown().await;
        }
        assert_ne!(ids[0], ids[1], "the same id after a restart");
    })
    .await;
}
