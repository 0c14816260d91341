//! The acknowledging consumer, in virtual time against scripted servers.

mod support;

use std::time::Duration;

use futures::StreamExt;
use stream_websocket::gdn::Consumer;
use stream_websocket::{Error, ReconnectConfig};
use support::{Outcome, Script};

fn config() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1))
        .seed(5)
        .build()
        .unwrap()
}

fn payload(m: &stream_websocket::ConsumerMessage) -> String {
    String::from_utf8(m.payload.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn redeliveries_after_a_drop_are_handled() {
    // Connection 1 delivers a, b, c; the consumer acks all three, but the server goes away
    // (after 1 s) as if it had only processed the ack of a. Connection 2 redelivers b and c, then d.
    let script = Script::new([
        Outcome::Deliver {
            ids: vec!["a", "b", "c"],
            uptime: Duration::from_secs(1),
        },
        Outcome::Deliver {
            ids: vec!["b", "c", "d"],
            uptime: Duration::from_secs(3600),
        },
    ]);
    let mut consumer = Consumer::with_config(script.factory(), config());
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = consumer.next().await.unwrap().unwrap();
        got.push(payload(&m));
        consumer.ack(&m).await.unwrap();
    }
    // b and c were acknowledged already: not yielded again, just acknowledged again.
    assert_eq!(got, ["a", "b", "c", "d"]);
    consumer.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = consumer.stats();
    assert_eq!(stats.received, 4);
    assert_eq!(stats.skipped, 2);
    assert_eq!(stats.acked, 4);
    assert_eq!(stats.reconnects, 1);
    let acks: Vec<String> = script
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|(conn, _)| *conn == 2)
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(
        acks,
        [
            r#"{"messageId":"b"}"#,
            r#"{"messageId":"c"}"#,
            r#"{"messageId":"d"}"#
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_redeliveries_are_yielded_and_counted() {
    let script = Script::new([
        Outcome::Deliver {
            ids: vec!["a", "b"],
            uptime: Duration::from_secs(1),
        },
        Outcome::Deliver {
            ids: vec!["b", "c"],
            uptime: Duration::from_secs(3600),
        },
    ]);
    let mut consumer = Consumer::with_config(script.factory(), config());
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = consumer.next().await.unwrap().unwrap();
        // Only "a" is acknowledged on the first connection.
        if payload(&m) != "b" || got.contains(&"b".to_string()) {
            consumer.ack(&m).await.unwrap();
        }
        got.push(payload(&m));
    }
    assert_eq!(got, ["a", "b", "b", "c"]);
    assert_eq!(consumer.stats().redelivered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_ends_the_consumer() {
    let script = Script::new([Outcome::Permanent]);
    let mut consumer = Consumer::with_config(script.factory(), config());
    match consumer.next().await {
        Some(Err(Error::Http { status: 401, .. })) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(consumer.next().await.is_none());
}
