//! Reconnect behaviour in virtual time, against scripted in-memory connections.

mod support;

use std::time::Duration;
use stream_websocket::Listen;

use futures::{FutureExt, SinkExt, StreamExt};
use stream_websocket::{
    Disposition, Error, Event, Incoming, Outgoing, Publish, ReconnectConfig, ReconnectingStream,
    UnsentPolicy,
};
use support::{drain, ms, Outcome, Script};
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn base() -> stream_websocket::ReconnectConfigBuilder {
    ReconnectConfig::builder()
        .min_delay(SEC)
        .max_delay(Duration::from_secs(10))
        .seed(7)
}

fn open(frames: usize, uptime: Duration) -> Outcome {
    Outcome::Open {
        frames,
        uptime,
        close: true,
    }
}

/// A script whose first connection stalls (half-open: never reads, never answers a ping) for an
/// hour, then a healthy one sending `frames`; and keepalive that pings every `every` and gives
/// up `every` after a ping.
fn stalled_first(frames: usize, every: Duration) -> (std::sync::Arc<Script>, ReconnectConfig) {
    let script = Script::new([
        Outcome::Stall {
            uptime: Duration::from_secs(3600),
        },
        open(frames, Duration::from_secs(3600)),
    ]);
    let config = base()
        .ping_interval(every)
        .pong_timeout(every)
        .build()
        .unwrap();
    (script, config)
}

fn publish(i: usize) -> Outgoing {
    Outgoing::Publish(Publish::new(format!("item-{i}")).context(i.to_string()))
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_original_schedule_then_give_up() {
    let script = Script::new(std::iter::repeat_n(Outcome::Fail, 100));
    let config = base().max_retries(12).build().unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut events = stream.events();

    let end = stream.next().await;
    assert!(
        matches!(&end, Some(Err(Error::GaveUp { attempts: 12, .. }))),
        "{end:?}"
    );
    assert!(stream.next().await.is_none());
    assert!(stream.next().await.is_none(), "fused");

    // Initial attempt, then 12 retries: 0, 1000, 1300, 1690, ... capped at 10 s. The timer
    // rounds a deadline up to the next millisecond.
    let exact: [f64; 12] = [
        0.0, 1000.0, 1300.0, 1690.0, 2197.0, 2856.1, 3712.93, 4826.809, 6274.8517, 8157.30721,
        10_000.0, 10_000.0,
    ];
    let gaps = script.gaps_ms();
    assert_eq!(gaps.len(), exact.len());
    for (gap, want) in gaps.iter().zip(exact) {
        let gap = *gap as f64;
        assert!(gap >= want.floor() && gap <= want.ceil() + 1.0, "{gaps:?}");
    }
    let events = drain(&mut events);
    let reconnecting: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting(r) => Some(r.attempt),
            _ => None,
        })
        .collect();
    assert_eq!(reconnecting, (1..=12).collect::<Vec<_>>());
    assert!(matches!(events.last(), Some(Event::GaveUp(g)) if g.attempts == 12));
    let errors = events
        .iter()
        .filter(|e| matches!(e, Event::Error(_)))
        .count();
    assert_eq!(errors, 13, "one error per failed attempt");
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_outage_is_ridden_out() {
    // Failing for ten minutes at the 10 s cap (about 65 attempts), then the server is back.
    let mut outcomes: Vec<Outcome> = std::iter::repeat_n(Outcome::Fail, 70).collect();
    outcomes.push(open(1, Duration::from_secs(3600)));
    let script = Script::new(outcomes);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let start = Instant::now();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, Incoming::Message(_)));
    assert!(start.elapsed() >= Duration::from_secs(600));
    assert_eq!(script.calls().len(), 71);
    assert_eq!(stream.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn http_401_ends_the_stream_without_retrying() {
    let script = Script::new([Outcome::Permanent, open(1, SEC)]);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let mut errors = stream.on_error();
    match stream.next().await {
        Some(Err(e)) => assert_eq!(e.http_status(), Some(401)),
        other => panic!("expected the 401, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
    assert_eq!(script.calls().len(), 1, "a 401 is not retried");
    assert_eq!(errors.try_recv().unwrap().http_status(), Some(401));
    // The sink refuses items with the same error, and hands them back.
    let refused = stream.send(publish(0)).await.unwrap_err();
    assert_eq!(refused.http_status(), Some(401));
    let refused = stream.start_send_unpin(publish(1));
    assert_eq!(refused.unwrap_err().http_status(), Some(401));
    assert_eq!(stream.take_unsent(), vec![publish(1)]);
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_can_retry_a_401() {
    let script = Script::new([Outcome::Permanent, open(1, Duration::from_secs(60))]);
    let config = base()
        .classify(|e| match e.http_status() {
            Some(401) => Disposition::Retry,
            _ => e.default_disposition(),
        })
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(script.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_connect_times_out_and_is_retried() {
    let script = Script::new([Outcome::Hang, open(1, Duration::from_secs(60))]);
    let config = base()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut errors = stream.on_error();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(matches!(
        errors.try_recv(),
        Ok(Error::ConnectTimeout(d)) if d == Duration::from_secs(3)
    ));
    // The retry after the timeout is the first one: immediate.
    assert_eq!(script.gaps_ms(), [3000]);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_connection_is_detected_by_keepalive() {
    let (script, config) = stalled_first(1, Duration::from_secs(20));
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut errors = stream.on_error();
    let mut closes = stream.on_close();
    let start = Instant::now();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(
        matches!(errors.try_recv(), Ok(Error::KeepaliveTimeout(d)) if d == Duration::from_secs(20))
    );
    let closed = drain(&mut closes);
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].connection, 1);
    assert!(closed[0].reconnect);
    assert!(matches!(closed[0].error, Some(Error::KeepaliveTimeout(_))));
    // The ping goes out at 20 s; with no answer, the connection is declared dead at 40 s and the
    // (first, immediate) reconnect follows.
    let calls = script.calls();
    assert_eq!(calls[1] - calls[0], Duration::from_secs(40));
    assert!(start.elapsed() < Duration::from_secs(41));
}

#[tokio::test(start_paused = true)]
async fn keepalive_works_for_a_sink_only_user() {
    let (script, config) = stalled_first(0, Duration::from_secs(5));
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut opens = stream.on_open();
    // Only send, once a second, never reading.
    for i in 0..30 {
        stream.send(publish(i)).await.unwrap();
        tokio::time::sleep(SEC).await;
    }
    assert_eq!(opens.try_recv().unwrap().connection, 1);
    assert_eq!(
        opens.try_recv().unwrap().connection,
        2,
        "the stalled connection was replaced"
    );
    let gap = script.calls()[1] - script.calls()[0];
    assert!(gap <= Duration::from_secs(11), "detected after {gap:?}");
    // Items written into the dead connection are at-most-once at this layer; everything sent after
    // the reconnect arrives.
    let got = script.received_texts();
    assert!(got.len() >= 15, "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn items_queued_while_disconnected_are_written_once_in_order() {
    let script = Script::new([
        Outcome::Fail,
        Outcome::Fail,
        open(0, Duration::from_secs(3600)),
    ]);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    for i in 0..50 {
        stream.feed(publish(i)).await.unwrap();
    }
    assert_eq!(stream.pending(), 50);
    stream.flush().await.unwrap();
    assert_eq!(stream.pending(), 0);
    assert_eq!(script.gaps_ms(), [0, 1000]);
    // Let the server read.
    tokio::time::sleep(ms(10)).await;
    let got = script.received_texts();
    let want: Vec<String> = (0..50)
        .map(|i| {
            let m = stream_websocket::PulsarCodec::encode_outgoing(&publish(i));
            m.into_text().unwrap().as_str().to_string()
        })
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_applies_backpressure() {
    let script = Script::new([Outcome::Hang]);
    let config = base().queue_capacity(3).build().unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    for i in 0..3 {
        assert!(
            stream.feed(publish(i)).now_or_never().is_some(),
            "room for {i}"
        );
    }
    assert!(
        stream.feed(publish(3)).now_or_never().is_none(),
        "a full queue must not accept more"
    );
    assert_eq!(stream.pending(), 3);
}

#[tokio::test(start_paused = true)]
async fn close_during_backoff_stops_and_hands_items_back() {
    let script = Script::new(std::iter::repeat_n(Outcome::Fail, 10));
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let mut reconnecting = stream.on_reconnecting();
    stream.feed(publish(1)).await.unwrap();
    stream.feed(publish(2)).await.unwrap();
    // Run until the stream waits in a backoff delay (retry 2 waits 1 s).
    while reconnecting.try_recv().map(|r| r.attempt).unwrap_or(0) < 2 {
        assert!(stream.flush().now_or_never().is_none());
        tokio::task::yield_now().await;
    }
    let calls_before = script.calls().len();
    let closed = stream.close().await;
    assert!(matches!(closed, Err(Error::Unsent(2))), "{closed:?}");
    assert_eq!(stream.take_unsent(), vec![publish(1), publish(2)]);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(script.calls().len(), calls_before, "no attempt after close");
    assert!(stream.next().await.is_none());
    assert!(matches!(stream.send(publish(3)).await, Err(Error::Closed)));
    let refused = stream.start_send_unpin(publish(4));
    assert!(matches!(refused, Err(Error::Closed)));
    assert_eq!(stream.take_unsent(), vec![publish(4)]);
}

#[tokio::test(start_paused = true)]
async fn close_during_a_pending_connect_stops() {
    let script = Script::new([Outcome::Hang, open(1, SEC)]);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    assert!(stream.next().now_or_never().is_none());
    assert_eq!(script.calls().len(), 1);
    stream.close().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(script.calls().len(), 1);
    assert!(stream.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn close_on_an_open_connection_flushes_then_sends_close() {
    let script = Script::new([open(0, Duration::from_secs(3600))]);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let mut closes = stream.on_close();
    stream.feed(publish(1)).await.unwrap();
    stream.flush().await.unwrap();
    stream.feed(publish(2)).await.unwrap();
    // Queued on an open connection: close() writes it before the Close frame.
    stream.close().await.unwrap();
    tokio::time::sleep(ms(10)).await;
    assert_eq!(script.received_texts().len(), 2);
    assert!(stream.next().await.is_none());
    assert!(
        closes.try_recv().is_err(),
        "a user close is not a lost connection"
    );
}

#[tokio::test(start_paused = true)]
async fn undecodable_frames_are_reported_and_skipped() {
    let (client, mut server) = support::pair().await;
    let mut client = Some(client);
    let mut stream = ReconnectingStream::with_config(
        move || {
            let c = client.take();
            async move { c.ok_or(Error::Closed) }
        },
        base().build().unwrap(),
    );
    let mut errors = stream.on_error();
    use stream_websocket::tungstenite::Message;
    server.send(Message::Text("not json".into())).await.unwrap();
    server
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    server
        .send(Message::Text(support::consumer_frame("a", b"ok").into()))
        .await
        .unwrap();
    let Incoming::Message(m) = stream.next().await.unwrap().unwrap() else {
        panic!("expected a message")
    };
    assert_eq!(&m.payload[..], b"ok");
    assert!(matches!(errors.try_recv(), Ok(Error::Decode(_))));
    assert!(matches!(errors.try_recv(), Ok(Error::Decode(_))));
}

#[tokio::test(start_paused = true)]
async fn retry_count_resets_only_after_min_uptime() {
    // Two short-lived connections (1 s < min uptime 5 s), then a stable one (10 s), then one more.
    let script = Script::new([
        open(0, SEC),
        open(0, SEC),
        open(0, SEC),
        open(0, Duration::from_secs(10)),
        open(0, Duration::from_secs(3600)),
    ]);
    let config = base().min_uptime(Duration::from_secs(5)).build().unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut opens = stream.on_open();
    let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
    for n in 1..=5 {
        assert_eq!(opens.recv().await.unwrap().connection, n);
    }
    driver.abort();
    // Flapping grows the delay (0, then 1 s, then 1.3 s); after the stable connection the next
    // reconnect is immediate again.
    let gaps = script.gaps_ms();
    assert_eq!(gaps, [1000, 2000, 2300, 10_000]);
}

#[tokio::test(start_paused = true)]
async fn reconnect_revives_a_stream_that_gave_up() {
    let script = Script::new([Outcome::Fail, open(1, Duration::from_secs(60))]);
    let config = base().max_retries(0).build().unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    assert!(matches!(
        stream.next().await,
        Some(Err(Error::GaveUp { attempts: 0, .. }))
    ));
    assert!(stream.next().await.is_none());
    stream.reconnect();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(stream.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn items_are_handed_back_when_the_stream_gives_up() {
    let script = Script::new([Outcome::Hang]);
    let config = base()
        .unsent_policy(UnsentPolicy::HandBack)
        .max_retries(0)
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    stream.feed(publish(1)).await.unwrap();
    assert!(stream.next().await.unwrap().is_err());
    assert_eq!(stream.take_unsent(), vec![publish(1)]);
}

#[tokio::test(start_paused = true)]
async fn split_halves_in_two_tasks_both_survive_a_reconnect() {
    let script = Script::new([
        open(3, SEC),
        Outcome::Fail,
        open(3, Duration::from_secs(3600)),
    ]);
    let stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let (mut sink, mut source) = stream.split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 6 {
            match source.next().await {
                Some(Ok(Incoming::Message(m))) => got.push(m.payload),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    });
    let writer = tokio::spawn(async move {
        for i in 0..20 {
            sink.send(publish(i)).await.unwrap();
            tokio::time::sleep(ms(250)).await;
        }
    });
    let got = reader.await.unwrap();
    writer.await.unwrap();
    let want: Vec<String> = [1, 2]
        .iter()
        .flat_map(|c| (0..3).map(move |i| format!("c{c}-m{i}")))
        .collect();
    let got: Vec<String> = got
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn public_types_are_send_and_unpin() {
    fn send_unpin<T: Send + Unpin>() {}
    fn send_sync<T: Send + Sync>() {}
    type Factory = fn() -> futures::future::BoxFuture<'static, Result<support::Ws, Error>>;
    send_unpin::<ReconnectingStream<Factory>>();
    send_unpin::<ReconnectingStream<Factory, stream_websocket::RawCodec>>();
    send_unpin::<stream_websocket::Listener<Event>>();
    send_sync::<Error>();
    send_sync::<ReconnectConfig>();
    send_sync::<Event>();
    send_sync::<Outgoing>();
    send_sync::<Incoming>();
}

#[tokio::test(start_paused = true)]
async fn a_lagging_listener_is_told_and_never_blocks_the_stream() {
    // 30 failed attempts produce 60 events; the listener holds only 4 and is never read meanwhile.
    let script = Script::new(std::iter::repeat_n(Outcome::Fail, 30));
    let config = base().max_retries(29).event_capacity(4).build().unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut slow = stream.events();
    assert!(matches!(
        stream.next().await,
        Some(Err(Error::GaveUp { .. }))
    ));
    assert_eq!(
        script.calls().len(),
        30,
        "the stream ran to the end regardless"
    );
    match slow.try_recv() {
        Err(stream_websocket::ListenerError::Lagged(n)) => assert!(n > 50, "missed {n}"),
        other => panic!("expected a lag report, got {other:?}"),
    }
    // Still subscribed: the newest events are there, ending with the give-up.
    let rest = drain(&mut slow);
    assert_eq!(rest.len(), 4);
    assert!(matches!(rest.last(), Some(Event::GaveUp(_))));
}

/// During a two-second outage the stream makes exactly the attempts its backoff allows, and the
/// first attempt after it connects.
#[tokio::test(start_paused = true)]
async fn an_outage_costs_exactly_the_attempts_the_backoff_allows() {
    let config = ReconnectConfig::builder()
        .min_delay(ms(20))
        .max_delay(ms(300))
        .seed(42)
        .build()
        .unwrap();
    let start = Instant::now();
    let outage = Duration::from_secs(2);
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory = {
        let calls = calls.clone();
        move || {
            let now = Instant::now();
            calls.lock().unwrap().push(now - start);
            async move {
                if now - start < outage {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
                }
                let (client, mut server) = support::pair().await;
                tokio::spawn(async move { while let Some(Ok(_)) = server.next().await {} });
                Ok::<_, Error>(client)
            }
            .boxed()
        }
    };
    let mut stream = ReconnectingStream::with_config(factory, config.clone());
    let mut opens = stream.on_open();
    stream.flush().await.unwrap();
    assert_eq!(opens.try_recv().unwrap().connection, 1);

    // The model: attempts after the delays 0, 20 ms, 26 ms, … (capped at 300 ms), each rounded
    // up to the timer's millisecond.
    let mut backoff = stream_websocket::Backoff::new(*config.backoff(), 42);
    let mut at = Duration::ZERO;
    let mut want = vec![at];
    while at < outage {
        let delay = backoff.next_delay().unwrap();
        at += ms(delay.as_nanos().div_ceil(1_000_000) as u64);
        want.push(at);
    }
    let got = calls.lock().unwrap().clone();
    assert_eq!(got, want, "attempt times");
    assert!(got.len() < 20, "{} attempts in a 2 s outage", got.len());
}

/// A completed flush means "written to the socket", not "delivered": an item flushed into a
/// connection that then turns out dead is not written again on the next one (the `Producer`
/// is the layer that confirms and re-sends).
#[tokio::test(start_paused = true)]
async fn a_flush_means_written_not_delivered() {
    let (script, config) = stalled_first(0, Duration::from_secs(5));
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut opens = stream.on_open();
    // Flushed into the stalled connection, which never reads it.
    stream.send(publish(0)).await.unwrap();
    assert_eq!(opens.try_recv().unwrap().connection, 1);
    // Keepalive (driven here by flushing once a second) replaces the connection; what is sent
    // now reaches the live server.
    for _ in 0..12 {
        tokio::time::sleep(SEC).await;
        stream.flush().await.unwrap();
    }
    stream.send(publish(1)).await.unwrap();
    assert_eq!(opens.try_recv().unwrap().connection, 2);
    stream.close().await.unwrap();
    tokio::time::sleep(SEC).await; // the server records what it read
    let received = support::published_payloads(&script);
    assert_eq!(received, ["item-1"], "the flushed item is not re-sent");
}
