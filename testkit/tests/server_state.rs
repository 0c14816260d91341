//! The server's own state stays bounded and survives what it should (issue 19): a TLS identity
//! given at start (so a restarted server keeps the certificate its clients trust), one-time
//! passwords that expire and are capped, and a cap on open connections. Real sockets on
//! 127.0.0.1 only; every test ends within 40 s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stream_websocket_testkit::{LocalServer, ServerConfig, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite;

const KEY: &str = "acme.k.STATESECRET";

/// Moves Tokio's clock (the server's) on by `d` at once, then lets it run again before any
/// socket is used. Call outside [`bounded`], whose deadline would otherwise pass too.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(40), body)
        .await
        .expect("test took longer than 40 s")
}

/// A rustls client configuration that trusts only this certificate (PEM).
fn trusting(pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
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

/// The status of `GET /_api/user` over TLS, trusting only `pem`; `Err` for a TLS failure.
async fn https_status(server: &LocalServer, pem: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(trusting(pem))
        .build()
        .unwrap();
    client
        .get(format!("{}/_api/user", server.https_url()))
        .header("authorization", "apikey t.k.s")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_given_tls_identity_is_served_again_after_a_restart() {
    bounded(async {
        let identity = TlsIdentity::generate().unwrap();
        let first = LocalServer::start_with(ServerConfig::default().tls_identity(identity.clone()))
            .await
            .unwrap();
        let trusted = first.certificate_pem().unwrap().to_string();
        assert_eq!(trusted, identity.cert_pem());
        assert_eq!(https_status(&first, &trusted).await, Ok(200));
        first.shutdown().await;

        // A restart with the same identity: a client that read the certificate once still
        // trusts the server.
        let second = LocalServer::start_with(ServerConfig::default().tls_identity(identity))
            .await
            .unwrap();
        assert_eq!(second.certificate_pem(), Some(trusted.as_str()));
        assert_eq!(https_status(&second, &trusted).await, Ok(200));

        // Without one, each start makes a new certificate the old one's clients reject.
        let fresh = LocalServer::start().await.unwrap();
        assert_ne!(fresh.certificate_pem(), Some(trusted.as_str()));
        assert!(https_status(&fresh, &trusted).await.is_err());
        second.shutdown().await;
        fresh.shutdown().await;
    })
    .await;
}

#[test]
fn a_tls_identity_is_checked_and_never_shows_its_key() {
    let a = TlsIdentity::generate().unwrap();
    let b = TlsIdentity::generate().unwrap();
    let again = TlsIdentity::from_pem(a.cert_pem(), a.key_pem()).unwrap();
    assert_eq!(again.cert_pem(), a.cert_pem());
    let key_body = a.key_pem().lines().nth(1).unwrap().to_string();
    for shown in [
        format!("{a:?}"),
        format!("{a:#?}"),
        format!("{:?}", ServerConfig::default().tls_identity(a.clone())),
    ] {
        assert!(!shown.contains(&key_body), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
    let errors = [
        TlsIdentity::from_pem(a.cert_pem(), b.key_pem()).unwrap_err(),
        TlsIdentity::from_pem("not a certificate", a.key_pem()).unwrap_err(),
        TlsIdentity::from_pem(
            a.cert_pem(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err(),
        TlsIdentity::from_pem(a.cert_pem(), "").unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(!e.to_string().contains(&key_body), "{e}");
    }
}

/// The HTTP status of a WebSocket upgrade with `?otp=`, 101 if it succeeded.
async fn upgrade_with_otp(server: &LocalServer, otp: &str) -> u16 {
    let url = format!(
        "{}/_ws/ws/v2/producer/persistent/acme/c8local._system/c8locals.orders?otp={otp}",
        server.ws_url()
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            101
        }
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade: {e}"),
    }
}

#[tokio::test]
async fn one_time_passwords_expire_after_60_seconds() {
    let (server, stale, kept) = bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().api_key(KEY))
            .await
            .unwrap();
        let (stale, kept) = (server.issue_otp(), server.issue_otp());
        (server, stale, kept)
    })
    .await;
    // Sixty seconds pass on the server's clock without waiting for them.
    skip(Duration::from_secs(60)).await;
    bounded(async {
        assert_eq!(upgrade_with_otp(&server, &stale).await, 401);
        let fresh = server.issue_otp();
        assert_eq!(upgrade_with_otp(&server, &fresh).await, 101);
        // An expired password is used up like any other.
        assert_eq!(upgrade_with_otp(&server, &kept).await, 401);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_shorter_otp_lifetime_is_kept() {
    let config = ServerConfig::default()
        .api_key(KEY)
        .otp_lifetime(Duration::from_secs(5));
    let server = bounded(LocalServer::start_with(config)).await.unwrap();
    let (early, late) = (server.issue_otp(), server.issue_otp());
    skip(Duration::from_secs(4)).await;
    assert_eq!(bounded(upgrade_with_otp(&server, &early)).await, 101);
    skip(Duration::from_secs(1)).await;
    assert_eq!(bounded(upgrade_with_otp(&server, &late)).await, 401);
    bounded(server.shutdown()).await;
}

#[tokio::test]
async fn at_most_10000_one_time_passwords_are_outstanding_oldest_dropped_first() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().api_key(KEY))
            .await
            .unwrap();
        let otps: Vec<String> = (0..10_001).map(|_| server.issue_otp()).collect();
        assert_eq!(upgrade_with_otp(&server, &otps[0]).await, 401);
        assert_eq!(upgrade_with_otp(&server, &otps[1]).await, 101);
        assert_eq!(upgrade_with_otp(&server, &otps[10_000]).await, 101);

        let small = LocalServer::start_with(ServerConfig::default().api_key(KEY).max_otps(2))
            .await
            .unwrap();
        let (a, b, c) = (small.issue_otp(), small.issue_otp(), small.issue_otp());
        assert_eq!(upgrade_with_otp(&small, &a).await, 401);
        assert_eq!(upgrade_with_otp(&small, &b).await, 101);
        assert_eq!(upgrade_with_otp(&small, &c).await, 101);
        server.shutdown().await;
        small.shutdown().await;
    })
    .await;
}

/// Sends a kept-alive REST call on `tcp` and reads the start of its answer; `None` if the
/// server closed (or reset) the connection instead.
async fn rest_call(tcp: &mut TcpStream) -> Option<String> {
    let req = b"GET /_api/user HTTP/1.1\r\nHost: x\r\nAuthorization: apikey t.k.s\r\n\r\n";
    if tcp.write_all(req).await.is_err() {
        return None;
    }
    let mut buf = [0u8; 512];
    match tcp.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().max_connections(2))
            .await
            .unwrap();
        let addr = server.addr();
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        for tcp in [&mut a, &mut b] {
            let answer = rest_call(tcp).await.expect("within the cap");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(rest_call(&mut c).await, None, "beyond the cap");
        assert_eq!(server.stats().connections_rejected, 1);
        // The first two are still served.
        assert!(rest_call(&mut a).await.is_some());

        // Once one closes, a new connection gets its place (as soon as the server has seen the
        // close: each try is refused until then).
        drop(b);
        loop {
            let mut d = TcpStream::connect(addr).await.unwrap();
            if let Some(answer) = rest_call(&mut d).await {
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                break;
            }
            tokio::task::yield_now().await;
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_default_cap_takes_many_connections() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let mut open = Vec::new();
        for _ in 0..50 {
            let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
            assert!(rest_call(&mut tcp).await.is_some());
            open.push(tcp);
        }
        assert_eq!(server.stats().connections_rejected, 0);
        server.shutdown().await;
    })
    .await;
}
