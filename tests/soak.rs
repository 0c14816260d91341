//! Bounded soak: 50,000 messages through the fault-injecting proxy while it injects seeded random
//! faults, for an exclusive consumer and for a shared pair. Real sockets on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;
use stream_websocket::Listen;

use futures::StreamExt;
use stream_websocket::gdn::{
    Consumer, ConsumerOptions, Endpoint, Producer, ProducerConfig, ProducerOptions,
    SubscriptionType, Topic,
};
use stream_websocket::{Publish, ReconnectConfig, WsStream};
use stream_websocket_testkit::{Cut, FaultProxy, LocalServer};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant};

const MESSAGES: u64 = 50_000;
const WINDOW: usize = 1_000;
const MIN_DELAY: Duration = Duration::from_millis(20);

fn config() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(MIN_DELAY)
        .max_delay(Duration::from_millis(300))
        .ping_interval(Duration::from_millis(150))
        .pong_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(1))
        .seed(42)
        .build()
        .unwrap()
}

fn topic(name: &str) -> Topic {
    Topic::gdn("soak", "_system", name, false).unwrap()
}

fn consumer(
    url: &str,
    topic: &Topic,
    kind: SubscriptionType,
) -> Consumer<impl stream_websocket::Connect<Transport = WsStream, Future: Send> + Send> {
    let endpoint = Endpoint::consumer(
        url,
        topic,
        ConsumerOptions::new("soak").subscription_type(kind),
    )
    .unwrap();
    Consumer::with_config(move || endpoint.connect(), config())
}

/// A seeded xorshift for choosing faults.
struct Dice(u64);
impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Injects a random fault every 300-700 ms until told to stop, then heals everything.
async fn chaos(proxy: &FaultProxy, mut stop: watch::Receiver<bool>, seed: u64) -> u32 {
    let mut dice = Dice(seed);
    let mut faults = 0;
    while !*stop.borrow() {
        let pause = Duration::from_millis(300 + dice.roll(400));
        tokio::select! {
            _ = sleep(pause) => {}
            _ = stop.changed() => break,
        }
        faults += 1;
        match dice.roll(6) {
            0 => proxy.cut_all(Cut::Reset),
            1 => proxy.cut_all(Cut::Fin),
            2 => {
                proxy.blackhole(true);
                sleep(Duration::from_millis(500)).await;
                proxy.blackhole(false);
            }
            3 => {
                proxy.cut_handshakes(2);
                proxy.cut_all(Cut::Reset);
            }
            4 => {
                proxy.delay(Some(Duration::from_millis(5)));
                sleep(Duration::from_millis(200)).await;
                proxy.delay(None);
            }
            _ => {
                proxy.refuse(true);
                proxy.cut_all(Cut::Reset);
                sleep(Duration::from_millis(300)).await;
                proxy.refuse(false);
            }
        }
    }
    proxy.blackhole(false);
    proxy.delay(None);
    proxy.refuse(false);
    faults
}

/// Consumers report every delivery (payload index) here until stopped.
fn spawn_consumer(
    mut c: Consumer<
        impl stream_websocket::Connect<Transport = WsStream, Future: Send> + Send + 'static,
    >,
    tx: mpsc::UnboundedSender<u64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = c.next() => match m {
                    Some(Ok(m)) => m,
                    other => panic!("consumer ended: {other:?}"),
                },
                _ = stop.changed() => break,
            };
            let i: u64 = std::str::from_utf8(&m.payload).unwrap()[2..]
                .parse()
                .unwrap();
            let _ = tx.send(i);
            c.ack(&m).await.unwrap();
        }
        let _ = c.close().await;
    })
}

async fn soak(kind: SubscriptionType, consumers: usize, seed: u64) {
    let server = LocalServer::start().await.unwrap();
    let proxy = FaultProxy::start(server.addr(), seed).await.unwrap();
    let url = proxy.ws_url();
    let topic = topic(&format!("{kind:?}").to_lowercase());
    let (stop_tx, stop) = watch::channel(false);

    let (tx, mut deliveries) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for _ in 0..consumers {
        let c = consumer(&url, &topic, kind);
        let mut opened = c.on_open();
        readers.push(spawn_consumer(c, tx.clone(), stop.clone()));
        opened.recv().await.unwrap(); // subscribed before anything is published
    }

    let endpoint = Endpoint::producer(&url, &topic, ProducerOptions::default()).unwrap();
    let producer = Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(config()).max_pending(WINDOW),
    );
    let chaos_task = chaos(&proxy, stop.clone(), seed);
    let (faults, (receipts_ok, received, deliveries_total)) = tokio::join!(chaos_task, async {
        let publisher = {
            let producer = producer.clone();
            tokio::spawn(async move {
                let mut receipts = Vec::with_capacity(MESSAGES as usize);
                for i in 0..MESSAGES {
                    receipts.push(
                        producer
                            .enqueue(Publish::new(format!("m-{i}")))
                            .await
                            .unwrap(),
                    );
                }
                let mut ok = 0u64;
                for r in receipts {
                    r.await.unwrap();
                    ok += 1;
                }
                ok
            })
        };
        let mut received = HashSet::new();
        let mut total = 0u64;
        while (received.len() as u64) < MESSAGES {
            let i = deliveries.recv().await.unwrap();
            total += 1;
            received.insert(i);
        }
        let ok = publisher.await.unwrap();
        stop_tx.send(true).unwrap();
        (ok, received, total)
    });
    for r in readers {
        r.await.unwrap();
    }

    let stats = producer.stats();
    assert!(faults >= 3, "faults injected: {faults}");
    assert_eq!(receipts_ok, MESSAGES, "every message confirmed");
    assert_eq!(stats.confirmed, MESSAGES);
    assert_eq!(
        received.len() as u64,
        MESSAGES,
        "every message received at least once"
    );
    let stored = server.stored(&topic.full_name()).len() as u64;
    let stored_twice = stored - MESSAGES;
    assert!(
        stored_twice <= stats.resent,
        "duplicates arise only from re-sends after a drop: {stored_twice} > {}",
        stats.resent
    );
    assert!(
        stats.peak_in_flight as usize <= WINDOW,
        "pending bound exceeded: {}",
        stats.peak_in_flight
    );
    eprintln!(
        "{kind:?}: {faults} faults, {} producer reconnects, {} re-sent, {stored_twice} stored twice, \
         {} deliveries for {MESSAGES} messages",
        stats.reconnects, stats.resent, deliveries_total
    );

    producer.close().await.unwrap();
    // No task leaks: every connection through the proxy and on the server is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().connections_open > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().connections_open, 0);
    while proxy.live_connections() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.live_connections(), 0, "relays left behind");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_exclusive() {
    tokio::time::timeout(
        Duration::from_secs(120),
        soak(SubscriptionType::Exclusive, 1, 7),
    )
    .await
    .expect("soak took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_shared_pair() {
    tokio::time::timeout(
        Duration::from_secs(120),
        soak(SubscriptionType::Shared, 2, 8),
    )
    .await
    .expect("soak took too long");
}
