//! `wss://` through rustls against a local TLS server with a generated self-signed certificate.

use std::sync::Arc;
use std::time::Duration;
use stream_websocket::Listen;

use futures::{SinkExt, StreamExt};
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    connect_with, ConnectOptions, Error, Incoming, ReconnectConfig, ReconnectingStream,
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A self-signed certificate for "localhost" and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    (ck.cert.der().clone(), key.into())
}

/// A TLS WebSocket server on 127.0.0.1 that sends one consumer frame per connection.
async fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                let frame = r#"{"messageId":"1","payload":"c2VjdXJl","properties":{}}"#;
                let _ = ws.send(Message::Text(frame.into())).await;
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    port
}

fn client_config(trusted: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn fast() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .max_retries(3)
        .build()
        .unwrap()
}

#[tokio::test]
async fn wss_works_with_a_custom_root_store() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let (cert, key) = certificate();
        let port = tls_server(cert.clone(), key).await;
        let url = format!("wss://localhost:{port}/ws/v2/consumer/persistent/t/ns/topic/sub");
        let options = ConnectOptions::new().rustls(client_config(cert));
        let mut stream = ReconnectingStream::with_config(
            move || connect_with(url.clone(), options.clone()),
            fast(),
        );
        match stream.next().await {
            Some(Ok(Incoming::Message(m))) => assert_eq!(&m.payload[..], b"secure"),
            other => panic!("expected the message over TLS, got {other:?}"),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_permanent_tls_error() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let (cert, key) = certificate();
        let port = tls_server(cert, key).await;
        // The default webpki roots do not include our self-signed certificate.
        let url = format!("wss://localhost:{port}/ws");
        let mut stream =
            ReconnectingStream::with_config(move || stream_websocket::connect(url.clone()), fast());
        let mut reconnecting = stream.on_reconnecting();
        match stream.next().await {
            Some(Err(err @ Error::Tls(_))) => {
                // The chain names the layer, then rustls's reason, once.
                let mut segments = vec![err.to_string()];
                let mut cause = std::error::Error::source(&err);
                while let Some(c) = cause {
                    segments.push(c.to_string());
                    cause = c.source();
                }
                let text = segments.join(": ");
                assert_eq!(segments[0], "TLS handshake failed", "{text}");
                assert!(segments.len() >= 2, "the TLS library's reason: {text}");
                // No layer repeats the one below it (the TLS library's own text may mention
                // "certificate" several times, whichever library it is).
                for w in segments.windows(2) {
                    assert!(!w[0].contains(w[1].as_str()), "{text}");
                }
                assert!(text.to_lowercase().contains("certificate"), "{text}");
            }
            other => panic!("expected a TLS error, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        assert!(
            reconnecting.try_recv().is_err(),
            "a refused certificate is not retried"
        );
    })
    .await
    .unwrap();
}
