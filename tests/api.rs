//! The API a new user reaches for: naming a stream's type with a boxed factory, a factory error
//! of one's own, opening a consumer before publishing, and the same events on all three types.

mod support;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use stream_websocket::gdn::{
    Consumer, ConsumerOptions, Endpoint, Producer, ProducerOptions, SubscriptionType, Topic,
};
use stream_websocket::prelude::*;
use stream_websocket::{boxed, BoxConnect, Error, Publish, ReconnectConfig, ReconnectingStream};
use stream_websocket_testkit::LocalServer;
use support::{Outcome, Script, Ws};

/// A service struct that names its stream's type.
struct Feed {
    stream: ReconnectingStream<BoxConnect<Ws>>,
}

#[tokio::test(start_paused = true)]
async fn a_boxed_factory_names_the_type_and_a_custom_error_is_retried() {
    let script = Script::new([Outcome::Open {
        frames: 1,
        uptime: Duration::from_secs(60),
        close: true,
    }]);
    let mut inner = script.factory();
    let mut first = true;
    // The first attempt fails with an error of the application's own (a plain message here; an
    // `anyhow::Error` converts the same way), which is retried.
    let factory = move || -> BoxFuture<'static, Result<Ws, Error>> {
        if std::mem::take(&mut first) {
            return async { Err(Error::factory("the token service is down")) }.boxed();
        }
        inner()
    };
    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut feed = Feed {
        stream: ReconnectingStream::with_config(boxed(factory), config),
    };
    let mut errors = feed.stream.on_error();
    assert!(feed.stream.next().await.unwrap().is_ok());
    let e = errors.try_recv().unwrap();
    assert!(matches!(e, Error::Factory(_)), "{e:?}");
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "the token service is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_opens_a_consumer_before_anything_is_published() {
    support::bounded(async {
        let server = LocalServer::start().await.unwrap();
        let topic = Topic::gdn("api", "_system", "ready", false).unwrap();
        let endpoint = Endpoint::consumer(
            &server.ws_url(),
            &topic,
            ConsumerOptions::new("s").subscription_type(SubscriptionType::Exclusive),
        )
        .unwrap();
        let mut consumer =
            Consumer::with_config(move || endpoint.connect(), ReconnectConfig::default());
        let mut opens = consumer.on_open();
        consumer.ready().await.unwrap();
        assert_eq!(
            opens.try_recv().unwrap().connection,
            1,
            "open before ready returned"
        );

        // Published after `ready`: the subscription exists, so the message is not missed.
        let endpoint =
            Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default()).unwrap();
        let producer = Producer::new(move || endpoint.connect());
        // Subscribed right after creation: a producer connects on first use, so the first open
        // is not missed, even on a multi-threaded runtime.
        let mut producer_opens = producer.on_open();
        let mut gave_up = producer.on_gave_up();
        producer.ready().await.unwrap();
        assert_eq!(producer_opens.try_recv().unwrap().connection, 1);
        producer.send(Publish::new("first")).await.unwrap();
        let m = consumer.next().await.unwrap().unwrap();
        assert_eq!(&m.payload[..], b"first");
        let stats = consumer.stats();
        assert_eq!((stats.connections, stats.received), (1, 1));
        assert!(
            gave_up.try_recv().is_err(),
            "the producer offers on_gave_up too"
        );

        // A handle subscribes later, from elsewhere; it ends when the producer is gone.
        let listeners = producer.listeners();
        let mut late = listeners.events();
        producer.close().await.unwrap();
        while late.recv().await.is_ok() {}
        server.shutdown().await;
    })
    .await;
}

/// `stats()` on the stream: connections, messages each way, what waits, the last ping's round
/// trip.
#[tokio::test(start_paused = true)]
async fn stream_stats_count_what_happened() {
    use futures::SinkExt;
    use stream_websocket::{Outgoing, Publish as P};

    let script = Script::new([Outcome::Open {
        frames: 3,
        uptime: Duration::from_secs(3600),
        close: true,
    }]);
    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    assert_eq!(stream.stats().connections, 0);
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    stream.feed(Outgoing::Publish(P::new("a"))).await.unwrap();
    stream.feed(Outgoing::Publish(P::new("b"))).await.unwrap();
    assert_eq!(stream.stats().queue_depth, 2);
    stream.flush().await.unwrap();
    // A ping goes out after a second; the server's pong comes back.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.flush().await.unwrap();
    }
    let stats = stream.stats();
    assert_eq!(
        (
            stats.connections,
            stats.reconnects,
            stats.messages_in,
            stats.messages_out
        ),
        (1, 0, 3, 2)
    );
    assert_eq!(stats.queue_depth, 0);
    assert!(stats.last_rtt.is_some(), "{stats:?}");
}

/// The producer's window follows the server's queue when it is built for an endpoint: a window
/// of 100 on an endpoint whose `maxPendingMessages` is 10 keeps at most 10 in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_for_an_endpoint_keeps_its_window_within_the_servers_queue() {
    use stream_websocket::gdn::ProducerConfig;
    support::bounded(async {
        let server = LocalServer::start().await.unwrap();
        let topic = Topic::gdn("api", "_system", "window", false).unwrap();
        let endpoint = Endpoint::producer(
            &server.ws_url(),
            &topic,
            ProducerOptions::default().max_pending_messages(10),
        )
        .unwrap();
        assert_eq!(endpoint.max_pending_messages(), Some(10));
        let producer = Producer::for_endpoint(
            endpoint,
            ProducerConfig::new(ReconnectConfig::default()).max_pending(100),
        );
        let sends = (0..200).map(|i| producer.send(Publish::new(format!("w-{i}"))));
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
        let stats = producer.stats();
        assert_eq!(stats.confirmed, 200);
        assert!(stats.peak_in_flight <= 10, "{stats:?}");
        assert_eq!(stats.peak_in_flight, 10, "the window was used");
        producer.close().await.unwrap();
        server.shutdown().await;
    })
    .await;
}

/// One configuration style: every settings value starts from its defaults and chains setters;
/// only `ReconnectConfig`, whose settings constrain each other, is built and checked.
#[test]
fn every_config_chains_from_its_defaults() {
    use stream_websocket::gdn::{ConsumerConfig, ProducerConfig};
    use stream_websocket::UnsentPolicy;
    use stream_websocket_testkit::ServerConfig;

    let rc = ReconnectConfig::builder()
        .min_delay(Duration::from_millis(50))
        .unsent_policy(UnsentPolicy::HandBack)
        .build()
        .unwrap();
    let consumer = ConsumerConfig::default()
        .reconnect(rc.clone())
        .dedup_window(10, 10_000);
    assert_eq!(
        consumer.reconnect_config().unsent_policy(),
        UnsentPolicy::Requeue,
        "a consumer always re-queues its acks"
    );
    let _producer = ProducerConfig::default().reconnect(rc).max_pending(5);
    let _server = ServerConfig::default().api_key("k");
}
