//! The producer under connection faults: message order after losses against the embedded server
//! (real sockets on 127.0.0.1, bounded counts and time).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use stream_websocket::gdn::{Endpoint, Producer, ProducerConfig, ProducerOptions, Topic};
use stream_websocket::{Publish, ReconnectConfig};
use stream_websocket_testkit::LocalServer;

/// Reconnect settings for real sockets: quick retries, so a few dozen drops take well under a
/// second of backoff in total.
fn reconnect(queue_capacity: Option<usize>) -> ReconnectConfig {
    let mut b = ReconnectConfig::builder()
        .min_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(2))
        .seed(7);
    if let Some(n) = queue_capacity {
        b = b.queue_capacity(n);
    }
    b.build().unwrap()
}

/// A payload of exactly `size` bytes (at least 8) that starts with its index.
fn payload(i: usize, size: usize) -> String {
    let mut p = format!("{i:07}-");
    p.extend(std::iter::repeat_n('x', size.saturating_sub(p.len())));
    p
}

fn index(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[..7]).unwrap().parse().unwrap()
}

/// Publishes `n` messages of `size` bytes through a server that drops every connection right
/// after storing its `drop_after`-th message (before confirming it), then checks what the server
/// stored: every message, and the first stored copy of each in publish order. Returns how many
/// times the producer reconnected.
async fn first_copies_in_publish_order(
    n: usize,
    size: usize,
    drop_after: u64,
    max_pending: usize,
    queue_capacity: Option<usize>,
) -> u64 {
    let case = format!(
        "n={n} size={size} drop_after={drop_after} window={max_pending} queue={queue_capacity:?}"
    );
    let server = LocalServer::start().await.unwrap();
    server.drop_after_frames(Some(drop_after));
    let topic = Topic::gdn("faults", "_system", "order", false).unwrap();
    let endpoint =
        Endpoint::producer(&server.ws_url(), &topic, ProducerOptions::default()).unwrap();
    let producer = Producer::with_config(
        move || endpoint.connect(),
        ProducerConfig::new(reconnect(queue_capacity)).max_pending(max_pending),
    );

    let mut receipts = Vec::with_capacity(n);
    for i in 0..n {
        receipts.push(
            producer
                .enqueue(Publish::new(payload(i, size)))
                .await
                .unwrap(),
        );
    }
    for (i, r) in receipts.into_iter().enumerate() {
        r.await
            .unwrap_or_else(|e| panic!("{case}: message {i} unconfirmed: {e}"));
    }
    let reconnects = producer.stats().reconnects;
    server.drop_after_frames(None);
    producer.close().await.unwrap();

    let stored = server.stored(&topic.full_name());
    let mut seen = HashSet::new();
    let first_copies: Vec<usize> = stored
        .iter()
        .map(|p| index(p))
        .filter(|&i| seen.insert(i))
        .collect();
    assert_eq!(seen.len(), n, "{case}: every message is stored");
    if let Some(w) = first_copies.windows(2).find(|w| w[0] >= w[1]) {
        panic!(
            "{case}: message {} was first stored after message {} (first copies: {:?})",
            w[1], w[0], first_copies
        );
    }
    server.shutdown().await;
    reconnects
}

/// Every payload size with one queue capacity (`None`: the default, 1024).
async fn all_sizes(queue_capacity: Option<usize>) {
    for size in [1024, 2048, 4096] {
        let reconnects = first_copies_in_publish_order(400, size, 97, 1000, queue_capacity).await;
        assert!(
            reconnects >= 3,
            "the server dropped the producer {reconnects} times"
        );
    }
}

// Two worker threads, so that the server stores and drops while the producer is still writing:
// 1-4 KiB payloads fill the socket buffers, so the loss is found inside the producer's write
// loop (by a failed write, or, with a small queue, inside the stream's `poll_ready`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_copies_in_order_after_losses_with_the_default_queue() {
    support::bounded(all_sizes(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_copies_in_order_after_losses_with_a_queue_of_two() {
    support::bounded(all_sizes(Some(2))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_copies_in_order_after_losses_with_a_queue_of_four() {
    support::bounded(all_sizes(Some(4))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_copies_in_order_after_losses_with_small_windows() {
    support::bounded(async {
        // Windows below the run of messages per connection, one of them the queue's size.
        first_copies_in_publish_order(300, 2048, 97, 64, Some(4)).await;
        first_copies_in_publish_order(300, 2048, 37, 16, Some(4)).await;
        first_copies_in_publish_order(300, 2048, 37, 4, Some(4)).await;
    })
    .await;
}

// One thread, a queue of two and a window of 1000: the server answers and drops while the
// producer's task is not running, so every loss is found with the server's acknowledgements
// already waiting in the socket. Before the stream's fault fixes, this producer never got a
// confirmation and reconnected forever (161 reconnects in 10 s).
#[tokio::test(flavor = "current_thread")]
async fn acknowledgements_waiting_when_a_connection_fails_are_not_lost() {
    support::bounded(async {
        first_copies_in_publish_order(300, 1024, 37, 1000, Some(2)).await;
    })
    .await;
}
