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

fn redelivering_b() -> std::sync::Arc<Script> {
    Script::new([
        Outcome::Deliver {
            ids: vec!["a", "b"],
            uptime: Duration::from_secs(1),
        },
        Outcome::Deliver {
            ids: vec!["b", "c"],
            uptime: Duration::from_secs(3600),
        },
    ])
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_of_a_message_the_application_holds_is_not_handed_over_twice() {
    let script = redelivering_b();
    let mut consumer = Consumer::with_config(script.factory(), config());
    let a = consumer.next().await.unwrap().unwrap();
    consumer.ack(&a).await.unwrap();
    // "b" is handed over and still being processed when the connection drops.
    let b = consumer.next().await.unwrap().unwrap();
    assert_eq!(payload(&b), "b");
    // The server delivers "b" again on the next connection: held back, not handed over.
    let c = consumer.next().await.unwrap().unwrap();
    assert_eq!(payload(&c), "c");
    let stats = consumer.stats();
    assert_eq!(
        (stats.received, stats.held_back, stats.redelivered),
        (3, 1, 0)
    );
    // The application's acknowledgement of its copy settles it.
    consumer.ack(&b).await.unwrap();
    consumer.ack(&c).await.unwrap();
    consumer.flush().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_message_the_application_nacked_is_handed_over_again() {
    let script = redelivering_b();
    let mut consumer = Consumer::with_config(script.factory(), config());
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = consumer.next().await.unwrap().unwrap();
        if payload(&m) == "b" && !got.contains(&"b".to_string()) {
            consumer.nack(&m).await.unwrap();
        } else {
            consumer.ack(&m).await.unwrap();
        }
        got.push(payload(&m));
    }
    assert_eq!(got, ["a", "b", "b", "c"]);
    let stats = consumer.stats();
    assert_eq!((stats.redelivered, stats.held_back), (1, 0));
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

/// A consumer frame with this id, payload and idempotency key, as a `'static` text for
/// `Outcome::Raw`.
fn keyed(id: &str, payload: &str, key: &str) -> &'static str {
    let payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload);
    Box::leak(
        format!(
            r#"{{"messageId":"{id}","payload":"{payload}","properties":{{"sw-idempotency-key":"{key}"}},"publishTime":"2024-01-01T00:00:00.000Z","redeliveryCount":0}}"#
        )
        .into_boxed_str(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_id_the_server_reuses_for_another_message_is_a_new_message() {
    // A restarted server numbers its messages from the start again: `1:1` and `1:2`, already
    // acknowledged, now name other messages (other keys). They are handed over; a true
    // redelivery (same id, same key) is still acknowledged and skipped.
    let script = Script::new([
        Outcome::Raw {
            texts: vec![keyed("1:1", "a", "p-0"), keyed("1:2", "b", "p-1")],
            uptime: Duration::from_secs(1),
        },
        Outcome::Raw {
            texts: vec![
                keyed("1:1", "c", "q-0"),
                keyed("1:2", "b", "p-1"),
                keyed("1:3", "d", "q-1"),
            ],
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
    assert_eq!(got, ["a", "b", "c", "d"]);
    let stats = consumer.stats();
    assert_eq!(stats.received, 4);
    assert_eq!(
        stats.skipped, 1,
        "only 1:2 with its own key was a redelivery"
    );
    // And the reused id, acknowledged again, is remembered with its new key.
    assert_eq!(stats.acked, 4);
}
