//! `gdn::Client` against a scripted HTTP/1.1 server on 127.0.0.1: headers, tenant discovery,
//! logins and their renewal, retries, typed errors, one-time passwords, secrets; and one whole
//! flow (REST here, sockets on the embedded stream server).
#![cfg(feature = "rest")]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use stream_websocket::gdn::{
    Auth, Client, ClientBuilder, ConsumerOptions, InitialPosition, ProducerOptions, RestError,
    Scope,
};
use stream_websocket::tungstenite::handshake::derive_accept_key;
use stream_websocket::{Error, Publish, ReconnectConfig};
use stream_websocket_testkit::{LocalServer, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// A scripted HTTP/1.1 server
// ---------------------------------------------------------------------------------------------

/// A request as the server read it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    /// Path and query.
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The header's value; panics if it was sent twice.
    fn header(&self, name: &str) -> Option<&str> {
        let sent = self.headers.iter().filter(|(n, _)| n == name).count();
        assert!(sent <= 1, "{name} sent {sent} times");
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
    delay: Option<Duration>,
    /// Instead of `body`: this many bytes of `x`, then the connection stays open, silent.
    stream: Option<Streamed>,
}

/// A body that never ends: `send` bytes, then silence with the connection open.
#[derive(Debug, Clone, Copy)]
struct Streamed {
    /// The `Content-Length` announced; without one the body runs to the connection's close.
    announce: Option<u64>,
    send: usize,
}

fn reply(status: u16, body: Value) -> Reply {
    text(status, &body.to_string())
}

/// A reply with this body as it is (not JSON).
fn text(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        headers: Vec::new(),
        delay: None,
        stream: None,
    }
}

/// A reply whose body announces `announce` bytes (or none), sends `send` and then stalls.
fn endless(status: u16, announce: Option<u64>, send: usize) -> Reply {
    Reply {
        stream: Some(Streamed { announce, send }),
        ..text(status, "")
    }
}

fn ok(body: Value) -> Reply {
    reply(200, body)
}

/// A GDN error body.
fn gdn_error(status: u16, num: i64, message: &str) -> Reply {
    reply(
        status,
        json!({"error": true, "code": status, "errorNum": num, "errorMessage": message}),
    )
}

impl Reply {
    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn after(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }
}

/// Answers a request; the `usize` is how many earlier requests had the same method and path.
type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

struct Mock {
    url: String,
    log: Arc<Mutex<Vec<Req>>>,
    task: JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    async fn start(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Mock {
        Mock::listen(Arc::new(handler), None).await
    }

    #[cfg(feature = "rustls")]
    async fn start_tls(
        handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> Mock {
        Mock::listen(Arc::new(handler), Some(acceptor)).await
    }

    async fn listen(handler: Arc<Handler>, tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(tcp).await {
                                    serve(s, handler, log).await;
                                }
                            }
                            None => serve(tcp, handler, log).await,
                        }
                    });
                }
            }
        });
        Mock {
            url: format!("{scheme}://{addr}"),
            log,
            task,
        }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn to(&self, method: &str, path: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path() == path)
            .collect()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.to(method, path).len()
    }
}

/// Reads requests (head, then `Content-Length` bytes of body) and answers them, keeping the
/// connection open until the client closes it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Req>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let target = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let req = Req {
            method,
            target,
            headers,
            body,
        };
        let nth = {
            let mut log = log.lock().unwrap();
            let nth = log
                .iter()
                .filter(|r| r.method == req.method && r.path() == req.path())
                .count();
            log.push(req.clone());
            nth
        };
        if req
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        {
            // A socket: accept it, then hold it open until the client goes away.
            let key = req.header("sec-websocket-key").unwrap_or_default();
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                 connection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            if s.write_all(head.as_bytes()).await.is_ok() {
                while let Ok(1..) = s.read(&mut chunk).await {}
            }
            return;
        }
        let r = handler(&req, nth);
        if let Some(d) = r.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(streamed) = r.stream {
            let length = match streamed.announce {
                Some(n) => format!("content-length: {n}"),
                None => "connection: close".to_string(),
            };
            let head = format!("HTTP/1.1 {} Scripted\r\n{length}\r\n\r\n", r.status);
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < streamed.send {
                let n = chunk.len().min(streamed.send - sent);
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
            // Silent, until the client goes away (or the test ends).
            let mut sink = [0u8; 1024];
            while let Ok(1..) = s.read(&mut sink).await {}
            return;
        }
        let mut out = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            r.status,
            r.body.len()
        );
        for (n, v) in &r.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&r.body);
        if s.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const API_KEY: &str = "acme_x.com.key1.SUPERSECRETKEY";
const EMAIL: &str = "me@acme.example";
const PASSWORD: &str = "hunter2-PASSWORD";

/// Every test ends within this.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test took too long")
}

/// 2 retries after about 1 ms: fast and bounded.
fn fast_retry() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
        .max_retries(2)
        .build()
        .unwrap()
}

fn api_key_client(mock: &Mock) -> Client {
    Client::builder(&mock.url)
        .api_key(API_KEY)
        .retry(fast_retry())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn login_client(mock: &Mock) -> Client {
    Client::builder(&mock.url)
        .login(EMAIL, PASSWORD)
        .retry(fast_retry())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsigned three-part JWT with these claims.
fn jwt(claims: Value) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.SIGNATURE-SECRET",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&claims.to_string())
    )
}

/// A JWT valid for 12 hours, marked with `n` so that tests can tell logins apart.
fn long_jwt(n: usize) -> String {
    jwt(json!({"exp": now_secs() + 43_200, "iat": now_secs(), "tenant": "t1", "n": n}))
}

fn stream_list() -> Reply {
    ok(json!({"error": false, "code": 200, "result": [
        {"topic": "c8globals.orders", "local": false, "db": "_system", "tenant": "t1", "type": 4},
        {"topic": "c8globals.audit", "local": false, "db": "_system", "tenant": "t1", "type": 4}
    ]}))
}

const STREAMS: &str = "/_fabric/_system/_api/streams";

/// The status and GDN's error fields of a status error.
fn assert_gdn_error(e: &RestError, status: u16, num: i64, message: &str) {
    let api = e.api_error().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(api.status, status);
    assert_eq!(api.error_num, Some(num));
    assert_eq!(api.error_message.as_deref(), Some(message));
}

/// The whole text of an error and its sources.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Credentials and tenant
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_key_is_sent_and_the_tenant_comes_from_api_user() {
    let mock = Mock::start(|req, _| match (req.method.as_str(), req.path()) {
        ("GET", "/_api/user") => ok(json!({"result": [{"tenant": "acme", "user": "root"}]})),
        ("GET", STREAMS) => stream_list(),
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    bounded(async {
        assert_eq!(client.tenant().await.unwrap(), "acme");
        assert_eq!(client.tenant().await.unwrap(), "acme");
        let streams = client.list_streams(Scope::Global).await.unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].name(), "orders");
        assert_eq!(streams[0].tenant, "t1");
        assert_eq!(streams[0].kind, 4);
    })
    .await;
    assert_eq!(
        mock.count("GET", "/_api/user"),
        1,
        "the tenant is looked up once"
    );
    for req in mock.requests() {
        let expected = format!("apikey {API_KEY}");
        assert_eq!(req.header("authorization"), Some(expected.as_str()));
    }
    assert_eq!(mock.to("GET", STREAMS)[0].query(), Some("global=true"));
}

#[tokio::test]
async fn without_api_user_the_tenant_follows_jsc8() {
    let mock = Mock::start(|req, _| match req.path() {
        "/_api/user" => gdn_error(404, 404, "unknown path"),
        _ => reply(404, json!({})),
    })
    .await;
    bounded(async {
        let client = api_key_client(&mock);
        assert_eq!(client.tenant().await.unwrap(), "acme_x.com");
        for (key, tenant) in [
            ("demo_tenant.key1.secret", "demo_tenant"),
            ("xxxxxx", "_mm"),
        ] {
            let client = Client::builder(&mock.url).api_key(key).build().unwrap();
            assert_eq!(client.tenant().await.unwrap(), tenant, "{key}");
        }
        // A reply without a tenant falls back too; a set tenant is not looked up.
        let client = Client::builder(&mock.url)
            .api_key("x.y.z")
            .tenant("mine")
            .build()
            .unwrap();
        assert_eq!(client.tenant().await.unwrap(), "mine");
    })
    .await;
    assert_eq!(mock.count("GET", "/_api/user"), 3);
}

#[tokio::test]
async fn a_refused_api_key_is_not_replaced_by_a_guessed_tenant() {
    let mock =
        Mock::start(|_, _| gdn_error(401, 11, "not authorized to execute this request")).await;
    let e = bounded(api_key_client(&mock).tenant()).await.unwrap_err();
    assert!(matches!(e, RestError::Unauthorized(_)), "{e:?}");
    assert_eq!(mock.count("GET", "/_api/user"), 1, "a 401 is not retried");
}

#[tokio::test]
async fn email_login_gives_a_bearer_token_and_the_tenant() {
    let token = long_jwt(0);
    let mock = Mock::start({
        let token = token.clone();
        move |req, _| match req.path() {
            "/_open/auth" => ok(json!({"jwt": token, "tenant": "acme_x.com", "username": "root"})),
            STREAMS => stream_list(),
            _ => reply(404, json!({})),
        }
    })
    .await;
    let client = login_client(&mock);
    bounded(async {
        assert_eq!(client.tenant().await.unwrap(), "acme_x.com");
        assert!(client.stream_exists("orders", Scope::Global).await.unwrap());
        assert!(!client.stream_exists("nope", Scope::Global).await.unwrap());
    })
    .await;
    let logins = mock.to("POST", "/_open/auth");
    assert_eq!(logins.len(), 1, "one login serves every request");
    let sent: Value = serde_json::from_slice(&logins[0].body).unwrap();
    assert_eq!(sent, json!({"email": EMAIL, "password": PASSWORD}));
    assert_eq!(logins[0].header("authorization"), None);
    let bearer = format!("bearer {token}");
    for req in mock.to("GET", STREAMS) {
        assert_eq!(req.header("authorization"), Some(bearer.as_str()));
    }
}

#[tokio::test]
async fn the_tenant_can_come_from_the_token_claim() {
    let mock = Mock::start(|req, _| match req.path() {
        "/_open/auth" => ok(json!({"jwt": long_jwt(0)})),
        _ => reply(404, json!({})),
    })
    .await;
    assert_eq!(bounded(login_client(&mock).tenant()).await.unwrap(), "t1");
}

#[tokio::test]
async fn a_token_near_its_expiry_is_renewed_before_use() {
    // The first token was issued 12 h ago and expires in a minute: inside the 5 minute margin.
    let near = jwt(json!({"iat": now_secs() - 43_200, "exp": now_secs() + 60, "tenant": "t1"}));
    let fresh = long_jwt(1);
    let mock = Mock::start({
        let (near, fresh) = (near.clone(), fresh.clone());
        move |req, nth| match req.path() {
            "/_open/auth" if nth == 0 => ok(json!({"jwt": near, "tenant": "t1"})),
            "/_open/auth" => ok(json!({"jwt": fresh, "tenant": "t1"})),
            STREAMS => stream_list(),
            _ => reply(404, json!({})),
        }
    })
    .await;
    let client = login_client(&mock);
    bounded(async {
        for _ in 0..3 {
            client.list_streams(Scope::Global).await.unwrap();
        }
    })
    .await;
    assert_eq!(mock.count("POST", "/_open/auth"), 2);
    let used: Vec<String> = mock
        .to("GET", STREAMS)
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        used,
        [
            format!("bearer {near}"),
            format!("bearer {fresh}"),
            format!("bearer {fresh}")
        ]
    );
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_request_repeated() {
    let mock = Mock::start(|req, nth| match req.path() {
        "/_open/auth" => ok(json!({"jwt": long_jwt(nth), "tenant": "t1"})),
        STREAMS if nth == 0 => gdn_error(401, 11, "token expired"),
        STREAMS => stream_list(),
        _ => reply(404, json!({})),
    })
    .await;
    let client = login_client(&mock);
    let streams = bounded(client.list_streams(Scope::Global)).await.unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(mock.count("POST", "/_open/auth"), 2);
    let requests = mock.to("GET", STREAMS);
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("bearer {}", long_jwt(1)).as_str()),
        "the repeat uses the new token"
    );
}

#[tokio::test]
async fn a_second_401_is_returned_not_retried() {
    let mock = Mock::start(|req, nth| match req.path() {
        "/_open/auth" => ok(json!({"jwt": long_jwt(nth), "tenant": "t1"})),
        _ => gdn_error(401, 11, "not authorized"),
    })
    .await;
    let client = login_client(&mock);
    let e = bounded(client.list_streams(Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Unauthorized(_)), "{e:?}");
    assert_gdn_error(&e, 401, 11, "not authorized");
    assert_eq!(
        mock.count("POST", "/_open/auth"),
        2,
        "one new login, no more"
    );
    assert_eq!(mock.count("GET", STREAMS), 2);

    // A refused password is returned at once.
    let mock = Mock::start(|_, _| gdn_error(401, 11, "wrong credentials")).await;
    let e = bounded(login_client(&mock).tenant()).await.unwrap_err();
    assert!(matches!(e, RestError::Unauthorized(_)), "{e:?}");
    assert_eq!(mock.count("POST", "/_open/auth"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_login() {
    let mock = Mock::start(|req, nth| match req.path() {
        "/_open/auth" => {
            ok(json!({"jwt": long_jwt(nth), "tenant": "t1"})).after(Duration::from_millis(100))
        }
        STREAMS => stream_list(),
        _ => reply(404, json!({})),
    })
    .await;
    let client = login_client(&mock);
    bounded(async {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.list_streams(Scope::Global).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
    })
    .await;
    assert_eq!(mock.count("POST", "/_open/auth"), 1);
    assert_eq!(mock.count("GET", STREAMS), 8);
}

// ---------------------------------------------------------------------------------------------
// Retries and typed errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limits_are_retried() {
    let mock = Mock::start(|req, nth| match req.path() {
        STREAMS if nth == 0 => gdn_error(429, 0, "slow down").header("retry-after", "0"),
        STREAMS => stream_list(),
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    let streams = bounded(client.list_streams(Scope::Local)).await.unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(mock.count("GET", STREAMS), 2);
    assert_eq!(mock.to("GET", STREAMS)[1].query(), Some("global=false"));

    // Retry-After lengthens the wait, up to the policy's maximum delay (300 ms here, not 1 s).
    let mock = Mock::start(|req, nth| match req.path() {
        STREAMS if nth == 0 => gdn_error(429, 0, "slow down").header("retry-after", "1"),
        STREAMS => stream_list(),
        _ => reply(404, json!({})),
    })
    .await;
    let client = Client::builder(&mock.url)
        .api_key(API_KEY)
        .retry(
            ReconnectConfig::builder()
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(300))
                .max_retries(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    bounded(client.list_streams(Scope::Global)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(950),
        "{waited:?}"
    );

    // Still limited after the retries: the typed error.
    let mock = Mock::start(|_, _| gdn_error(429, 0, "slow down")).await;
    let e = bounded(api_key_client(&mock).list_streams(Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::RateLimited(_)), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(mock.count("GET", STREAMS), 3, "1 try + 2 retries");
}

#[tokio::test]
async fn server_errors_are_retried_then_typed_with_gdn_fields() {
    let mock = Mock::start(|_, _| gdn_error(503, 21, "cluster busy")).await;
    let client = api_key_client(&mock).clone();
    let e = bounded(client.create_stream("orders", Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Server(_)), "{e:?}");
    assert_gdn_error(&e, 503, 21, "cluster busy");
    assert_eq!(
        e.api_error().unwrap().request,
        format!("POST {STREAMS}/orders")
    );
    assert_eq!(
        e.to_string(),
        format!(
            "server error: POST {STREAMS}/orders answered HTTP 503 (errorNum 21): cluster busy"
        )
    );
    assert_eq!(mock.count("POST", &format!("{STREAMS}/orders")), 3);
}

#[tokio::test]
async fn refusals_are_typed_and_not_retried() {
    let mock = Mock::start(|req, _| match (req.method.as_str(), req.path()) {
        ("GET", STREAMS) => gdn_error(404, 1228, "fabric not found"),
        ("DELETE", _) => gdn_error(404, 1203, "stream not found"),
        ("POST", p) if p.ends_with("/forbidden") => gdn_error(403, 11, "no access"),
        ("POST", p) if p.ends_with("/exists") => gdn_error(409, 581, "stream exists"),
        ("POST", p) if p.ends_with("/busy") => gdn_error(412, 4, "clients connected"),
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    let g = Scope::Global;
    let outcomes = bounded(async {
        [
            (client.stream_exists("orders", g).await.map(drop), 404, 1228),
            (client.delete_stream("orders", g).await, 404, 1203),
            (
                client.create_stream("forbidden", g).await.map(drop),
                403,
                11,
            ),
            (client.create_stream("exists", g).await.map(drop), 409, 581),
            (client.create_stream("busy", g).await.map(drop), 412, 4),
        ]
    })
    .await;
    for (result, status, num) in outcomes {
        let e = result.unwrap_err();
        let typed = match status {
            403 => matches!(e, RestError::Forbidden(_)),
            404 => matches!(e, RestError::NotFound(_)),
            409 => matches!(e, RestError::Conflict(_)),
            _ => matches!(e, RestError::Status(_)),
        };
        assert!(typed, "{e:?}");
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.error_num(), Some(num));
        assert!(!e.is_retryable());
    }
    assert_eq!(mock.requests().len(), 5, "one request each");
    // Invalid names never leave the process.
    let e = bounded(client.create_stream("a/b", Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Url(_)), "{e:?}");
    let e = bounded(client.publish("c8globals.x", Scope::Global, "m"))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Url(_)), "{e:?}");
    assert_eq!(mock.requests().len(), 5);
}

#[tokio::test]
async fn a_dead_server_is_a_transport_error_after_the_retries() {
    // Bind, then close: nothing listens on the port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder(format!("http://{addr}"))
        .api_key(API_KEY)
        .retry(fast_retry())
        .build()
        .unwrap();
    let e = bounded(client.list_streams(Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());
    let text = chain(&e);
    assert!(text.starts_with(&format!("GET {STREAMS} failed")), "{text}");
    assert!(!text.contains("SUPERSECRETKEY"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_if_missing_treats_an_existing_stream_as_success() {
    let mock = Mock::start(|req, _| match req.path() {
        p if p.ends_with("/orders") => gdn_error(409, 581, "stream already exists"),
        p if p.ends_with("/audit") => {
            ok(json!({"error": false, "code": 200, "result": {"stream-id": "c8locals.audit"}}))
        }
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    bounded(async {
        assert!(!client
            .create_stream_if_missing("orders", Scope::Global)
            .await
            .unwrap());
        assert!(client
            .create_stream_if_missing("audit", Scope::Local)
            .await
            .unwrap());
        assert_eq!(
            client.create_stream("audit", Scope::Local).await.unwrap(),
            "c8locals.audit"
        );
    })
    .await;
    let created = mock.to("POST", &format!("{STREAMS}/audit"));
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].query(), Some("global=false"));
    assert!(created[0].body.is_empty());
    assert_eq!(created[0].header("content-length"), Some("0"));
    assert_eq!(
        mock.to("POST", &format!("{STREAMS}/orders"))[0].query(),
        Some("global=true")
    );
}

#[tokio::test]
async fn delete_publish_and_datacenter_use_the_documented_paths() {
    let mock = Mock::start(|req, _| match req.path() {
        "/datacenter/local" => ok(json!({
            "_key": "gdn-local", "local": true, "status": 0,
            "tags": {"url": "gdn@127.0.0.1:9", "api": "api-gdn@127.0.0.1:9"}
        })),
        _ => ok(json!({"error": false, "code": 200, "result": {}})),
    })
    .await;
    let client = api_key_client(&mock);
    bounded(async {
        client.delete_stream("orders", Scope::Global).await.unwrap();
        client
            .publish("orders", Scope::Local, "Hello World")
            .await
            .unwrap();
        let dc = client.local_datacenter().await.unwrap();
        assert_eq!(dc.name, "gdn-local");
        assert_eq!(dc.url, "gdn@127.0.0.1:9");
        assert_eq!(dc.api.as_deref(), Some("api-gdn@127.0.0.1:9"));
        // `api-gdn` becomes user-info and is dropped; an http base gives ws.
        assert_eq!(client.socket_server().await.unwrap(), "ws://127.0.0.1:9");
        assert_eq!(client.socket_server().await.unwrap(), "ws://127.0.0.1:9");
    })
    .await;
    assert_eq!(
        mock.count("DELETE", &format!("{STREAMS}/c8globals.orders")),
        1
    );
    let published = mock.to("POST", &format!("{STREAMS}/c8locals.orders/publish"));
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].query(), Some("global=false"));
    assert_eq!(published[0].body, b"Hello World");
    assert_eq!(published[0].header("content-length"), Some("11"));
    assert_eq!(published[0].header("content-type"), None);
    assert_eq!(
        mock.count("GET", "/datacenter/local"),
        2,
        "socket_server asks once"
    );

    let client = Client::builder(&mock.url)
        .api_key(API_KEY)
        .socket_server("wss://elsewhere.example:443")
        .build()
        .unwrap();
    assert_eq!(
        bounded(client.socket_server()).await.unwrap(),
        "wss://elsewhere.example:443"
    );
    assert_eq!(mock.count("GET", "/datacenter/local"), 2);
}

// ---------------------------------------------------------------------------------------------
// One-time passwords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_connection_attempt_fetches_a_new_otp() {
    let mock = Mock::start(|req, nth| match req.path() {
        "/apid/otp" => ok(json!({"otp": format!("otp-{nth}")})),
        "/_api/user" => ok(json!({"result": [{"tenant": "t1"}]})),
        "/datacenter/local" => ok(json!({"tags": {"url": "gdn@127.0.0.1:9"}})),
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    bounded(async {
        let Auth::Otp(source) = client.otp_auth() else {
            panic!("not an OTP auth")
        };
        assert_eq!(source.fetch().await.unwrap().expose(), "otp-0");
        assert_eq!(source.fetch().await.unwrap().expose(), "otp-1");

        let endpoint = client
            .producer_endpoint("orders", Scope::Global, ProducerOptions::default())
            .await
            .unwrap();
        assert_eq!(endpoint.auth().kind(), "otp");
        let base =
            "ws://127.0.0.1:9/_ws/ws/v2/producer/persistent/t1/c8global._system/c8globals.orders";
        assert_eq!(endpoint.url(), base);
        for n in 2..4 {
            let request = endpoint.request().await.unwrap();
            assert_eq!(request.uri().to_string(), format!("{base}?otp=otp-{n}"));
        }
        let endpoint = client
            .consumer_endpoint("orders", Scope::Local, ConsumerOptions::new("billing"))
            .await
            .unwrap();
        assert!(endpoint
            .url()
            .ends_with("/t1/c8local._system/c8locals.orders/billing?subscriptionType=Exclusive"));
    })
    .await;
    let otps = mock.to("POST", "/apid/otp");
    assert_eq!(otps.len(), 4);
    for req in otps {
        assert_eq!(req.header("content-type"), Some("text/plain"));
        assert_eq!(req.header("content-length"), Some("0"));
        let expected = format!("apikey {API_KEY}");
        assert_eq!(req.header("authorization"), Some(expected.as_str()));
    }
}

#[tokio::test]
async fn otp_failures_are_retried_by_the_stream_or_end_it() {
    let mock = Mock::start(|req, _| {
        if req
            .header("authorization")
            .is_some_and(|a| a.contains("busy"))
        {
            gdn_error(503, 21, "busy")
        } else {
            gdn_error(403, 11, "no streams for you")
        }
    })
    .await;
    let fetch = |key: &'static str| otp_fetch_error(&mock, key);
    bounded(async {
        let e = fetch("t.busy.key").await;
        assert!(is_rest(&e), "{e:?}");
        assert!(e.is_retryable());
        assert!(chain(&e).contains("errorNum 21"), "{}", chain(&e));
        let e = fetch("t.other.key").await;
        assert_eq!(e.http_status(), Some(403));
        assert!(!e.is_retryable());
    })
    .await;
    // No retries inside a connection attempt: the stream's backoff does that.
    assert_eq!(mock.count("POST", "/apid/otp"), 2);

    // A login whose token is refused for OTPs logs in once more, then gives up.
    let mock = Mock::start(|req, nth| match req.path() {
        "/_open/auth" => ok(json!({"jwt": long_jwt(nth), "tenant": "t1"})),
        _ => gdn_error(401, 11, "not authorized"),
    })
    .await;
    let client = login_client(&mock);
    let Auth::Otp(source) = client.otp_auth() else {
        panic!("not an OTP auth")
    };
    let e = bounded(source.fetch()).await.unwrap_err();
    assert_eq!(e.http_status(), Some(401));
    assert!(!e.is_retryable());
    assert_eq!(mock.count("POST", "/_open/auth"), 2);
    assert_eq!(mock.count("POST", "/apid/otp"), 2);
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let token = long_jwt(0);
    let mock = Mock::start({
        let token = token.clone();
        move |req, _| match req.path() {
            "/_open/auth" => ok(json!({"jwt": token, "tenant": "t1"})),
            "/apid/otp" => ok(json!({"otp": 12345})),
            _ => gdn_error(403, 11, "forbidden"),
        }
    })
    .await;
    let secrets = ["SUPERSECRETKEY", PASSWORD, "SIGNATURE-SECRET", "12345"];
    let check = |text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{s:?} in {text:?}");
        }
    };
    let key_client = api_key_client(&mock);
    let login = login_client(&mock);
    check(&format!("{key_client:?} {login:?}"));
    assert!(format!("{login:?}").contains("login"));
    let builder = Client::builder(&mock.url).login(EMAIL, PASSWORD);
    check(&format!("{builder:?}"));
    bounded(async {
        for client in [&key_client, &login] {
            let e = client.list_streams(Scope::Global).await.unwrap_err();
            check(&format!("{e} {e:?}"));
            let e = client.fetch_otp().await.unwrap_err();
            assert!(matches!(e, RestError::Decode { .. }), "{e:?}");
            check(&format!("{e} {e:?}"));
            let auth = client.otp_auth();
            check(&format!("{auth:?}"));
            let Auth::Otp(source) = auth else { panic!() };
            let e = source.fetch().await.unwrap_err();
            check(&format!("{} {e:?}", chain(&e)));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken peers
// ---------------------------------------------------------------------------------------------
// The few helpers that name what the client added for them, so that the tests below read the
// same whatever the error type looks like.

/// What fetching one-time passwords with this key from `mock` fails with.
async fn otp_fetch_error(mock: &Mock, key: &'static str) -> Error {
    let client = Client::builder(&mock.url)
        .api_key(key)
        .retry(fast_retry())
        .build()
        .unwrap();
    let Auth::Otp(source) = client.otp_auth() else {
        panic!("not an OTP auth")
    };
    source.fetch().await.unwrap_err()
}

/// The status and location of a refused redirect, if that is what `e` is.
fn redirect_of(e: &RestError) -> Option<(u16, Option<String>)> {
    match e {
        RestError::Redirect {
            status, location, ..
        } => Some((*status, location.clone())),
        _ => None,
    }
}

/// True for a successful reply that was longer than the client reads.
fn too_large(e: &RestError) -> bool {
    matches!(e, RestError::ReplyTooLarge { .. })
}

/// True for a REST failure in the crate's error.
fn is_rest(e: &Error) -> bool {
    matches!(e, Error::Rest(_))
}

fn max_reply(builder: ClientBuilder, bytes: usize) -> ClientBuilder {
    builder.max_reply_bytes(bytes)
}

/// Everything logged on this thread, at every level, while the guard lives.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

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

/// Issue 19, item 1: a 3xx is refused with its status and (redacted) location; nothing goes to
/// where it points, no credentials, no login, no publish turned into a GET.
#[tokio::test]
async fn redirects_are_refused_and_nothing_reaches_their_target() {
    // Where the redirects point: it would hand out a token, a tenant and a one-time password.
    let elsewhere = Mock::start(|_, _| {
        ok(json!({"jwt": long_jwt(9), "tenant": "evil", "otp": "EVIL-OTP", "result": []}))
    })
    .await;
    let target = elsewhere.url.clone();
    let mock = Mock::start(move |req, _| {
        let to = |status, path: &str| {
            reply(status, json!({})).header("location", &format!("{target}{path}"))
        };
        match req.path() {
            "/_open/auth" => to(307, "/_open/auth?otp=LOCATION-SECRET"),
            "/apid/otp" => to(307, "/apid/otp"),
            "/_api/user" => to(302, "/_api/user"),
            STREAMS => to(308, STREAMS),
            p if p.ends_with("/publish") => reply(301, json!({})).header("location", "/elsewhere"),
            _ => reply(404, json!({})),
        }
    })
    .await;
    bounded(async {
        // A login: the email and password would go to the other server, and its token and
        // tenant would be used.
        let e = login_client(&mock).tenant().await.unwrap_err();
        let (status, location) = redirect_of(&e).unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(status, 307);
        let location = location.unwrap_or_default();
        assert!(
            location.starts_with(&format!("{}/_open/auth?otp=REDACTED", elsewhere.url)),
            "{location}"
        );
        let text = format!("{e} {e:?}");
        assert!(!text.contains("LOCATION-SECRET"), "{text}");
        assert!(text.contains("redirects are refused"), "{text}");
        assert!(!e.is_retryable());
        assert_eq!(e.status(), Some(307));

        let client = api_key_client(&mock);
        // A one-time password from elsewhere, asked directly or for a socket.
        let e = client.fetch_otp().await.unwrap_err();
        assert_eq!(redirect_of(&e).map(|r| r.0), Some(307), "{e:?}");
        let Auth::Otp(source) = client.otp_auth() else {
            panic!("not an OTP auth")
        };
        let e = source.fetch().await.unwrap_err();
        assert_eq!(e.http_status(), Some(307), "{e:?}");
        assert!(!e.is_retryable(), "{e:?}");
        // No tenant guessed past a redirect, no stream list from elsewhere.
        let e = client.tenant().await.unwrap_err();
        assert_eq!(redirect_of(&e).map(|r| r.0), Some(302), "{e:?}");
        let e = client.list_streams(Scope::Global).await.unwrap_err();
        assert_eq!(redirect_of(&e).map(|r| r.0), Some(308), "{e:?}");
        // A publish is not turned into a body-less GET that "succeeds".
        let e = client
            .publish("orders", Scope::Global, "m")
            .await
            .unwrap_err();
        assert_eq!(redirect_of(&e).map(|r| r.0), Some(301), "{e:?}");
    })
    .await;
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    assert_eq!(mock.count("GET", "/elsewhere"), 0);
    assert_eq!(mock.count("POST", "/_open/auth"), 1);
    assert_eq!(
        mock.count("POST", "/apid/otp"),
        2,
        "redirects are not retried"
    );
    assert_eq!(mock.count("GET", STREAMS), 1);
}

/// Issue 19, item 2: publish and create are not sent again after a reply that may mean they
/// were carried out (500, 502, 504); 429 and 503 are retried for every call, and reads are
/// retried after every 5xx.
#[tokio::test]
async fn calls_that_are_not_idempotent_are_not_repeated_after_a_possible_success() {
    let publish = format!("{STREAMS}/c8globals.orders/publish");
    let create = format!("{STREAMS}/orders");
    for status in [500, 502, 504] {
        let mock = Mock::start(move |_, _| gdn_error(status, 0, "upstream trouble")).await;
        let client = api_key_client(&mock);
        bounded(async {
            let e = client
                .publish("orders", Scope::Global, "once")
                .await
                .unwrap_err();
            assert!(matches!(e, RestError::Server(_)), "{e:?}");
            assert_eq!(e.status(), Some(status));
            assert!(e.may_have_been_processed(), "{e:?}");
            let e = client
                .create_stream("orders", Scope::Global)
                .await
                .unwrap_err();
            assert_eq!(e.status(), Some(status));
            client.list_streams(Scope::Global).await.unwrap_err();
            client
                .delete_stream("orders", Scope::Global)
                .await
                .unwrap_err();
        })
        .await;
        assert_eq!(mock.count("POST", &publish), 1, "publish after {status}");
        assert_eq!(mock.count("POST", &create), 1, "create after {status}");
        assert_eq!(mock.count("GET", STREAMS), 3, "list after {status}");
        let deleted = format!("{STREAMS}/c8globals.orders");
        assert_eq!(mock.count("DELETE", &deleted), 3, "delete after {status}");
    }
    for status in [429, 503] {
        let mock = Mock::start(move |_, _| gdn_error(status, 0, "not now")).await;
        let client = api_key_client(&mock);
        bounded(async {
            let e = client
                .publish("orders", Scope::Global, "m")
                .await
                .unwrap_err();
            assert_eq!(e.status(), Some(status));
            assert!(!e.may_have_been_processed(), "{e:?}");
            client
                .create_stream("orders", Scope::Global)
                .await
                .unwrap_err();
        })
        .await;
        assert_eq!(mock.count("POST", &publish), 3, "publish after {status}");
        assert_eq!(mock.count("POST", &create), 3, "create after {status}");
    }
}

/// Issue 19, item 2: a timeout after the request went out is not repeated for a publish, but
/// is for a read; a connection that could not be made is retried for every call.
#[tokio::test]
async fn timeouts_repeat_only_idempotent_calls_and_refused_connections_repeat_all() {
    let mock = Mock::start(|_, _| ok(json!({"result": []})).after(Duration::from_secs(20))).await;
    let client = Client::builder(&mock.url)
        .api_key(API_KEY)
        .retry(fast_retry())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    bounded(async {
        let e = client
            .publish("orders", Scope::Global, "m")
            .await
            .unwrap_err();
        assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
        assert!(e.may_have_been_processed(), "{e:?}");
        client.list_streams(Scope::Global).await.unwrap_err();
    })
    .await;
    let published = format!("{STREAMS}/c8globals.orders/publish");
    assert_eq!(mock.count("POST", &published), 1);
    assert_eq!(mock.count("GET", STREAMS), 3);

    // Nothing listens: the request never went out, so even a publish is retried.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (logs, _guard) = capture_logs();
    let client = Client::builder(format!("http://{addr}"))
        .api_key(API_KEY)
        .retry(fast_retry())
        .build()
        .unwrap();
    let e = bounded(client.publish("orders", Scope::Global, "m"))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
    assert!(!e.may_have_been_processed(), "{e:?}");
    let logs = logs.text();
    assert_eq!(
        logs.matches("retrying GDN REST request").count(),
        2,
        "{logs}"
    );
}

/// Issue 19, item 7: a delete repeated after a 502 or a timeout that then gets 404, and a create
/// repeated after a 503 that then gets 409, may have found their own work: success. The same
/// answers to a first try are still errors.
#[tokio::test]
async fn a_repeat_that_finds_its_own_work_done_succeeds() {
    let mock = Mock::start(|req, nth| {
        let name = req.path().rsplit('/').next().unwrap_or_default();
        match (req.method.as_str(), name, nth) {
            ("DELETE", "c8globals.gone", 0) => gdn_error(502, 0, "bad gateway"),
            ("DELETE", "c8globals.slow", 0) => ok(json!({})).after(Duration::from_secs(20)),
            ("DELETE", _, _) => gdn_error(404, 1203, "stream not found"),
            ("POST", "made" | "again", 0) => gdn_error(503, 21, "busy"),
            ("POST", _, _) => gdn_error(409, 581, "stream already exists"),
            _ => reply(404, json!({})),
        }
    })
    .await;
    let client = Client::builder(&mock.url)
        .api_key(API_KEY)
        .retry(fast_retry())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let g = Scope::Global;
    bounded(async {
        client.delete_stream("gone", g).await.unwrap();
        client.delete_stream("slow", g).await.unwrap();
        let e = client.delete_stream("never", g).await.unwrap_err();
        assert!(matches!(e, RestError::NotFound(_)), "{e:?}");
        assert_eq!(
            client.create_stream("made", g).await.unwrap(),
            "c8globals.made"
        );
        assert!(client.create_stream_if_missing("again", g).await.unwrap());
        let e = client.create_stream("taken", g).await.unwrap_err();
        assert!(matches!(e, RestError::Conflict(_)), "{e:?}");
        assert!(!client.create_stream_if_missing("taken", g).await.unwrap());
    })
    .await;
    for (method, name, tries) in [
        ("DELETE", "c8globals.gone", 2),
        ("DELETE", "c8globals.slow", 2),
        ("DELETE", "c8globals.never", 1),
        ("POST", "made", 2),
        ("POST", "again", 2),
        ("POST", "taken", 2),
    ] {
        assert_eq!(
            mock.count(method, &format!("{STREAMS}/{name}")),
            tries,
            "{method} {name}"
        );
    }
}

/// Issue 19, item 3: a successful reply is read up to the limit and no further, whether its
/// length is announced or not; an error reply up to 64 KiB. Each server here announces or
/// sends more, then stalls: a client that read on would wait for its timeout.
#[tokio::test]
async fn long_replies_are_cut_off_while_they_arrive() {
    const MIB: usize = 1024 * 1024;
    let mock = Mock::start(|req, _| match (req.path(), req.query()) {
        (STREAMS, Some("global=true")) => endless(200, Some(512 * MIB as u64), 8 * MIB),
        (STREAMS, _) => endless(200, None, 8 * MIB),
        ("/_api/user", _) => endless(500, Some(512 * MIB as u64), MIB),
        ("/datacenter/local", _) => ok(json!({"_key": "x".repeat(2000), "tags": {"url": "h"}})),
        _ => reply(404, json!({})),
    })
    .await;
    let client = api_key_client(&mock);
    bounded(async {
        for scope in [Scope::Global, Scope::Local] {
            let e = client.list_streams(scope).await.unwrap_err();
            assert!(too_large(&e), "{scope:?}: {e:?}");
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("4194304 bytes"), "{e}");
        }
        // An error reply: its start is enough for the error.
        let e = client.tenant().await.unwrap_err();
        assert!(matches!(e, RestError::Server(_)), "{e:?}");
        let message = e.api_error().unwrap().error_message.clone().unwrap();
        assert!(
            message.len() <= 256 && message.starts_with("xxxx"),
            "{message}"
        );

        // The limit is the builder's.
        assert_eq!(client.local_datacenter().await.unwrap().url, "h");
        let small = max_reply(Client::builder(&mock.url).api_key(API_KEY), 1024)
            .retry(fast_retry())
            .build()
            .unwrap();
        let e = small.local_datacenter().await.unwrap_err();
        assert!(too_large(&e), "{e:?}");
    })
    .await;
    assert_eq!(mock.count("GET", STREAMS), 2, "not retried");
    assert_eq!(mock.count("GET", "/_api/user"), 3, "a 500 is retried");
    let e = Client::builder(&mock.url)
        .api_key(API_KEY)
        .max_reply_bytes(0)
        .build()
        .unwrap_err();
    assert!(matches!(e, RestError::Config(_)), "{e:?}");
}

/// Issue 19, item 4: a 200 KB error body of `a=a=…` (quadratic for the old redaction) gives a
/// short message promptly: only its start is redacted. (That redaction is linear is checked by
/// the work-counting tests in `src/redact.rs`.)
#[tokio::test]
async fn a_huge_error_body_of_redaction_bait_is_cut_before_it_is_redacted() {
    let bait = "a=".repeat(100_000);
    let mock = Mock::start(move |_, _| text(500, &bait)).await;
    let e = bounded(api_key_client(&mock).list_streams(Scope::Global))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Server(_)), "{e:?}");
    let message = e.api_error().unwrap().error_message.clone().unwrap();
    assert!(
        message.len() <= 256 && message.starts_with("a=a="),
        "{message}"
    );
    assert_eq!(mock.count("GET", STREAMS), 3);
}

/// Issue 19, item 5: secrets a server sends back (the client's own key, password, JWT or
/// one-time password, as text, in JSON inside a message, after `bearer`, as `passwd`, in a
/// redirect's location or a reply that does not decode) reach no error, `Debug` output or log
/// line, retries included.
#[tokio::test]
async fn secrets_a_server_echoes_reach_no_error_debug_or_log() {
    let (logs, _guard) = capture_logs();
    let token = long_jwt(0);
    let otp = "OTP-ECHOED-0001";
    let mock = Mock::start({
        let token = token.clone();
        move |req, nth| {
            // The caller's own credential: its API key, or the password of the login.
            let own = match req.header("authorization") {
                Some(a) if a.starts_with("apikey") => API_KEY,
                _ => PASSWORD,
            };
            match (req.method.as_str(), req.path(), req.query()) {
                ("POST", "/_open/auth", _) => ok(json!({"jwt": token, "tenant": "t1"})),
                ("POST", "/apid/otp", _) if nth % 3 == 0 => ok(json!({"otp": otp})),
                ("POST", "/apid/otp", _) => gdn_error(
                    403,
                    11,
                    &format!("one-time password {otp} was used already"),
                ),
                ("GET", STREAMS, Some("global=true")) => {
                    gdn_error(503, 21, &format!("invalid API key {own}"))
                }
                ("GET", STREAMS, _) => ok(json!({"result": own})),
                ("DELETE", _, _) => text(500, &format!("refused Authorization: apikey {own}")),
                ("GET", "/datacenter/local", _) => gdn_error(
                    400,
                    4,
                    &format!(
                        "rejected {{\"Authorization\":\"bearer {token}\"}}, \"passwd\":\"{own}\""
                    ),
                ),
                ("POST", p, _) if p.ends_with("/publish") => reply(302, json!({}))
                    .header("location", &format!("http://127.0.0.1:9/x?k={own}")),
                ("POST", _, _) => text(400, &format!("bad token: {token}; echo {own}")),
                _ => reply(404, json!({})),
            }
        }
    })
    .await;
    let signature = token.rsplit('.').next().unwrap().to_string();
    let payload = token.split('.').nth(1).unwrap().to_string();
    let common = [signature.as_str(), payload.as_str(), token.as_str(), otp];
    let check = |what: &str, own: &str, text: &str| {
        for s in common.iter().chain([&own]) {
            assert!(!text.contains(s), "{what}: {s:?} in {text:?}");
        }
    };
    let mut errors = 0;
    for (client, own) in [
        (api_key_client(&mock), "SUPERSECRETKEY"),
        (login_client(&mock), PASSWORD),
    ] {
        bounded(async {
            assert_eq!(client.fetch_otp().await.unwrap().expose(), otp);
            let g = Scope::Global;
            let results = [
                client.fetch_otp().await.map(drop),
                client.list_streams(g).await.map(drop),
                client.list_streams(Scope::Local).await.map(drop),
                client.delete_stream("orders", g).await,
                client.local_datacenter().await.map(drop),
                client.publish("orders", g, "m").await,
                client.create_stream("orders", g).await.map(drop),
            ];
            for result in results {
                let e = result.unwrap_err();
                check("RestError", own, &format!("{e} {e:?}"));
                let crate_error = Error::from(e);
                check(
                    "Error",
                    own,
                    &format!("{} {crate_error:?}", chain(&crate_error)),
                );
                errors += 1;
            }
            let Auth::Otp(source) = client.otp_auth() else {
                panic!("not an OTP auth")
            };
            let e = source.fetch().await.unwrap_err();
            check("otp_auth", own, &format!("{} {e:?}", chain(&e)));
        })
        .await;
    }
    assert_eq!(errors, 14);
    let logs = logs.text();
    assert!(logs.contains("retrying GDN REST request"), "{logs}");
    check("logs", "SUPERSECRETKEY", &logs);
    check("logs", PASSWORD, &logs);
    // The messages still say what happened.
    assert!(logs.contains("invalid API key REDACTED"), "{logs}");
}

/// Issue 19, item 6: a REST failure in the crate's error says it is one (not "handshake
/// rejected"), has the `RestError` as its source and is retried exactly when the `RestError`
/// is retryable: an unexpected reply is final.
#[tokio::test]
async fn rest_failures_in_the_crate_error_are_named_as_such() {
    let mock = Mock::start(|req, _| {
        let key = req.header("authorization").unwrap_or_default();
        if key.contains("busy") {
            gdn_error(503, 21, "busy")
        } else if key.contains("bad") {
            gdn_error(400, 4, "bad request")
        } else {
            ok(json!({"no": "otp"}))
        }
    })
    .await;
    let fetch = |key: &'static str| otp_fetch_error(&mock, key);
    bounded(async {
        let e = fetch("t.bad.key").await;
        assert!(is_rest(&e), "{e:?}");
        assert_eq!(e.to_string(), "GDN REST request failed");
        let text = chain(&e);
        assert_eq!(
            text,
            "GDN REST request failed: request refused: POST /apid/otp answered HTTP 400 \
             (errorNum 4): bad request"
        );
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.downcast_ref::<RestError>().is_some(), "{source:?}");
        assert_eq!(e.http_status(), Some(400));
        assert!(!e.is_retryable());

        let e = fetch("t.empty.key").await;
        assert!(is_rest(&e), "{e:?}");
        assert!(chain(&e).contains("no `otp` string"), "{}", chain(&e));
        assert!(!e.is_retryable(), "an unexpected reply is final: {e:?}");

        let e = fetch("t.busy.key").await;
        assert!(is_rest(&e) && e.is_retryable(), "{e:?}");
        assert_eq!(e.http_status(), Some(503));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The whole flow: REST here, sockets on the embedded stream server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn producer_and_consumer_from_the_client_use_fresh_otps() {
    let server = LocalServer::start_with(ServerConfig::default().api_key("server-only-key"))
        .await
        .unwrap();
    let ws_port = server.addr().port();
    let mock = Mock::start({
        let server = server.clone();
        move |req, _| match (req.method.as_str(), req.path()) {
            ("POST", "/_open/auth") => ok(json!({"jwt": long_jwt(0), "tenant": "t1"})),
            ("GET", "/datacenter/local") => {
                ok(json!({"tags": {"url": format!("gdn@127.0.0.1:{ws_port}")}}))
            }
            ("POST", "/apid/otp") => ok(json!({"otp": server.issue_otp()})),
            ("POST", p) if p == format!("{STREAMS}/orders") => {
                ok(json!({"result": {"stream-id": "c8globals.orders"}}))
            }
            _ => reply(404, json!({})),
        }
    })
    .await;
    let client = Client::builder(&mock.url)
        .login(EMAIL, PASSWORD)
        .retry(fast_retry())
        .create_missing_streams(true)
        .build()
        .unwrap();
    bounded(async {
        let options = ConsumerOptions::new("billing").initial_position(InitialPosition::Earliest);
        let mut consumer = client
            .consumer("orders", Scope::Global, options)
            .await
            .unwrap();
        let producer = client
            .producer("orders", Scope::Global, ProducerOptions::default())
            .await
            .unwrap();
        producer.send(Publish::new("hello")).await.unwrap();
        let message = consumer.next().await.unwrap().unwrap();
        assert_eq!(&message.payload[..], b"hello");
        consumer.ack(&message).await.unwrap();
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
    })
    .await;
    assert_eq!(
        server
            .stored("persistent://t1/c8global._system/c8globals.orders")
            .len(),
        1
    );
    assert_eq!(mock.count("POST", "/apid/otp"), 2, "one per socket");
    assert_eq!(mock.count("POST", &format!("{STREAMS}/orders")), 2);
    assert_eq!(mock.count("POST", "/_open/auth"), 1);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// TLS with a private root
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "rustls")]
mod tls {
    use super::*;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig as TlsConfig};
    use tokio_rustls::TlsAcceptor;

    /// A self-signed certificate for 127.0.0.1, its PEM text and an acceptor serving it.
    fn self_signed() -> (String, TlsAcceptor) {
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let config =
            TlsConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        (ck.cert.pem(), TlsAcceptor::from(Arc::new(config)))
    }

    #[tokio::test]
    async fn an_extra_pem_root_is_trusted_by_rest_and_sockets() {
        let (pem, acceptor) = self_signed();
        let mock = Mock::start_tls(
            |req, nth| match req.path() {
                "/apid/otp" => ok(json!({"otp": format!("otp-{nth}")})),
                _ => reply(404, json!({})),
            },
            acceptor,
        )
        .await;
        let Some(port) = mock.url.strip_prefix("https://127.0.0.1:") else {
            panic!("{}", mock.url)
        };

        // Without the root: the certificate is refused.
        let untrusting = Client::builder(&mock.url)
            .api_key(API_KEY)
            .retry(fast_retry())
            .build()
            .unwrap();
        let e = bounded(untrusting.fetch_otp()).await.unwrap_err();
        assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
        assert_eq!(mock.requests().len(), 0);

        let file = std::env::temp_dir().join(format!("rest-client-{}.pem", std::process::id()));
        std::fs::write(&file, &pem).unwrap();
        for builder in [
            Client::builder(&mock.url).add_root_certificate_pem(pem.as_bytes()),
            Client::builder(&mock.url).ca_file(&file),
        ] {
            let client = builder
                .api_key(API_KEY)
                .tenant("t1")
                .socket_server(format!("wss://127.0.0.1:{port}"))
                .retry(fast_retry())
                .build()
                .unwrap();
            bounded(async {
                assert!(client
                    .fetch_otp()
                    .await
                    .unwrap()
                    .expose()
                    .starts_with("otp-"));
                let endpoint = client
                    .producer_endpoint("orders", Scope::Global, ProducerOptions::default())
                    .await
                    .unwrap();
                endpoint.connect().await.expect("wss with the extra root");
            })
            .await;
        }
        let path = "/_ws/ws/v2/producer/persistent/t1/c8global._system/c8globals.orders";
        let upgrades: Vec<_> = mock.to("GET", path).into_iter().map(|r| r.target).collect();
        assert_eq!(
            upgrades,
            [format!("{path}?otp=otp-1"), format!("{path}?otp=otp-3")]
        );
        std::fs::remove_file(&file).unwrap();

        for bad in [
            Client::builder(&mock.url).add_root_certificate_pem(b"not a certificate"),
            Client::builder(&mock.url).ca_file("/nonexistent/ca.pem"),
        ] {
            let e = bad.api_key(API_KEY).build().unwrap_err();
            assert!(matches!(e, RestError::Config(_)), "{e:?}");
        }
    }

    /// Issue 19, item 1: an `https` server redirecting to `http` on its own port (where reqwest
    /// would keep the `Authorization` header) gets nothing over plain text. The port speaks both:
    /// TLS to a client hello, plain HTTP otherwise.
    #[tokio::test]
    async fn https_is_never_downgraded_to_http_on_the_same_port() {
        let (pem, acceptor) = self_signed();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let over_tls: Arc<Handler> = Arc::new(move |req: &Req, _| {
            reply(307, json!({})).header(
                "location",
                &format!("http://127.0.0.1:{port}{}", req.path()),
            )
        });
        let over_plain: Arc<Handler> = Arc::new(|_: &Req, _| ok(json!({"otp": "PLAIN-TEXT-OTP"})));
        let (tls_log, plain_log) = (Arc::default(), Arc::<Mutex<Vec<Req>>>::default());
        let server = tokio::spawn({
            let (tls_log, plain_log) = (Arc::clone(&tls_log), Arc::clone(&plain_log));
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let mut first = [0u8; 1];
                    if tcp.peek(&mut first).await.is_err() {
                        continue;
                    }
                    if first[0] == 0x16 {
                        let (acceptor, handler, log) =
                            (acceptor.clone(), over_tls.clone(), Arc::clone(&tls_log));
                        tokio::spawn(async move {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                serve(s, handler, log).await;
                            }
                        });
                    } else {
                        tokio::spawn(serve(tcp, over_plain.clone(), Arc::clone(&plain_log)));
                    }
                }
            }
        });
        let client = Client::builder(format!("https://127.0.0.1:{port}"))
            .add_root_certificate_pem(pem.as_bytes())
            .api_key(API_KEY)
            .retry(fast_retry())
            .build()
            .unwrap();
        let e = bounded(client.fetch_otp()).await.unwrap_err();
        server.abort();
        assert_eq!(redirect_of(&e).map(|r| r.0), Some(307), "{e:?}");
        assert_eq!(tls_log.lock().unwrap().len(), 1);
        let plain = plain_log.lock().unwrap().clone();
        assert!(plain.is_empty(), "sent over plain http: {plain:?}");
    }

    /// Issue 19, item 16: a certificate refused while fetching a one-time password is
    /// `Error::Tls`, which ends the stream as it does on the socket, instead of a retried
    /// failure; the client does not retry it either.
    #[tokio::test]
    async fn a_refused_certificate_while_fetching_an_otp_ends_the_stream() {
        let (_pem, acceptor) = self_signed();
        let mock = Mock::start_tls(|_, _| ok(json!({"otp": "o1"})), acceptor).await;
        let port = mock.url.rsplit(':').next().unwrap().to_string();
        let client = Client::builder(&mock.url)
            .api_key(API_KEY)
            .tenant("t1")
            .socket_server(format!("wss://127.0.0.1:{port}"))
            .retry(fast_retry())
            .build()
            .unwrap();
        let (logs, _guard) = capture_logs();
        bounded(async {
            let e = client.fetch_otp().await.unwrap_err();
            assert!(matches!(e, RestError::Transport { .. }), "{e:?}");
            assert!(!e.is_retryable(), "{e:?}");
            let Auth::Otp(source) = client.otp_auth() else {
                panic!("not an OTP auth")
            };
            let e = source.fetch().await.unwrap_err();
            assert!(matches!(e, Error::Tls(_)), "{e:?}");
            assert!(!e.is_retryable());
            let text = chain(&e);
            assert!(
                text.starts_with("TLS handshake failed: POST /apid/otp failed"),
                "{text}"
            );

            // A consumer from the client ends at the first attempt.
            let config = ReconnectConfig::builder()
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5))
                .max_retries(5)
                .build()
                .unwrap();
            let mut consumer = client
                .consumer_with_config("orders", Scope::Global, ConsumerOptions::new("s"), config)
                .await
                .unwrap();
            let end = consumer.next().await;
            assert!(matches!(end, Some(Err(Error::Tls(_)))), "{end:?}");
        })
        .await;
        assert!(
            !logs.text().contains("retrying GDN REST request"),
            "{}",
            logs.text()
        );
        assert_eq!(mock.requests().len(), 0);
    }
}
