//! The embedded server as an offline GDN: the REST endpoints the SDKs call (login, tenant, OTP,
//! data center, fabrics, streams), credentials, TLS on the same port, the SDKs' path quirks,
//! streams that must exist, injected REST failures, and listening control. Real sockets on
//! 127.0.0.1; every test ends within 20 s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stream_websocket_testkit::{LocalServer, ServerConfig};
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::{self, Message};

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(20), body)
        .await
        .expect("test took longer than 20 s")
}

/// REST calls against one server, with an optional `Authorization` header.
struct Api {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Api {
    fn plain(server: &LocalServer) -> Api {
        Api {
            // reqwest is built without a crypto provider of its own; give it the server's root.
            http: reqwest::Client::builder()
                .use_preconfigured_tls(trusting(server))
                .build()
                .unwrap(),
            base: server.http_url(),
            auth: None,
        }
    }

    fn with_auth(mut self, auth: impl Into<String>) -> Api {
        self.auth = Some(auth.into());
        self
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, or returns the HTTP status of a refused handshake.
async fn try_ws(url: &str) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(url).await {
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

#[tokio::test]
async fn an_open_server_walks_the_sdk_flow() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let api = Api::plain(&server).with_auth("apikey demo_tenant.key1.secret");

        // Tenant lookup as pyC8 does it, by jsc8's rule.
        let (status, user) = api.get("/_api/user").await;
        assert_eq!(status, 200);
        assert_eq!(user["result"][0]["tenant"], "demo_tenant");
        assert!(user.get("errorNum").is_none(), "pyC8 takes any errorNum as failure");

        // The socket host, as both SDKs build it.
        let (_, dc) = api.get("/datacenter/local").await;
        assert_eq!(dc["tags"]["url"], format!("gdn@{}", server.addr()));

        // Create (pyC8 sends True), again (409 / 581), list, publish, delete.
        let (status, created) = api
            .post("/_fabric/_system/_api/streams/orders?global=True", None)
            .await;
        assert_eq!((status, &created["result"]["stream-id"]), (200, &json!("c8globals.orders")));
        let (status, again) = api
            .post("/_fabric/_system/_api/streams/orders?global=true", None)
            .await;
        assert_eq!((status, &again["errorNum"]), (409, &json!(581)));
        let (_, global) = api.get("/_fabric/_system/_api/streams?global=true").await;
        assert_eq!(
            global["result"],
            json!([{"topic": "c8globals.orders", "local": false, "db": "_system", "tenant": "demo_tenant", "type": 4}])
        );
        let (_, local) = api.get("/_fabric/_system/_api/streams?global=false").await;
        assert_eq!(local["result"], json!([]));

        // A consumer subscribed before a REST publish gets exactly the body bytes.
        let consumer = format!(
            "{}/_ws/ws/v2/consumer/persistent/demo_tenant/c8global._system/c8globals.orders/sub",
            server.ws_url()
        );
        let mut ws = try_ws(&consumer).await.expect("consumer");
        let (status, _) = api
            .call(
                reqwest::Method::POST,
                "/_fabric/_system/_api/streams/c8globals.orders/publish?global=true",
                None,
            )
            .await;
        assert_eq!(status, 200, "an empty body is a message too");
        let raw = api
            .http
            .post(format!(
                "{}/_fabric/_system/_api/streams/c8globals.orders/publish",
                server.http_url()
            ))
            .header("authorization", "apikey demo_tenant.key1.secret")
            .body("Hello World")
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status().as_u16(), 200);
        assert_eq!(
            server.stored("persistent://demo_tenant/c8global._system/c8globals.orders").len(),
            2
        );
        let first = next_json(&mut ws).await;
        assert_eq!(first["payload"], "");
        let second = next_json(&mut ws).await;
        assert_eq!(STANDARD.decode(second["payload"].as_str().unwrap()).unwrap(), b"Hello World");
        ws.close(None).await.ok();

        let (status, _) = api.delete("/_fabric/_system/_api/streams/c8globals.orders?force=true").await;
        assert_eq!(status, 200);
        let (status, gone) = api.delete("/_fabric/_system/_api/streams/c8globals.orders").await;
        assert_eq!(status, 404);
        assert_eq!(gone["error"], true);
        assert!(server.stats().rest_requests >= 9);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn configured_credentials_are_required_everywhere() {
    bounded(async {
        let config = ServerConfig::default()
            .api_key("acme.key1.secret")
            .user("demo@acme.com", "pw");
        let server = LocalServer::start_with(config).await.unwrap();
        let anonymous = Api::plain(&server);
        assert_eq!(anonymous.get("/_api/user").await.0, 401);
        let wrong = Api::plain(&server).with_auth("apikey acme.key1.other");
        assert_eq!(wrong.get("/_api/user").await.0, 401);
        let (status, bad) = anonymous
            .post(
                "/_open/auth",
                Some(json!({"email": "demo@acme.com", "password": "no"})),
            )
            .await;
        assert_eq!((status, &bad["error"]), (401, &json!(true)));

        // Email login → a three-part JWT whose payload names the tenant.
        let (status, login) = anonymous
            .post(
                "/_open/auth",
                Some(json!({"email": "demo@acme.com", "password": "pw"})),
            )
            .await;
        assert_eq!(status, 200);
        let jwt = login["jwt"].as_str().unwrap().to_string();
        assert_eq!(login["tenant"], "demo_acme.com");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap();
        let claims: Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(claims["tenant"], "demo_acme.com");
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
        let bearer = Api::plain(&server).with_auth(format!("bearer {jwt}"));
        assert_eq!(
            bearer.get("/_api/user").await.1["result"][0]["tenant"],
            "demo_acme.com"
        );

        // Key validation, as the SDKs' tenant discovery may use it.
        let (status, valid) = anonymous
            .post(
                "/_api/key/validate",
                Some(json!({"apikey": "acme.key1.secret"})),
            )
            .await;
        assert_eq!((status, &valid["result"]["tenant"]), (200, &json!("acme")));

        // One-time passwords: each opens exactly one socket, of the tenant that fetched it.
        let (status, otp) = bearer.post("/apid/otp", None).await;
        assert_eq!(status, 200);
        let otp = otp["otp"].as_str().unwrap();
        let url = format!(
            "{}/_ws/ws/v2/producer/persistent/demo_acme.com/c8local._system/c8locals.x",
            server.ws_url()
        );
        let ws = try_ws(&format!("{url}?otp={otp}"))
            .await
            .expect("first use");
        drop(ws);
        assert_eq!(try_ws(&format!("{url}?otp={otp}")).await.err(), Some(401));
        assert_eq!(try_ws(&url).await.err(), Some(401));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn expired_jwts_are_refused() {
    bounded(async {
        let config = ServerConfig::default()
            .user("a@b.c", "pw")
            .jwt_lifetime(Duration::ZERO);
        let server = LocalServer::start_with(config).await.unwrap();
        let (_, login) = Api::plain(&server)
            .post(
                "/_open/auth",
                Some(json!({"email": "a@b.c", "password": "pw"})),
            )
            .await;
        let bearer =
            Api::plain(&server).with_auth(format!("bearer {}", login["jwt"].as_str().unwrap()));
        assert_eq!(bearer.get("/_api/user").await.0, 401);
        server.shutdown().await;
    })
    .await;
}

/// A rustls client configuration that trusts only the server's certificate.
fn trusting(server: &LocalServer) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let pem = server.certificate_pem().expect("TLS is on by default");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn tls_and_plain_text_share_the_port() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let tls = trusting(&server);
        let https = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .build()
            .unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{}/_api/user", server.addr().port());
            let resp = https
                .get(url)
                .header("authorization", "apikey t.k.s")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            assert_eq!(body["result"][0]["tenant"], "t");
        }
        // Plain HTTP on the same port.
        assert_eq!(Api::plain(&server).get("/datacenter/local").await.0, 200);

        // wss:// on the same port, through the crate's own connector.
        let url = format!(
            "{}/_ws/ws/v2/producer/persistent/t/c8local._system/c8locals.s",
            server.wss_url()
        );
        let options = stream_websocket::ConnectOptions::new().rustls(Arc::new(tls));
        let mut ws = stream_websocket::connect_with(url.as_str(), options)
            .await
            .expect("wss");
        ws.send(Message::text(r#"{"payload":"aGk=","context":"1"}"#))
            .await
            .unwrap();
        let ack = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(ack["result"], "ok");
        assert_eq!(
            server
                .stored("persistent://t/c8local._system/c8locals.s")
                .len(),
            1
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_sdks_path_quirks_are_accepted() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let api = Api::plain(&server).with_auth("apikey t.k.s");
        // pyC8 pointed at `127.0.0.1:<port>/api-` sends `/api-:443/...`.
        let (status, _) = api
            .post(
                "/api-:443/_fabric/_system/_api/streams/q?global=False",
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (_, listed) = api.get("/api-:80/_fabric/_system/_api/streams").await;
        assert_eq!(listed["result"][0]["topic"], "c8locals.q");
        // jsc8 forms without `/_api`.
        let (status, current) = api.get("/_fabric/_system/database/current").await;
        assert_eq!(
            (status, &current["result"]["name"]),
            (200, &json!("_system"))
        );
        let (_, fabrics) = api.get("/_fabric/_system/_api/database/user").await;
        assert_eq!(fabrics["result"][0]["name"], "_system");
        // The jsc8 exclusive example's trailing slash: `//_ws/...`.
        let url = format!(
            "{}//_ws/ws/v2/producer/persistent/t/c8local._system/c8locals.q",
            server.ws_url()
        );
        try_ws(&url).await.expect("double slash");
        // A chunked request body (no Content-Length).
        let body = reqwest::Body::wrap_stream(futures::stream::iter([
            Ok::<_, std::io::Error>("chunk-1 "),
            Ok("chunk-2"),
        ]));
        let resp = api
            .http
            .post(format!(
                "{}/_fabric/_system/_api/streams/c8locals.q/publish",
                server.http_url()
            ))
            .header("authorization", "apikey t.k.s")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            server.stored("persistent://t/c8local._system/c8locals.q"),
            vec![bytes::Bytes::from_static(b"chunk-1 chunk-2")]
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn without_auto_create_streams_must_exist() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().auto_create_streams(false))
            .await
            .unwrap();
        let api = Api::plain(&server).with_auth("apikey t.k.s");
        let url = format!(
            "{}/_ws/ws/v2/consumer/persistent/t/c8global._system/c8globals.late/sub",
            server.ws_url()
        );
        assert_eq!(try_ws(&url).await.err(), Some(404));
        let (status, _) = api
            .post("/_fabric/_system/_api/streams/c8globals.late/publish", None)
            .await;
        assert_eq!(status, 404);
        assert_eq!(
            api.post("/_fabric/_system/_api/streams/late?global=true", None)
                .await
                .0,
            200
        );
        try_ws(&url).await.expect("exists now");
        assert!(server.create_topic("persistent://t/ns/direct"));
        assert!(!server.create_topic("persistent://t/ns/direct"));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn injected_rest_failures_carry_gdn_error_bodies() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let api = Api::plain(&server).with_auth("apikey t.k.s");
        server.fail_rest_next(2, 429);
        for _ in 0..2 {
            let (status, body) = api.get("/_api/user").await;
            assert_eq!(
                (status, &body["errorNum"], &body["error"]),
                (429, &json!(429), &json!(true))
            );
            assert!(body["errorMessage"].is_string());
        }
        assert_eq!(api.get("/_api/user").await.0, 200);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_server_can_be_down_at_start_and_stopped_without_races() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().listening(false))
            .await
            .unwrap();
        let refused = |r: std::io::Result<tokio::net::TcpStream>| {
            matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        };
        assert!(refused(tokio::net::TcpStream::connect(server.addr()).await));
        server.resume_listening().await;
        assert!(tokio::net::TcpStream::connect(server.addr()).await.is_ok());
        server.stop_listening().await;
        assert!(refused(tokio::net::TcpStream::connect(server.addr()).await));
        server.resume_listening().await;
        assert_eq!(Api::plain(&server).get("/datacenter/local").await.0, 200);
        server.shutdown().await;
    })
    .await;
}
