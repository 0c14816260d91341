//! Property test of the producer's order promise: whatever the window, the stream's queue
//! capacity and where the connections drop (often in the middle of a write burst, while the
//! window is wider than the queue), the first copy of every message reaches a server in publish
//! order, and every message is confirmed. In virtual time over scripted in-memory brokers.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use stream_websocket::gdn::{Producer, ProducerConfig};
use stream_websocket::{Publish, ReconnectConfig};
use support::{Outcome, Script};

fn run(drops: Vec<usize>, window: usize, queue: usize, size: usize, messages: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut outcomes: Vec<Outcome> = drops
            .iter()
            .map(|&n| Outcome::Broker {
                drop_after: Some(n),
            })
            .collect();
        outcomes.push(Outcome::Broker { drop_after: None });
        let script = Script::new(outcomes);
        let reconnect = ReconnectConfig::builder()
            .min_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(100))
            .queue_capacity(queue)
            .seed(1)
            .build()
            .unwrap();
        let producer = Producer::with_config(
            script.factory(),
            ProducerConfig::new(reconnect).max_pending(window),
        );
        let padding = "x".repeat(size);
        let sends = (0..messages).map(|i| producer.send(Publish::new(format!("{i}:{padding}"))));
        let results =
            tokio::time::timeout(Duration::from_secs(3600), futures::future::join_all(sends))
                .await
                .expect("every send resolves");
        for (i, r) in results.iter().enumerate() {
            assert!(r.is_ok(), "message {i}: {r:?}");
        }

        // First copies, in arrival order over all connections.
        let mut seen = std::collections::HashSet::new();
        let mut first_copies = Vec::new();
        for payload in support::published_payloads(&script) {
            let i: usize = payload[..payload.find(':').unwrap()].parse().unwrap();
            if seen.insert(i) {
                first_copies.push(i);
            }
        }
        let want: Vec<usize> = (0..messages).collect();
        assert_eq!(
            first_copies, want,
            "first copies out of publish order (window {window}, queue {queue}, drops {drops:?})"
        );
        producer.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn first_copies_reach_the_server_in_publish_order(
        drops in proptest::collection::vec(1usize..40, 0..6),
        window in 1usize..64,
        queue in 1usize..8,
        size in prop_oneof![Just(0usize), 1_000usize..4_000, 60_000usize..140_000],
        messages in 1usize..80,
    ) {
        run(drops, window, queue, size, messages);
    }
}
