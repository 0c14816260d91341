//! The confirming producer, in virtual time against scripted acknowledging servers.

mod support;

use std::time::Duration;

use stream_websocket::gdn::{Producer, ProducerConfig, ProducerError, DEFAULT_DRAIN_TIMEOUT};
use stream_websocket::{Publish, ReconnectConfig};
use support::{Outcome, Script};

/// Enqueues messages `m<i>` for every `i` in `range`, in order, and returns their receipts.
async fn enqueue(
    producer: &Producer,
    range: std::ops::Range<usize>,
) -> Vec<stream_websocket::gdn::Receipt> {
    let mut receipts = Vec::new();
    for i in range {
        receipts.push(
            producer
                .enqueue(Publish::new(format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    receipts
}

fn config() -> ProducerConfig {
    ProducerConfig::new(
        ReconnectConfig::builder()
            .min_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .seed(3)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn every_message_is_confirmed_across_drops_and_resent_in_order() {
    // Three connections die after 7, 5 and 9 messages (each time having stored the last one
    // without confirming it), with failed attempts in between; the fourth stays up.
    let script = Script::new([
        Outcome::Broker {
            drop_after: Some(7),
        },
        Outcome::Fail,
        Outcome::Broker {
            drop_after: Some(5),
        },
        Outcome::Broker {
            drop_after: Some(9),
        },
        Outcome::Fail,
        Outcome::Fail,
        Outcome::Broker { drop_after: None },
    ]);
    let producer = Producer::with_config(script.factory(), config().max_pending(4));
    let sends = (0..40).map(|i| producer.send(Publish::new(format!("m{i}"))));
    let results = futures::future::join_all(sends).await;
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "message {i}: {r:?}");
    }
    let stats = producer.stats();
    assert_eq!(stats.confirmed, 40);
    assert_eq!(stats.reconnects, 3);
    assert_eq!(
        stats.peak_in_flight, 4,
        "the window was full but never exceeded"
    );
    assert!(stats.resent >= 3, "{stats:?}");

    // The servers saw every message at least once, and the first copy of each in publish order:
    // after a drop, re-sends come first, before anything newer.
    let seen = support::published_payloads(&script);
    let mut first = std::collections::HashSet::new();
    let firsts: Vec<usize> = seen
        .iter()
        .map(|p| p[1..].parse().unwrap())
        .filter(|&i| first.insert(i))
        .collect();
    assert_eq!(firsts, (0..40).collect::<Vec<_>>(), "{seen:?}");
    // A re-send goes back to the oldest unconfirmed message, never further than the window.
    let mut last = 0;
    for p in &seen {
        let i: usize = p[1..].parse().unwrap();
        assert!(i + 4 > last, "{seen:?}");
        last = last.max(i);
    }
    producer.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_window_bounds_messages_in_flight() {
    // The server never confirms (it stalls), so at most `max_pending` messages get out.
    let script = Script::new([Outcome::Stall {
        uptime: Duration::from_secs(3600),
    }]);
    let producer = Producer::with_config(script.factory(), config().max_pending(3));
    let _receipts = enqueue(&producer, 0..3).await;
    let fourth =
        tokio::time::timeout(Duration::from_secs(5), producer.enqueue(Publish::new("m3"))).await;
    assert!(fourth.is_err(), "a fourth message must wait for room");
    assert_eq!(producer.stats().sent, 3);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_every_unconfirmed_message() {
    let script = Script::new([
        Outcome::Broker {
            drop_after: Some(2),
        },
        Outcome::Permanent,
    ]);
    let producer = Producer::with_config(script.factory(), config());
    let sends = (0..5).map(|i| producer.send(Publish::new(format!("m{i}"))));
    let results = futures::future::join_all(sends).await;
    assert!(results[0].is_ok());
    for r in &results[1..] {
        match r {
            Err(ProducerError::Stopped(e)) => assert_eq!(e.http_status(), Some(401)),
            other => panic!("expected Stopped(401), got {other:?}"),
        }
    }
    assert!(matches!(
        producer.send(Publish::new("late")).await,
        Err(ProducerError::Stopped(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_confirmations_and_close_ends_cleanly() {
    let script = Script::new([
        Outcome::Broker {
            drop_after: Some(3),
        },
        Outcome::Broker { drop_after: None },
    ]);
    let producer = Producer::with_config(script.factory(), config());
    let receipts = enqueue(&producer, 0..10).await;
    producer.flush().await.unwrap();
    assert_eq!(producer.stats().confirmed, 10);
    for r in receipts {
        r.await.unwrap();
    }
    let other = producer.clone();
    producer.close().await.unwrap();
    assert!(matches!(
        other.send(Publish::new("x")).await,
        Err(ProducerError::Closed)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_message_resolves_to_a_typed_error_and_the_rest_go_on() {
    let script = Script::new([Outcome::Broker { drop_after: None }]);
    let producer = Producer::with_config(script.factory(), config());
    let sends = ["a", "reject-me", "b"].map(|p| producer.send(Publish::new(p)));
    let [a, rejected, b] = futures::future::join_all(sends).await.try_into().unwrap();
    assert!(a.is_ok() && b.is_ok());
    match rejected {
        Err(ProducerError::Rejected { code, message }) => {
            assert_eq!(code, Some(8));
            assert_eq!(message, "broker is overloaded");
        }
        other => panic!("expected send-error:8, got {other:?}"),
    }
    let stats = producer.stats();
    assert_eq!((stats.confirmed, stats.rejected), (2, 1));
}

/// First copies of the published messages (payloads `m<index>` and any padding after a `-`), as
/// the scripted servers recorded them, in arrival order.
fn first_copies(script: &Script) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    support::published_payloads(script)
        .iter()
        .map(|p| p[1..].split('-').next().unwrap().parse().unwrap())
        .filter(|&i| seen.insert(i))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn after_a_loss_the_first_copies_arrive_in_publish_order_with_any_window_and_queue() {
    // 8 KiB payloads fill the in-memory pipe (256 KiB) long before the window is out, so the
    // producer is blocked in the middle of writing when the server drops the connection, and
    // finds the loss there, inside the stream's `poll_ready` when its queue is full. It must not
    // queue anything newer into the stream for the next connection ahead of the re-sends.
    const N: usize = 80;
    let padding = "x".repeat(8 * 1024);
    for (window, queue) in [(1000, 2), (1000, 4), (1000, 1024), (40, 4), (20, 2), (3, 2)] {
        let script = Script::new([
            Outcome::Broker {
                drop_after: Some(6),
            },
            Outcome::Broker {
                drop_after: Some(11),
            },
            Outcome::Fail,
            Outcome::Broker {
                drop_after: Some(3),
            },
            Outcome::Broker { drop_after: None },
        ]);
        let reconnect = ReconnectConfig::builder()
            .min_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .queue_capacity(queue)
            .seed(3)
            .build()
            .unwrap();
        let producer = Producer::with_config(
            script.factory(),
            ProducerConfig::new(reconnect).max_pending(window),
        );
        let sends = (0..N).map(|i| producer.send(Publish::new(format!("m{i}-{padding}"))));
        let results = futures::future::join_all(sends).await;
        for (i, r) in results.iter().enumerate() {
            assert!(
                r.is_ok(),
                "window {window}, queue {queue}: message {i}: {r:?}"
            );
        }
        assert_eq!(
            producer.stats().reconnects,
            3,
            "window {window}, queue {queue}"
        );
        let firsts = first_copies(&script);
        assert_eq!(
            firsts,
            (0..N).collect::<Vec<_>>(),
            "window {window}, queue {queue}: first copies out of publish order"
        );
        producer.close().await.unwrap();
    }
}

// ----- Shutdown is bounded by the drain timeout ----------------------------------------------

/// A script whose every connection attempt fails (refused), far more often than a test waits.
fn unreachable() -> std::sync::Arc<Script> {
    Script::new(std::iter::repeat_n(Outcome::Fail, 100_000))
}

/// What a message left unconfirmed at the drain timeout resolves to.
fn assert_unconfirmed(result: Result<stream_websocket::MessageId, ProducerError>) {
    match result {
        Err(e @ ProducerError::Unconfirmed) => {
            assert!(
                e.to_string().contains("may or may not have been stored"),
                "{e}"
            );
        }
        other => panic!("expected Unconfirmed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_during_an_outage_ends_the_task_after_the_drain_timeout() {
    assert_eq!(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs(30));
    let script = unreachable();
    let producer = Producer::with_config(script.factory(), config());
    let mut receipts = enqueue(&producer, 0..3).await;
    drop(producer);

    // Within the drain timeout (the default, 30 s) the producer keeps trying.
    tokio::time::sleep(Duration::from_secs(29)).await;
    for r in &mut receipts {
        assert!(
            futures::FutureExt::now_or_never(r).is_none(),
            "resolved early"
        );
    }
    let calls_during_drain = script.calls().len();
    assert!(
        calls_during_drain > 5,
        "it kept reconnecting: {calls_during_drain}"
    );

    // Then it gives up: every receipt resolves, and the factory is never called again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for r in receipts {
        assert_unconfirmed(
            futures::FutureExt::now_or_never(r).expect("unresolved after the drain"),
        );
    }
    let calls_at_end = script.calls().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(script.calls().len(), calls_at_end, "still reconnecting");
}

#[tokio::test(start_paused = true)]
async fn close_during_an_outage_returns_after_the_drain_timeout_with_the_unconfirmed_count() {
    // The first connection stores 3 messages and confirms 2; every later attempt fails.
    let mut outcomes = vec![Outcome::Broker {
        drop_after: Some(3),
    }];
    outcomes.extend(std::iter::repeat_n(Outcome::Fail, 100_000));
    let script = Script::new(outcomes);
    let drain = Duration::from_secs(10);
    let producer = Producer::with_config(script.factory(), config().drain_timeout(drain));
    let receipts = enqueue(&producer, 0..5).await;
    let mut receipts = receipts.into_iter();
    receipts.next().unwrap().await.unwrap();
    receipts.next().unwrap().await.unwrap();

    // Another handle's flush, waiting when the drain runs out, learns the same.
    let other = producer.clone();
    let flush = tokio::spawn(async move {
        let flushed = other.flush().await;
        (flushed, other)
    });
    tokio::task::yield_now().await;

    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(120), producer.close())
        .await
        .expect("close() did not return");
    let took = started.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(1),
        "close() took {took:?}"
    );
    match closed {
        Err(e @ ProducerError::DrainTimeout { unconfirmed: 3 }) => {
            assert!(e.to_string().contains("3 message(s) unconfirmed"), "{e}");
        }
        other => panic!("expected DrainTimeout {{ unconfirmed: 3 }}, got {other:?}"),
    }
    for r in receipts {
        assert_unconfirmed(r.await);
    }
    let (flushed, other) = flush.await.unwrap();
    assert!(
        matches!(flushed, Err(ProducerError::DrainTimeout { unconfirmed: 3 })),
        "{flushed:?}"
    );
    assert!(matches!(
        other.send(Publish::new("late")).await,
        Err(ProducerError::Closed)
    ));
    let calls_at_end = script.calls().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(script.calls().len(), calls_at_end, "still reconnecting");
}

#[tokio::test(start_paused = true)]
async fn close_with_a_healthy_server_confirms_everything_first() {
    let script = Script::new([Outcome::Broker { drop_after: None }]);
    let producer = Producer::with_config(script.factory(), config());
    let receipts = enqueue(&producer, 0..20).await;
    let stats = producer.clone();
    producer.close().await.unwrap();
    for r in receipts {
        r.await.unwrap();
    }
    assert_eq!(stats.stats().confirmed, 20);
    assert_eq!(script.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_handles_still_deliver_when_the_server_returns_within_the_drain_timeout() {
    let script = Script::new([
        Outcome::Broker {
            drop_after: Some(2),
        },
        Outcome::Fail,
        Outcome::Fail,
        Outcome::Broker { drop_after: None },
    ]);
    let producer = Producer::with_config(script.factory(), config());
    let receipts = enqueue(&producer, 0..6).await;
    drop(producer);
    for r in receipts {
        r.await.unwrap();
    }
    // Everything confirmed and no handle left: the task closed the connection and ended.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(script.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_outage_longer_than_the_drain_timeout_is_ridden_out_while_handles_are_held() {
    // Only a shutdown starts the drain timeout: a live producer waits out any outage.
    let mut outcomes = vec![Outcome::Broker {
        drop_after: Some(2),
    }];
    outcomes.extend(std::iter::repeat_n(Outcome::Fail, 120));
    outcomes.push(Outcome::Broker { drop_after: None });
    let script = Script::new(outcomes);
    let producer = Producer::with_config(
        script.factory(),
        config().drain_timeout(Duration::from_secs(5)),
    );
    let started = tokio::time::Instant::now();
    let sends = (0..6).map(|i| producer.send(Publish::new(format!("m{i}"))));
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    assert!(
        started.elapsed() > Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    producer.close().await.unwrap();
}

#[test]
#[should_panic(expected = "Producer must be created inside a Tokio runtime")]
fn a_producer_outside_a_runtime_panics_with_a_clear_message() {
    let script = Script::new([]);
    let _ = Producer::new(script.factory());
}

/// The idempotency key: set once when a message is accepted (`<producer id>-<sequence>`), the
/// same in every re-send, a key the application set is kept, and none when turned off.
#[tokio::test(start_paused = true)]
async fn every_message_carries_one_idempotency_key_through_re_sends() {
    use stream_websocket::gdn::IDEMPOTENCY_KEY;

    fn keys(script: &Script) -> Vec<(String, Option<String>)> {
        script
            .received_texts()
            .iter()
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).unwrap();
                let context = v["context"].as_str().unwrap().to_string();
                let key = v["properties"][IDEMPOTENCY_KEY]
                    .as_str()
                    .map(str::to_string);
                (context, key)
            })
            .collect()
    }

    // The first connection stores message 2 and drops before confirming it: it is sent again.
    let script = Script::new([
        Outcome::Broker {
            drop_after: Some(3),
        },
        Outcome::Broker { drop_after: None },
    ]);
    let producer = Producer::with_config(script.factory(), config().producer_id("orders-7"));
    let sends = (0..4).map(|i| {
        let mut p = Publish::new(format!("m{i}"));
        if i == 3 {
            p = p.property(IDEMPOTENCY_KEY, "mine");
        }
        producer.send(p)
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let seen = keys(&script);
    assert!(seen.len() > 4, "a re-send happened: {seen:?}");
    for (context, key) in &seen {
        let want = if context == "3" {
            "mine".to_string()
        } else {
            format!("orders-7-{context}")
        };
        assert_eq!(key.as_deref(), Some(want.as_str()), "{seen:?}");
    }
    producer.close().await.unwrap();

    // A random identity by default: 16 hex digits.
    let script = Script::new([Outcome::Broker { drop_after: None }]);
    let producer = Producer::with_config(script.factory(), config());
    producer.send(Publish::new("x")).await.unwrap();
    let (_, key) = keys(&script).remove(0);
    let key = key.unwrap();
    let (id, seq) = key.rsplit_once('-').unwrap();
    assert_eq!((id.len(), seq), (16, "0"), "{key}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    producer.close().await.unwrap();

    // Turned off: no key.
    let script = Script::new([Outcome::Broker { drop_after: None }]);
    let producer = Producer::with_config(script.factory(), config().idempotency_keys(false));
    producer.send(Publish::new("x")).await.unwrap();
    assert_eq!(keys(&script), [("0".to_string(), None)]);
    producer.close().await.unwrap();
}

/// Runs a producer with the default delays (seeded) over `script`, publishing `payloads`, and
/// returns how long it took in virtual time and each receipt's outcome.
async fn publish_all(
    script: &std::sync::Arc<Script>,
    payloads: Vec<String>,
) -> (
    Duration,
    Vec<Result<stream_websocket::MessageId, ProducerError>>,
) {
    let start = tokio::time::Instant::now();
    let reconnect = ReconnectConfig::builder().seed(11).build().unwrap();
    let producer = Producer::with_config(script.factory(), ProducerConfig::new(reconnect));
    let mut receipts = Vec::new();
    for p in payloads {
        receipts.push(producer.enqueue(Publish::new(p)).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for r in receipts {
        outcomes.push(r.await);
    }
    (start.elapsed(), outcomes)
}

#[tokio::test(start_paused = true)]
async fn confirmations_restart_the_schedule_so_periodic_drops_cost_no_sleep() {
    // Ten connections each confirm 19 messages and drop after storing the 20th, unconfirmed:
    // every one of them made progress, so each reconnect goes out at once (the connections
    // live no virtual time, so an eighth of their uptime is zero), never at the 1–2 s minimum
    // and beyond.
    let mut outcomes = vec![
        Outcome::Broker {
            drop_after: Some(20)
        };
        10
    ];
    outcomes.push(Outcome::Broker { drop_after: None });
    let script = Script::new(outcomes);
    let payloads = (0..250).map(|i| format!("m{i}")).collect();
    let (took, results) = publish_all(&script, payloads).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(script.calls().len(), 11);
    assert!(
        took < Duration::from_millis(10),
        "slept {took:?} through the drops"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_not_progress() {
    // Connections that only refuse (send-error answers) and drop: nothing was confirmed, so the
    // schedule climbs as for a server that proves nothing.
    let outcomes = vec![
        Outcome::Broker {
            drop_after: Some(3)
        };
        4
    ];
    let script = Script::new(
        outcomes
            .into_iter()
            .chain([Outcome::Broker { drop_after: None }]),
    );
    let payloads = (0..12).map(|i| format!("reject-{i}")).collect();
    let (took, results) = publish_all(&script, payloads).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ProducerError::Rejected { .. }))),
        "{results:?}"
    );
    // After the first reconnect (its window), at least the minimum (1 s) and then 1.3 s, 1.69 s.
    let gaps = script.gaps_ms();
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    assert!(
        gaps[1] >= 1000 && gaps[2] >= 1300 && gaps[3] >= 1690,
        "{gaps:?}"
    );
    assert!(took >= Duration::from_secs(4), "{took:?}");
}
