//! The fault-injecting TCP proxy itself: each fault does what it says.

use std::time::Duration;
use stream_websocket::Listen;

use futures::{SinkExt, StreamExt};
use stream_websocket::tungstenite::Message;
use stream_websocket::{connect, Error, RawCodec, ReconnectConfig, ReconnectingStream};
use stream_websocket_testkit::{Cut, FaultProxy};
use tokio::net::TcpListener;

async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), body)
        .await
        .expect("test took too long")
}

/// An echo WebSocket server on 127.0.0.1.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn echo_once(ws: &mut stream_websocket::WsStream, text: &str) -> String {
    ws.send(Message::Text(text.into())).await.unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => return t.as_str().to_string(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn forwards_both_ways_even_delayed_and_throttled() {
    bounded(async {
        let proxy = FaultProxy::start(echo_server().await, 1).await.unwrap();
        let mut ws = connect(proxy.ws_url()).await.unwrap();
        assert_eq!(echo_once(&mut ws, "plain").await, "plain");
        proxy.delay(Some(Duration::from_millis(20)));
        assert_eq!(echo_once(&mut ws, "delayed").await, "delayed");
        proxy.delay(None);
        proxy.throttle(Some(2_000));
        let big = "x".repeat(1_000);
        assert_eq!(echo_once(&mut ws, &big).await, big);
        assert_eq!(proxy.live_connections(), 1);
        drop(ws);
    })
    .await;
}

#[tokio::test]
async fn cut_all_resets_or_closes_every_connection() {
    bounded(async {
        let proxy = FaultProxy::start(echo_server().await, 2).await.unwrap();
        for how in [Cut::Reset, Cut::Fin] {
            let mut ws = connect(proxy.ws_url()).await.unwrap();
            assert_eq!(echo_once(&mut ws, "hi").await, "hi");
            proxy.cut_all(how);
            let end = ws.next().await;
            match how {
                // A reset is an error; a FIN ends the stream without a close frame.
                Cut::Reset => assert!(matches!(end, Some(Err(_)) | None), "{end:?}"),
                Cut::Fin => assert!(
                    !matches!(end, Some(Ok(Message::Text(_)))),
                    "nothing more arrives after a cut: {end:?}"
                ),
            }
        }
        // Both relays ended: no connection is left behind.
        for _ in 0..100 {
            if proxy.live_connections() == 0 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.live_connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn blackhole_is_a_half_open_connection_that_keepalive_detects() {
    bounded(async {
        let proxy = FaultProxy::start(echo_server().await, 3).await.unwrap();
        let url = proxy.ws_url();
        let config = ReconnectConfig::builder()
            .min_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50))
            .ping_interval(Duration::from_millis(100))
            .pong_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let mut stream =
            ReconnectingStream::with_codec(move || connect(url.clone()), config, RawCodec);
        let mut errors = stream.on_error();
        let mut opens = stream.on_open();
        stream.send(Message::Text("before".into())).await.unwrap();
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::Text("before".into())
        );
        proxy.blackhole(true);
        // No pong comes back: the connection is declared dead. (Keepalive runs while the stream
        // is polled, so keep polling it while waiting for the event.)
        let e = tokio::select! {
            e = errors.recv() => e.unwrap(),
            item = stream.next() => panic!("nothing can arrive through a blackhole: {item:?}"),
        };
        assert!(matches!(e, Error::KeepaliveTimeout(_)), "{e}");
        proxy.blackhole(false);
        stream.send(Message::Text("after".into())).await.unwrap();
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::Text("after".into())
        );
        assert_eq!(opens.try_recv().unwrap().connection, 1);
        assert_eq!(opens.try_recv().unwrap().connection, 2);
    })
    .await;
}

#[tokio::test]
async fn a_handshake_cut_fails_that_attempt_only() {
    bounded(async {
        let proxy = FaultProxy::start(echo_server().await, 4).await.unwrap();
        proxy.cut_handshakes(1);
        let first = connect(proxy.ws_url()).await;
        assert!(
            matches!(first, Err(Error::Io(_)) | Err(Error::Protocol(_))),
            "{first:?}"
        );
        let mut ws = connect(proxy.ws_url()).await.unwrap();
        assert_eq!(echo_once(&mut ws, "ok").await, "ok");
    })
    .await;
}

#[tokio::test]
async fn refusing_resets_new_connections_until_turned_off() {
    bounded(async {
        let proxy = FaultProxy::start(echo_server().await, 5).await.unwrap();
        proxy.refuse(true);
        assert!(connect(proxy.ws_url()).await.is_err());
        proxy.refuse(false);
        let mut ws = connect(proxy.ws_url()).await.unwrap();
        assert_eq!(echo_once(&mut ws, "back").await, "back");
        assert_eq!(proxy.accepted(), 2);
    })
    .await;
}
