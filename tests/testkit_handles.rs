//! The testkit's handles: a cloneable `LocalServer` whose faults can run in other tasks,
//! periodic drops, and the echo server for `RawCodec` users. Real sockets on 127.0.0.1,
//! bounded time.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stream_websocket::gdn::{Endpoint, Producer, ProducerOptions, Topic};
use stream_websocket::prelude::*;
use stream_websocket::tungstenite::Message;
use stream_websocket::{connect, Publish, RawCodec, ReconnectConfig, ReconnectingStream};
use stream_websocket_testkit::{EchoServer, LocalServer};

fn fast() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_handle_injects_faults_from_another_task_and_drop_every_repeats_them() {
    support::bounded(async {
        let server = LocalServer::start().await.unwrap();
        let topic = Topic::gdn("kit", "_system", "handles", false).unwrap();
        let endpoint =
            Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default()).unwrap();
        let producer = Producer::with_config(move || endpoint.connect(), fast());
        producer.ready().await.unwrap();

        // A clone in another task drops every connection once.
        let injector = server.clone();
        tokio::spawn(async move { injector.drop_all() })
            .await
            .unwrap();
        producer.send(Publish::new("after one drop")).await.unwrap();
        let after_one = producer.stats().reconnects;
        assert!(after_one >= 1, "{after_one}");

        // Periodic drops, then none.
        server.drop_every(Some(Duration::from_millis(100)));
        for i in 0..10 {
            producer.send(Publish::new(format!("m{i}"))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        server.drop_every(None);
        let during = producer.stats().reconnects;
        assert!(during >= after_one + 3, "{during} reconnects");
        tokio::time::sleep(Duration::from_millis(300)).await;
        producer.send(Publish::new("quiet")).await.unwrap();
        let settled = producer.stats().reconnects;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            producer.stats().reconnects,
            settled,
            "drop_every(None) stopped them"
        );
        assert!(server.stored(&topic.full_name()).len() >= 12);

        producer.close().await.unwrap();
        // Any handle shuts it down.
        server.clone().shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_server_sends_back_what_a_raw_stream_writes() {
    support::bounded(async {
        let echo = EchoServer::start().await.unwrap();
        let url = echo.ws_url();
        let mut stream =
            ReconnectingStream::with_codec(move || connect(url.clone()), fast(), RawCodec);
        let mut opens = stream.on_open();
        stream.send(Message::text("hello")).await.unwrap();
        stream.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::text("hello")
        );
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        assert_eq!(opens.try_recv().unwrap().connection, 1);
        stream.close().await.unwrap();
        echo.shutdown();
    })
    .await;
}
