//! The embedded local server against raw WebSocket clients: producer, consumer and reader
//! frames, subscription types, authentication and every fault switch. Real sockets on
//! 127.0.0.1, real time, bounded counts; every test ends within 20 s.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stream_websocket_testkit::{LocalServer, ServerConfig};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOPIC: &str = "persistent://tenant/c8local._system/c8locals.orders";
const PATH: &str = "persistent/tenant/c8local._system/c8locals.orders";
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

async fn bounded<T>(body: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(20), body)
        .await
        .expect("test took longer than 20 s")
}

fn producer_url(s: &LocalServer) -> String {
    format!("{}/_ws/ws/v2/producer/{PATH}", s.ws_url())
}

fn consumer_url(s: &LocalServer, sub: &str, kind: &str) -> String {
    format!(
        "{}/_ws/ws/v2/consumer/{PATH}/{sub}?subscriptionType={kind}",
        s.ws_url()
    )
}

fn reader_url(s: &LocalServer, query: &str) -> String {
    format!("{}/ws/v2/reader/{PATH}?{query}", s.ws_url())
}

async fn connect(url: &str) -> Ws {
    connect_async(url).await.expect("connect").0
}

/// Connects, or returns the HTTP status and body of a refused handshake.
async fn try_connect<R: IntoClientRequest + Unpin>(req: R) -> Result<Ws, (u16, String)> {
    match connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        )),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// Connects a consumer, retrying while the server still holds the previous connection (409).
async fn connect_consumer(url: &str) -> Ws {
    for _ in 0..50 {
        match try_connect(url).await {
            Ok(ws) => return ws,
            Err((409, _)) => sleep(Duration::from_millis(20)).await,
            Err(other) => panic!("consumer refused: {other:?}"),
        }
    }
    panic!("consumer kept getting 409")
}

/// The next text frame as JSON, skipping pings and pongs.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// True if no frame arrives for `d`.
async fn quiet(ws: &mut Ws, d: Duration) -> bool {
    timeout(d, ws.next()).await.is_err()
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn publish(ws: &mut Ws, payload: &str, context: &str) {
    send_json(
        ws,
        json!({"payload": STANDARD.encode(payload), "context": context}),
    )
    .await;
}

/// Publishes `m-<i>` for i in `range` on a fresh producer and checks every ack.
async fn produce(server: &LocalServer, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ws = connect(&producer_url(server)).await;
    let mut ids = Vec::new();
    for i in range {
        publish(&mut ws, &format!("m-{i}"), &format!("c-{i}")).await;
        let ack = next_json(&mut ws).await;
        assert_eq!(ack["result"], "ok", "{ack}");
        assert_eq!(ack["context"], format!("c-{i}"));
        ids.push(ack["messageId"].as_str().unwrap().to_string());
    }
    close(ws).await;
    ids
}

/// Closes politely and waits for the server's close reply.
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    while let Ok(Some(Ok(_))) = timeout(Duration::from_secs(2), ws.next()).await {}
}

fn payload(m: &Value) -> String {
    String::from_utf8(STANDARD.decode(m["payload"].as_str().unwrap()).unwrap()).unwrap()
}

async fn receive(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next_json(ws).await);
    }
    got
}

async fn ack(ws: &mut Ws, m: &Value) {
    send_json(ws, json!({"messageId": m["messageId"]})).await;
}

/// Waits until the connection ends; true if it ended without a close frame.
async fn ended_abruptly(ws: &mut Ws) -> bool {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => return false,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return true,
            Err(_) => panic!("connection did not end"),
        }
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 5 s");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_producer_gets_one_ok_ack_per_message_with_its_context() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let mut ws = connect(&producer_url(&server)).await;
        // All 100 go out before any ack is read.
        for i in 0..100 {
            ws.feed(Message::text(
                json!({"payload": STANDARD.encode(format!("m-{i}")), "context": format!("c-{i}")})
                    .to_string(),
            ))
            .await
            .unwrap();
        }
        ws.flush().await.unwrap();
        let mut contexts = HashSet::new();
        let mut ids = HashSet::new();
        for _ in 0..100 {
            let ack = next_json(&mut ws).await;
            assert_eq!(ack["result"], "ok", "{ack}");
            assert!(contexts.insert(ack["context"].as_str().unwrap().to_string()));
            assert!(ids.insert(ack["messageId"].as_str().unwrap().to_string()));
        }
        assert_eq!(
            contexts,
            (0..100).map(|i| format!("c-{i}")).collect::<HashSet<_>>()
        );
        let stored = server.stored(TOPIC);
        assert_eq!(stored.len(), 100);
        assert!(stored
            .iter()
            .enumerate()
            .all(|(i, p)| p == format!("m-{i}").as_bytes()));
        assert_eq!(server.stats().messages_stored, 100);
        close(ws).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_consumer_subscribed_first_receives_everything_in_order() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        // Published before the subscription exists: never delivered (new subscriptions start
        // at the latest message).
        produce(&server, 0..3).await;
        let mut consumer = connect(&consumer_url(&server, "audit", "Exclusive")).await;
        let ids = produce(&server, 3..103).await;

        // One with every optional field.
        let mut p = connect(&producer_url(&server)).await;
        send_json(
            &mut p,
            json!({"payload": STANDARD.encode("full"), "properties": {"a": "b"}, "key": "k1",
                   "eventTime": "2024-05-01T12:00:00.000Z", "context": "x"}),
        )
        .await;
        assert_eq!(next_json(&mut p).await["result"], "ok");

        let got = receive(&mut consumer, 101).await;
        for (i, m) in got[..100].iter().enumerate() {
            assert_eq!(payload(m), format!("m-{}", i + 3));
            assert_eq!(m["messageId"], ids[i].as_str());
            assert_eq!(m["redeliveryCount"], 0);
            assert_eq!(m["properties"], json!({}));
            assert!(m.get("key").is_none() && m.get("eventTime").is_none());
            let t = m["publishTime"].as_str().unwrap();
            assert!(
                t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T",
                "{t}"
            );
        }
        let full = &got[100];
        assert_eq!(payload(full), "full");
        assert_eq!(full["properties"], json!({"a": "b"}));
        assert_eq!(full["key"], "k1");
        assert_eq!(full["eventTime"], "2024-05-01T12:00:00.000Z");
        assert!(quiet(&mut consumer, QUIET).await);

        send_json(&mut consumer, json!({"type": "isEndOfTopic"})).await;
        assert_eq!(next_json(&mut consumer).await, json!({"endOfTopic": false}));
        close(p).await;
        close(consumer).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn acked_messages_stay_acked_and_unacked_ones_come_back_in_order() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = consumer_url(&server, "s", "Exclusive");
        let mut c = connect(&url).await;
        produce(&server, 0..10).await;
        for m in receive(&mut c, 10).await {
            ack(&mut c, &m).await;
        }
        close(c).await;
        let mut c = connect_consumer(&url).await;
        assert!(quiet(&mut c, QUIET).await, "acked messages came back");

        produce(&server, 10..20).await;
        let first = receive(&mut c, 10).await;
        // Acknowledge two in the middle only.
        ack(&mut c, &first[2]).await;
        ack(&mut c, &first[5]).await;
        close(c).await;
        let mut c = connect_consumer(&url).await;
        let again = receive(&mut c, 8).await;
        let expected: Vec<&Value> = first
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2 && *i != 5)
            .map(|(_, m)| m)
            .collect();
        for (m, e) in again.iter().zip(expected) {
            assert_eq!(m["messageId"], e["messageId"]);
            assert_eq!(payload(m), payload(e));
            // Exclusive: the single-active dispatcher does not count redeliveries.
            assert_eq!(m["redeliveryCount"], 0);
        }
        assert!(quiet(&mut c, QUIET).await);
        // Newer messages come after the redelivered ones.
        produce(&server, 20..21).await;
        assert_eq!(payload(&next_json(&mut c).await), "m-20");
        assert_eq!(server.stats().acks_received, 12);
        close(c).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_second_exclusive_consumer_is_refused_with_409() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = consumer_url(&server, "only", "Exclusive");
        let first = connect(&url).await;
        let Err((status, body)) = try_connect(&url).await else {
            panic!("second consumer accepted")
        };
        assert_eq!(status, 409);
        assert_eq!(
            body,
            "Failed to subscribe: Exclusive consumer is already connected"
        );
        // Another type on the busy subscription is refused too; another subscription is fine.
        assert_eq!(
            try_connect(&consumer_url(&server, "only", "Shared"))
                .await
                .err()
                .unwrap()
                .0,
            409
        );
        let other = connect(&consumer_url(&server, "other", "Exclusive")).await;
        assert_eq!(server.stats().handshakes_refused, 2);
        close(first).await;
        let second = connect_consumer(&url).await;
        close(second).await;
        close(other).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_failover_standby_takes_over_the_unacked_messages() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = consumer_url(&server, "fo", "Failover");
        let mut active = connect(&url).await;
        let mut standby = connect(&url).await;
        produce(&server, 0..10).await;
        let got = receive(&mut active, 10).await;
        assert!(quiet(&mut standby, QUIET).await, "the standby received");
        for m in &got[..3] {
            ack(&mut active, m).await;
        }
        close(active).await;
        let taken = receive(&mut standby, 7).await;
        for (m, e) in taken.iter().zip(&got[3..]) {
            assert_eq!(m["messageId"], e["messageId"]);
            assert_eq!(m["redeliveryCount"], 0);
        }
        produce(&server, 10..11).await;
        assert_eq!(payload(&next_json(&mut standby).await), "m-10");
        close(standby).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shared_consumers_split_the_messages_and_share_a_leavers_backlog() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = consumer_url(&server, "workers", "Shared");
        let mut a = connect(&url).await;
        let mut b = connect(&url).await;
        produce(&server, 0..100).await;
        let mut seen = HashMap::new();
        let mut per = [0usize; 2];
        for (who, ws) in [&mut a, &mut b].into_iter().enumerate() {
            while let Ok(Some(Ok(Message::Text(t)))) = timeout(QUIET, ws.next()).await {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                assert!(seen.insert(payload(&m), who).is_none(), "delivered twice");
                per[who] += 1;
            }
        }
        assert!(per[0] > 0 && per[1] > 0, "{per:?}");
        assert_eq!(per[0] + per[1], 100);
        assert_eq!(seen.len(), 100);

        // `a` leaves without acknowledging: `b` gets its messages, counted as redelivered.
        let mut b_acked = 0;
        close(a).await;
        for m in receive(&mut b, per[0]).await {
            assert_eq!(seen[&payload(&m)], 0);
            assert_eq!(m["redeliveryCount"], 1);
            ack(&mut b, &m).await;
            b_acked += 1;
        }
        assert_eq!(b_acked, per[0]);
        close(b).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn key_shared_keeps_each_key_on_one_consumer() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = consumer_url(&server, "keys", "Key_Shared");
        let mut a = connect(&url).await;
        let mut b = connect(&url).await;
        let mut p = connect(&producer_url(&server)).await;
        for i in 0..60 {
            send_json(
                &mut p,
                json!({"payload": STANDARD.encode(format!("m-{i}")), "key": format!("k{}", i % 6)}),
            )
            .await;
            assert_eq!(next_json(&mut p).await["result"], "ok");
        }
        let mut owner: HashMap<String, usize> = HashMap::new();
        let mut total = 0;
        for (who, ws) in [&mut a, &mut b].into_iter().enumerate() {
            let mut last = HashMap::new();
            while let Ok(Some(Ok(Message::Text(t)))) = timeout(QUIET, ws.next()).await {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                let key = m["key"].as_str().unwrap().to_string();
                assert_eq!(*owner.entry(key.clone()).or_insert(who), who);
                // In order per key.
                let i: usize = payload(&m)[2..].parse().unwrap();
                assert!(last.insert(key, i).is_none_or(|prev| prev < i));
                total += 1;
            }
        }
        assert_eq!(total, 60);
        for ws in [a, b, p] {
            close(ws).await;
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn flow_control_and_negative_acks() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let url = format!(
            "{}&receiverQueueSize=3",
            consumer_url(&server, "slow", "Exclusive")
        );
        let mut c = connect(&url).await;
        produce(&server, 0..5).await;
        let got = receive(&mut c, 3).await;
        assert!(quiet(&mut c, QUIET).await, "more than 3 in flight");
        ack(&mut c, &got[0]).await;
        assert_eq!(payload(&next_json(&mut c).await), "m-3");

        // A nack frees the slot at once (m-4 comes) and brings the message back after the
        // delay (100 ms), counted, once there is room again.
        let started = Instant::now();
        send_json(
            &mut c,
            json!({"type": "negativeAcknowledge", "messageId": got[1]["messageId"]}),
        )
        .await;
        assert_eq!(payload(&next_json(&mut c).await), "m-4");
        ack(&mut c, &got[2]).await;
        let again = next_json(&mut c).await;
        assert_eq!(payload(&again), "m-1");
        assert_eq!(again["messageId"], got[1]["messageId"]);
        assert_eq!(again["redeliveryCount"], 1);
        assert!(started.elapsed() >= Duration::from_millis(90));
        // Permits are accepted and ignored.
        send_json(&mut c, json!({"type": "permit", "permitMessages": 5})).await;
        assert!(quiet(&mut c, QUIET).await);
        close(c).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn readers_stream_from_their_start_with_flow_control() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let ids = produce(&server, 0..5).await;
        let mut all = connect(&reader_url(
            &server,
            "messageId=earliest&receiverQueueSize=2",
        ))
        .await;
        let first = receive(&mut all, 2).await;
        assert_eq!(payload(&first[0]), "m-0");
        assert!(quiet(&mut all, QUIET).await, "flow control ignored");
        for m in &first {
            ack(&mut all, m).await;
        }
        let next = receive(&mut all, 2).await;
        assert_eq!(payload(&next[1]), "m-3");

        let after = reader_url(&server, &format!("messageId={}", urlencode(&ids[2])));
        let mut from = connect(&after).await;
        assert_eq!(payload(&next_json(&mut from).await), "m-3");

        let mut latest = connect(&reader_url(&server, "")).await;
        assert!(quiet(&mut latest, QUIET).await);
        produce(&server, 5..6).await;
        assert_eq!(payload(&next_json(&mut latest).await), "m-5");

        assert_eq!(
            try_connect(reader_url(&server, "messageId=bm9wZQ%3D%3D"))
                .await
                .err()
                .unwrap()
                .0,
            400
        );
        for ws in [all, from, latest] {
            close(ws).await;
        }
        server.shutdown().await;
    })
    .await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_paths_and_parameters_are_refused_with_a_reason() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let base = server.ws_url();
        for (path, status) in [
            ("/nope", 404),
            ("/_ws/ws/v2/subscriber/persistent/a/b/c", 404),
            ("/_ws/ws/v2/consumer/persistent/a/b/c", 400),
            (
                "/_ws/ws/v2/consumer/persistent/a/b/c/s?subscriptionType=shared",
                400,
            ),
            (
                "/_ws/ws/v2/consumer/persistent/a/b/c/s?ackTimeoutMillis=10",
                400,
            ),
            (
                "/_ws/ws/v2/consumer/persistent/a/b/c/s?receiverQueueSize=x",
                400,
            ),
        ] {
            let (got, body) = try_connect(format!("{base}{path}"))
                .await
                .err()
                .unwrap_or_else(|| panic!("{path} accepted"));
            assert_eq!(got, status, "{path}");
            assert!(!body.is_empty(), "{path}");
        }
        // Unknown parameters are ignored; percent-encoded names are decoded.
        let ws = connect(&format!(
            "{base}/ws/v2/consumer/persistent/a/b/c%2Ed/my%20sub?whatever=1&ackTimeoutMillis=0"
        ))
        .await;
        close(ws).await;
        let mut p = connect(&format!("{base}/ws/v2/producer/persistent/a/b/c%2Ed")).await;
        publish(&mut p, "x", "1").await;
        assert_eq!(next_json(&mut p).await["result"], "ok");
        assert_eq!(server.stored("persistent://a/b/c.d").len(), 1);
        close(p).await;
        assert_eq!(server.stats().handshakes_refused, 6);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn api_key_header_and_one_time_passwords() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().api_key("s3cret"))
            .await
            .unwrap();
        assert!(!format!("{server:?}").contains("s3cret"));
        let url = producer_url(&server);
        let with_header = |value: &str| {
            let mut req = url.as_str().into_client_request().unwrap();
            req.headers_mut()
                .insert("Authorization", HeaderValue::from_str(value).unwrap());
            req
        };
        let (status, body) = try_connect(url.as_str()).await.err().unwrap();
        assert_eq!((status, body.as_str()), (401, "Failed to authenticate"));
        assert_eq!(
            try_connect(with_header("apikey wrong"))
                .await
                .err()
                .unwrap()
                .0,
            401
        );
        let ws = try_connect(with_header("apikey s3cret")).await.unwrap();
        close(ws).await;
        let ws = try_connect(with_header("Bearer s3cret")).await.unwrap();
        close(ws).await;

        let otp = server.issue_otp();
        let with_otp = format!("{url}?otp={otp}");
        let ws = try_connect(with_otp.as_str()).await.unwrap();
        close(ws).await;
        assert_eq!(try_connect(with_otp.as_str()).await.err().unwrap().0, 401);
        assert_eq!(server.stats().handshakes_refused, 3);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn refuse_next_refuses_that_many_upgrades() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        server.refuse_next(2, 503);
        let url = producer_url(&server);
        for _ in 0..2 {
            assert_eq!(try_connect(url.as_str()).await.err().unwrap().0, 503);
        }
        let ws = try_connect(url.as_str()).await.unwrap();
        let stats = server.stats();
        assert_eq!(
            (stats.handshakes_refused, stats.connections_accepted),
            (2, 1)
        );
        close(ws).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn drop_after_frames_drops_a_producer_between_storing_and_acking() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        server.drop_after_frames(Some(5));
        let mut ws = connect(&producer_url(&server)).await;
        let mut acks = 0;
        for i in 0..4 {
            publish(&mut ws, &format!("m-{i}"), &format!("c-{i}")).await;
            assert_eq!(next_json(&mut ws).await["context"], format!("c-{i}"));
            acks += 1;
        }
        publish(&mut ws, "m-4", "c-4").await;
        assert!(ended_abruptly(&mut ws).await, "closed politely");
        assert_eq!(acks, 4);
        assert_eq!(server.stored(TOPIC).len(), 5, "the 5th was stored");
        wait_until(|| server.stats().connections_open == 0).await;

        // A consumer is dropped after 5 frames too: 3 deliveries + 2 acks.
        let mut c = connect(&consumer_url(&server, "d", "Exclusive")).await;
        server.drop_after_frames(None);
        produce(&server, 5..8).await;
        server.drop_after_frames(Some(5));
        let got = receive(&mut c, 3).await;
        ack(&mut c, &got[0]).await;
        ack(&mut c, &got[1]).await;
        assert!(ended_abruptly(&mut c).await);

        server.drop_after_frames(None);
        let mut c = connect_consumer(&consumer_url(&server, "d", "Exclusive")).await;
        assert_eq!(payload(&next_json(&mut c).await), "m-7");
        close(c).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn drop_all_drops_every_connection_without_a_close_frame() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let mut p = connect(&producer_url(&server)).await;
        let mut c = connect(&consumer_url(&server, "s", "Exclusive")).await;
        let mut r = connect(&reader_url(&server, "")).await;
        assert_eq!(server.stats().connections_open, 3);
        server.drop_all();
        for ws in [&mut p, &mut c, &mut r] {
            assert!(ended_abruptly(ws).await);
        }
        wait_until(|| server.stats().connections_open == 0).await;
        // New connections are not affected; the subscription is free again at once.
        let mut c = connect(&consumer_url(&server, "s", "Exclusive")).await;
        produce(&server, 0..1).await;
        assert_eq!(payload(&next_json(&mut c).await), "m-0");
        assert_eq!(server.stats().connections_accepted, 5);
        close(c).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_stalled_server_answers_no_pings_until_it_resumes() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let mut ws = connect(&producer_url(&server)).await;
        server.stall(true);
        ws.send(Message::Ping(b"hello".to_vec().into()))
            .await
            .unwrap();
        publish(&mut ws, "during stall", "c").await;
        assert!(
            quiet(&mut ws, Duration::from_millis(500)).await,
            "got a frame while stalled"
        );
        // A new connection does not even get its handshake answered.
        let url = producer_url(&server);
        let pending = tokio::spawn(async move { try_connect(url.as_str()).await.is_ok() });
        sleep(QUIET).await;
        assert!(!pending.is_finished());
        assert_eq!(server.stored(TOPIC).len(), 0);

        server.stall(false);
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"hello"),
            other => panic!("expected the pong, got {other:?}"),
        }
        assert_eq!(next_json(&mut ws).await["result"], "ok");
        assert!(pending.await.unwrap());
        close(ws).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn pause_listening_refuses_connects_then_listens_on_the_same_port() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let addr = server.addr();
        let mut open = connect(&producer_url(&server)).await;
        server.pause_listening(Duration::from_millis(700));
        sleep(Duration::from_millis(100)).await;
        let err = TcpStream::connect(addr)
            .await
            .expect_err("connected while paused");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(connect_async(producer_url(&server)).await.is_err());
        // Open connections keep working.
        publish(&mut open, "x", "1").await;
        assert_eq!(next_json(&mut open).await["result"], "ok");

        sleep(Duration::from_millis(900)).await;
        assert_eq!(server.addr(), addr);
        let ws = connect(&producer_url(&server)).await;
        close(ws).await;
        close(open).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_frames_get_send_errors_and_the_socket_stays_open() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        let mut ws = connect(&producer_url(&server)).await;
        ws.send(Message::text("not json")).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(e["result"], "send-error:3");
        assert!(e.get("context").is_none() && e.get("messageId").is_none());
        assert!(e["errorMsg"].as_str().is_some_and(|m| !m.is_empty()));

        send_json(&mut ws, json!({"context": "c1"})).await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["result"].as_str(), e["context"].as_str()),
            (Some("send-error:7"), Some("c1"))
        );

        send_json(&mut ws, json!({"payload": "***", "context": "c2"})).await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["result"].as_str(), e["context"].as_str()),
            (Some("send-error:7"), Some("c2"))
        );

        send_json(
            &mut ws,
            json!({"payload": "aGk=", "eventTime": "soon", "context": "c3"}),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["result"], "send-error:7");

        ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
        assert_eq!(next_json(&mut ws).await["result"], "send-error:3");

        publish(&mut ws, "fine", "c4").await;
        let ok = next_json(&mut ws).await;
        assert_eq!(
            (ok["result"].as_str(), ok["context"].as_str()),
            (Some("ok"), Some("c4"))
        );
        assert_eq!(server.stored(TOPIC).len(), 1);

        // On a consumer, text that is not a JSON object closes the socket with 1003.
        let mut c = connect(&consumer_url(&server, "s", "Exclusive")).await;
        c.send(Message::text("\"noop\"")).await.unwrap();
        match timeout(Duration::from_secs(5), c.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::Unsupported),
            other => panic!("expected close 1003, got {other:?}"),
        }
        close(ws).await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn hostile_client_input_never_breaks_the_server() {
    bounded(async {
        let server = LocalServer::start().await.unwrap();
        // Not HTTP at all (400, then closed), and a REST call for an unknown path that asks
        // to close (404, then closed).
        for (junk, status) in [
            (&b"\x00\xff garbage\r\n\r\n"[..], "HTTP/1.1 400"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "HTTP/1.1 404",
            ),
        ] {
            let mut raw = TcpStream::connect(server.addr()).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut raw, junk)
                .await
                .unwrap();
            let mut buf = Vec::new();
            let _ = timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf),
            )
            .await
            .expect("the server kept a junk connection open");
            assert!(
                buf.starts_with(status.as_bytes()),
                "{}",
                String::from_utf8_lossy(&buf)
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let odd = [
            "{}".to_string(),
            r#"{"messageId":5}"#.to_string(),
            r#"{"messageId":"%%%"}"#.to_string(),
            r#"{"messageId":"bm9wZQ=="}"#.to_string(),
            r#"{"messageId":"OTk6OTk="}"#.to_string(),
            r#"{"type":7,"messageId":"x"}"#.to_string(),
            r#"{"type":"negativeAcknowledge","messageId":"OTk6OTk="}"#.to_string(),
            r#"{"type":"negativeAcknowledge"}"#.to_string(),
            r#"{"type":"permit"}"#.to_string(),
            r#"{"type":"unsubscribe"}"#.to_string(),
        ];
        let mut c = connect(&consumer_url(&server, "h", "Shared")).await;
        let mut r = connect(&reader_url(&server, "")).await;
        let mut p = connect(&producer_url(&server)).await;
        for frame in &odd {
            for ws in [&mut c, &mut r, &mut p] {
                ws.send(Message::text(frame.as_str())).await.unwrap();
            }
        }
        p.send(Message::text(deep.as_str())).await.unwrap();
        c.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        for _ in 0..odd.len() + 1 {
            assert!(next_json(&mut p).await["result"]
                .as_str()
                .unwrap()
                .starts_with("send-error:"));
        }
        publish(&mut p, "still fine", "c").await;
        assert_eq!(next_json(&mut p).await["result"], "ok");
        assert_eq!(payload(&next_json(&mut c).await), "still fine");
        assert_eq!(payload(&next_json(&mut r).await), "still fine");
        // Deeply nested JSON on a consumer is "not a JSON object we can read": closed with 1003.
        c.send(Message::text(deep.as_str())).await.unwrap();
        loop {
            match timeout(Duration::from_secs(5), c.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    assert_eq!(f.code, CloseCode::Unsupported);
                    break;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("expected close 1003, got {other:?}"),
            }
        }
        for ws in [r, p] {
            close(ws).await;
        }
        let stats = server.stats();
        assert_eq!(stats.messages_stored, 1);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_oversized_frame_closes_the_socket_with_1009() {
    bounded(async {
        let server = LocalServer::start_with(ServerConfig::default().max_message_size(1000))
            .await
            .unwrap();
        let mut ws = connect(&producer_url(&server)).await;
        publish(&mut ws, &"x".repeat(500), "small").await;
        assert_eq!(next_json(&mut ws).await["result"], "ok");
        publish(&mut ws, &"x".repeat(2000), "big").await;
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::Size),
            other => panic!("expected close 1009, got {other:?}"),
        }
        assert_eq!(server.stored(TOPIC).len(), 1);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn connections_open_returns_to_zero_and_shutdown_ends_every_task() {
    bounded(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks_before = metrics.num_alive_tasks();
        let server = LocalServer::start().await.unwrap();
        let p = connect(&producer_url(&server)).await;
        let c = connect(&consumer_url(&server, "s", "Shared")).await;
        let gone = connect(&reader_url(&server, "")).await;
        assert_eq!(server.stats().connections_open, 3);
        close(p).await;
        close(c).await;
        // A client that just disappears (no close frame) is noticed too.
        drop(gone);
        wait_until(|| server.stats().connections_open == 0).await;

        let mut p = connect(&producer_url(&server)).await;
        let mut c = connect(&consumer_url(&server, "s", "Shared")).await;
        let mut r = connect(&reader_url(&server, "")).await;
        // A connection still in its handshake.
        let mut raw = TcpStream::connect(server.addr()).await.unwrap();
        assert_eq!(server.stats().connections_open, 3);
        let addr = server.addr();
        server.shutdown().await;
        for ws in [&mut p, &mut c, &mut r] {
            match timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::Away),
                other => panic!("expected close 1001, got {other:?}"),
            }
        }
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut raw, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "the half-open connection was closed");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
        wait_until(|| metrics.num_alive_tasks() == tasks_before).await;
    })
    .await;
}
