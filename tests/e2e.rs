//! End to end: producers and consumers over the reconnecting layer against the embedded local
//! server, with faults. Real sockets on 127.0.0.1, real time, bounded counts.

mod support;

use support::chain;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;
use stream_websocket::Listen;

use futures::StreamExt;
use stream_websocket::gdn::{
    Auth, Consumer, ConsumerOptions, Endpoint, Producer, ProducerConfig, ProducerError,
    ProducerOptions, SubscriptionType, Topic,
};
use stream_websocket::{Error, Publish, ReconnectConfig, WsStream};
use stream_websocket_testkit::{LocalServer, ServerConfig};

const KEY: &str = "e2e-key";

async fn bounded<T>(secs: u64, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .expect("test took too long")
}

fn fast() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(200))
        .ping_interval(Duration::from_millis(200))
        .pong_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_secs(2))
        .seed(11)
        .build()
        .unwrap()
}

fn topic() -> Topic {
    Topic::gdn("tenant", "_system", "orders", false).unwrap()
}

fn consumer(
    server: &LocalServer,
    sub: &str,
    kind: SubscriptionType,
) -> Consumer<impl stream_websocket::Connect<Transport = WsStream, Future: Send> + Send> {
    let endpoint = Endpoint::consumer(
        &server.ws_url(),
        &topic(),
        ConsumerOptions::new(sub).subscription_type(kind),
    )
    .unwrap()
    .with_auth(Auth::api_key(KEY));
    Consumer::with_config(move || endpoint.connect(), fast())
}

fn producer(server: &LocalServer) -> Producer {
    let endpoint = Endpoint::producer(&server.ws_url(), &topic(), ProducerOptions::default())
        .unwrap()
        .with_auth(Auth::api_key(KEY));
    Producer::with_config(move || endpoint.connect(), ProducerConfig::new(fast()))
}

async fn start() -> LocalServer {
    LocalServer::start_with(ServerConfig::default().api_key(KEY))
        .await
        .unwrap()
}

fn index(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload).unwrap()[2..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_through_drops_refusals_and_a_listening_pause() {
    const N: u64 = 3000;
    bounded(120, async {
        let server = start().await;
        let mut consumer = consumer(&server, "audit", SubscriptionType::Exclusive);
        let mut opened = consumer.on_open();
        let reader = tokio::spawn(async move {
            let mut order = Vec::new();
            let mut distinct = HashSet::new();
            while (distinct.len() as u64) < N {
                let m = consumer.next().await.unwrap().unwrap();
                let i = index(&m.payload);
                if distinct.insert(i) {
                    order.push(i);
                }
                consumer.ack(&m).await.unwrap();
            }
            consumer.close().await.ok();
            order
        });
        opened.recv().await.unwrap();

        let producer = producer(&server);
        // Connected before the faults start, so each fault below costs a reconnect.
        producer.ready().await.unwrap();
        let mut receipts = Vec::new();
        for i in 0..N {
            receipts.push(
                producer
                    .enqueue(Publish::new(format!("m-{i}")))
                    .await
                    .unwrap(),
            );
            match i {
                400 => server.drop_all(),
                800 => server.drop_after_frames(Some(97)),
                1400 => server.drop_after_frames(None),
                1500 => {
                    server.refuse_next(3, 503);
                    server.drop_all();
                }
                2000 => {
                    server.pause_listening(Duration::from_millis(500));
                    server.drop_all();
                }
                2500 => server.drop_all(),
                _ => {}
            }
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        for (i, r) in receipts.into_iter().enumerate() {
            r.await
                .unwrap_or_else(|e| panic!("message {i} unconfirmed: {e}"));
        }
        let stats = producer.stats();
        assert_eq!(stats.confirmed, N);
        assert!(stats.reconnects >= 5, "{stats:?}");

        // Every message was received; first deliveries come in publishing order.
        let order = reader.await.unwrap();
        assert_eq!(order.len() as u64, N);
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "order per producer broken"
        );
        producer.close().await.unwrap();
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_key_ends_at_once_with_a_clear_error() {
    bounded(20, async {
        let server = start().await;
        let endpoint = Endpoint::producer(&server.ws_url(), &topic(), ProducerOptions::default())
            .unwrap()
            .with_auth(Auth::api_key("wrong"));
        let producer =
            Producer::with_config(move || endpoint.connect(), ProducerConfig::new(fast()));
        match producer.send(Publish::new("x")).await {
            Err(ProducerError::Stopped(e)) => {
                assert_eq!(e.http_status(), Some(401));
                // The whole chain, as a reporter prints it: the status, but never the key.
                let text = chain(&ProducerError::Stopped(e));
                assert!(
                    text.starts_with(
                        "producer stopped before confirmation: handshake rejected with HTTP 401"
                    ),
                    "{text}"
                );
                assert!(!text.contains("wrong"), "{text}");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
        assert_eq!(server.stats().handshakes_refused, 1, "a 401 is not retried");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_second_exclusive_consumer_takes_over_when_the_first_closes() {
    bounded(30, async {
        let server = start().await;
        let mut first = consumer(&server, "excl", SubscriptionType::Exclusive);
        let mut first_open = first.on_open();
        let first_task = tokio::spawn(async move {
            let mut got = 0;
            while got < 10 {
                let m = first.next().await.unwrap().unwrap();
                first.ack(&m).await.unwrap();
                got += 1;
            }
            first.close().await.unwrap();
        });
        first_open.recv().await.unwrap();

        // The second one is refused with 409 and keeps retrying with backoff.
        let mut second = consumer(&server, "excl", SubscriptionType::Exclusive);
        let mut second_errors = second.on_error();
        let second_task = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 10 {
                let m = second.next().await.unwrap().unwrap();
                second.ack(&m).await.unwrap();
                got.push(index(&m.payload));
            }
            got
        });
        let e = second_errors.recv().await.unwrap();
        assert!(matches!(e, Error::Http { status: 409, .. }), "{e}");

        let producer = producer(&server);
        for i in 0..10 {
            producer.send(Publish::new(format!("m-{i}"))).await.unwrap();
        }
        first_task.await.unwrap();
        for i in 10..20 {
            producer.send(Publish::new(format!("m-{i}"))).await.unwrap();
        }
        assert_eq!(second_task.await.unwrap(), (10..20).collect::<Vec<_>>());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_shared_subscription_splits_messages_between_consumers() {
    bounded(30, async {
        let server = start().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for who in 0..2 {
            let mut c = consumer(&server, "workers", SubscriptionType::Shared);
            let mut opened = c.on_open();
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(m)) = c.next().await {
                    c.ack(&m).await.unwrap();
                    if tx.send((who, index(&m.payload))).is_err() {
                        break;
                    }
                }
            });
            opened.recv().await.unwrap();
        }
        let producer = producer(&server);
        for i in 0..100 {
            producer.send(Publish::new(format!("m-{i}"))).await.unwrap();
        }
        let mut per = [0; 2];
        let mut all = HashSet::new();
        while all.len() < 100 {
            let (who, i) = rx.recv().await.unwrap();
            per[who] += 1;
            all.insert(i);
        }
        assert!(
            per[0] > 0 && per[1] > 0,
            "both consumers get messages: {per:?}"
        );
        assert_eq!(per[0] + per[1], 100, "each message once");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_negatively_acknowledged_message_is_redelivered() {
    bounded(20, async {
        let server = start().await;
        let mut c = consumer(&server, "retry", SubscriptionType::Shared);
        let mut opened = c.on_open();
        let producer = producer(&server);
        let reader = tokio::spawn(async move {
            let first = c.next().await.unwrap().unwrap();
            assert_eq!(first.redelivery_count, 0);
            c.nack(&first).await.unwrap();
            let again = c.next().await.unwrap().unwrap();
            c.ack(&again).await.unwrap();
            c.flush().await.unwrap();
            (first, again, c.stats())
        });
        opened.recv().await.unwrap();
        producer.send(Publish::new("m-0")).await.unwrap();
        let (first, again, stats) = reader.await.unwrap();
        assert_eq!(again.message_id, first.message_id);
        assert_eq!(again.redelivery_count, 1);
        assert_eq!((stats.nacked, stats.redelivered, stats.acked), (1, 1, 1));
        server.shutdown().await;
    })
    .await;
}
