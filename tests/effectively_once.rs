//! Effectively-once delivery end to end: a producer publishes 20,000 messages through drops that
//! come after the server stored a message and before it confirmed it (so some are stored twice),
//! consumers' connections drop too (so the server redelivers what was not acknowledged), and the
//! application still sees every payload exactly once. Real sockets on 127.0.0.1, bounded counts
//! and time.

use std::collections::HashMap;
use std::time::Duration;
use stream_websocket::Listen;

use futures::StreamExt;
use stream_websocket::gdn::{
    Consumer, ConsumerConfig, ConsumerOptions, Endpoint, Producer, ProducerConfig, ProducerOptions,
    SubscriptionType, Topic, ENTRY_OVERHEAD,
};
use stream_websocket::{Publish, ReconnectConfig};
use stream_websocket_testkit::LocalServer;
use tokio::sync::mpsc;

const N: usize = 20_000;
/// Window bounds small enough that the test shows them holding (20,000 keys of about 20 bytes
/// would take about 2.3 MiB).
const KEYS: usize = 30_000;
const KEY_BYTES: usize = 4 << 20;
const IDS: usize = 30_000;
const ID_BYTES: usize = 4 << 20;

fn reconnect() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(2))
        .max_delay(Duration::from_millis(20))
        .connect_timeout(Duration::from_secs(2))
        .seed(5)
        .build()
        .unwrap()
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig::new(reconnect())
        .dedup_window(KEYS, KEY_BYTES)
        .remembered_ids(IDS, ID_BYTES)
}

/// Runs `consumers` consumers of one subscription (windows shared between them) and a producer
/// through drops, and checks that the application saw every payload once, that the server did
/// store duplicates, and that the windows stayed within their bounds.
async fn run(kind: SubscriptionType, consumers: usize, topic_name: &str) {
    let server = LocalServer::start().await.unwrap();
    let topic = Topic::gdn("once", "_system", topic_name, false).unwrap();
    let config = consumer_config().share_windows();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let endpoint = Endpoint::consumer(
            &server.ws_url(),
            &topic,
            ConsumerOptions::new("billing").subscription_type(kind),
        )
        .unwrap();
        let mut consumer = Consumer::with_config(move || endpoint.connect(), config.clone());
        let mut opened = consumer.on_open();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(item) = consumer.next().await {
                let m = item.expect("the consumer does not stop");
                let payload = String::from_utf8(m.payload.to_vec()).unwrap();
                // Acknowledged as soon as it is processed, as an application would.
                consumer.ack(&m).await.unwrap();
                if tx.send((payload, consumer.stats().window_bytes)).is_err() {
                    break;
                }
            }
            consumer.stats()
        }));
        // Subscribed before anything is published.
        let _ = opened.recv().await;
        let _ = &mut opened;
    }
    drop(tx);

    // For the first second, every connection drops after 301 frames: a producer's right after
    // the server stored its 301st message and before confirming it, so each of those drops
    // stores a message twice. Throughout, every connection is dropped every 150 ms: with
    // hundreds of messages in flight, some stored and not yet confirmed (sent again), and some
    // delivered and not yet acknowledged (delivered again). (Consumers only get a second of the
    // first fault: the server pushes a consumer's whole backlog at once, so a consumer dropped
    // every 301 frames for ever could fall behind for ever.)
    server.drop_after_frames(Some(301));
    let chaos = {
        let server = server.clone();
        tokio::spawn(async move {
            for tick in 0.. {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if tick == 6 {
                    server.drop_after_frames(None);
                }
                server.drop_all();
            }
        })
    };
    let endpoint =
        Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default()).unwrap();
    let producer = Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(reconnect()).max_pending(500),
    );
    let publisher = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::with_capacity(N);
            for i in 0..N {
                receipts.push(
                    producer
                        .enqueue(Publish::new(format!("p-{i}")))
                        .await
                        .unwrap(),
                );
            }
            for r in receipts {
                r.await.unwrap();
            }
        })
    };

    let mut deliveries: HashMap<String, usize> = HashMap::new();
    while deliveries.len() < N {
        let (payload, window_bytes) = rx.recv().await.expect("consumers run");
        *deliveries.entry(payload).or_default() += 1;
        let bound = (2 * ID_BYTES + KEY_BYTES) as u64;
        assert!(
            window_bytes <= bound,
            "windows hold {window_bytes} bytes, bound {bound}"
        );
    }
    publisher.await.unwrap();
    // Anything still on its way (a late duplicate) arrives within this quiet period.
    chaos.abort();
    let _ = chaos.await;
    while let Ok(Some((payload, _))) =
        tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
    {
        *deliveries.entry(payload).or_default() += 1;
    }
    let stored = server.stored(&topic.full_name()).len();
    let producer_stats = producer.stats();
    producer.close().await.unwrap();
    for t in &tasks {
        t.abort();
    }

    assert!(
        stored > N,
        "the server stored no duplicate ({stored} for {N}): the test proves nothing"
    );
    let repeated: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} payloads reached the application more than once, e.g. {:?}",
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(deliveries.len(), N, "every payload delivered");
    for i in 0..N {
        assert!(deliveries.contains_key(&format!("p-{i}")), "p-{i} missing");
    }
    eprintln!(
        "{kind:?} x{consumers}: {stored} stored for {N} ({} stored twice), producer {producer_stats:?}",
        stored - N
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_hands_each_message_over_once() {
    tokio::time::timeout(
        Duration::from_secs(120),
        run(SubscriptionType::Exclusive, 1, "exclusive"),
    )
    .await
    .expect("took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pair_hands_each_message_over_once() {
    tokio::time::timeout(
        Duration::from_secs(120),
        run(SubscriptionType::Shared, 2, "shared"),
    )
    .await
    .expect("took too long");
}

/// The windows stay within their bounds however many keys go through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_stay_within_their_bounds() {
    let server = LocalServer::start().await.unwrap();
    let topic = Topic::gdn("once", "_system", "bounded", false).unwrap();
    let endpoint = Endpoint::consumer(
        &server.ws_url(),
        &topic,
        ConsumerOptions::new("small").subscription_type(SubscriptionType::Exclusive),
    )
    .unwrap();
    // Room for about 100 entries per window.
    let bytes = 100 * (ENTRY_OVERHEAD + 40);
    let mut consumer = Consumer::with_config(
        move || endpoint.connect(),
        ConsumerConfig::new(reconnect())
            .dedup_window(1000, bytes)
            .remembered_ids(1000, bytes),
    );
    let mut opened = consumer.on_open();
    let reader = tokio::spawn(async move {
        for _ in 0..2000 {
            let m = consumer.next().await.unwrap().unwrap();
            consumer.ack(&m).await.unwrap();
        }
        consumer.stats()
    });
    opened.recv().await.unwrap();
    let endpoint =
        Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default()).unwrap();
    let producer = Producer::new(move || endpoint.connect());
    let sends = (0..2000).map(|i| producer.send(Publish::new(format!("b-{i}"))));
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let stats = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.received, 2000);
    assert!(
        stats.window_bytes as usize <= 3 * bytes,
        "windows hold {} bytes, bound {}",
        stats.window_bytes,
        3 * bytes
    );
    assert!(stats.window_entries <= 3 * 1000, "{stats:?}");
    producer.close().await.unwrap();
    server.shutdown().await;
}
