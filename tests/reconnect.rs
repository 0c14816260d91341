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

/// A 1 s minimum and an immediate first reconnect, so that schedules are exact; the tests of the
/// first-reconnect window set it themselves.
fn base() -> stream_websocket::ReconnectConfigBuilder {
    ReconnectConfig::builder()
        .min_delay(SEC)
        .max_delay(Duration::from_secs(10))
        .first_reconnect_window(Duration::ZERO)
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

// ---------------------------------------------------------------------------------------------
// Reset on evidence, the first-reconnect window, Retry-After and 1013
// ---------------------------------------------------------------------------------------------

/// Runs a stream over `script` (reading everything) until `opens` connections opened, and
/// returns the gaps between factory calls in milliseconds.
async fn gaps_until_open(
    script: &std::sync::Arc<Script>,
    config: ReconnectConfig,
    opens: u64,
) -> Vec<u128> {
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut on_open = stream.on_open();
    let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
    for n in 1..=opens {
        assert_eq!(on_open.recv().await.unwrap().connection, n);
    }
    driver.abort();
    script.gaps_ms()
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_made_progress_restarts_the_schedule() {
    // Three refusals climb the schedule (window, 1 s, 1.3 s); then connections that each deliver
    // a message and die 300 ms later, as a busy server with periodic drops does.
    let mut outcomes = vec![Outcome::Fail, Outcome::Fail, Outcome::Fail];
    outcomes.extend(std::iter::repeat_n(open(1, ms(300)), 8));
    let script = Script::new(outcomes);
    let config = ReconnectConfig::builder()
        .min_delay(SEC)
        .max_delay(Duration::from_secs(10))
        .seed(7)
        .build()
        .unwrap();
    let gaps = gaps_until_open(&script, config, 8).await;
    // Calls: 3 failures, then the 8 connections; gaps[3] leads to the first open.
    assert_eq!(gaps.len(), 10, "{gaps:?}");
    assert!(
        gaps[1] >= 1000 && gaps[2] >= 1300,
        "no progress yet: {gaps:?}"
    );
    // Each later gap is the connection's 300 ms, then a first reconnect within an eighth of
    // it (37.5 ms, rounded up to the timer's millisecond): not the 1.69 s, 2.2 s … of a schedule
    // that kept climbing.
    for gap in &gaps[4..] {
        assert!((300..=339).contains(gap), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_made_no_progress_keeps_climbing() {
    // The same short connections, but silent: nothing proves them, so the schedule grows.
    let script = Script::new(std::iter::repeat_n(open(0, ms(300)), 6));
    let gaps = gaps_until_open(&script, base().build().unwrap(), 6).await;
    assert_eq!(gaps, [300, 1300, 1600, 1990, 2497], "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn error_answers_and_pongs_are_not_progress() {
    // Each connection sends a refused publish's answer and an error object, is pinged and
    // answers, then closes: none of it counts.
    let answer = r#"{"result":"send-error:8","errorMsg":"broker is overloaded","context":"1"}"#;
    let error = r#"{"errorMsg":"not allowed"}"#;
    let script = Script::new(std::iter::repeat_n(
        Outcome::Raw {
            texts: vec![answer, error],
            uptime: ms(300),
        },
        5,
    ));
    let config = base()
        .ping_interval(ms(100))
        .pong_timeout(ms(100))
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let mut closes = stream.on_close();
    let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
    for _ in 0..4 {
        let close = closes.recv().await.unwrap();
        assert!(!close.progress, "{close:?}");
    }
    driver.abort();
    let gaps = script.gaps_ms();
    assert_eq!(&gaps[..3], [300, 1300, 1600], "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_flapping_server_gets_no_more_handshakes_than_before() {
    // A server that accepts and drops at once, or answers only errors and drops: with the
    // defaults (any seed), at most 9 handshakes in 20 s, as before progress counted.
    for seed in 0..20 {
        for errors_only in [false, true] {
            let outcome = if errors_only {
                Outcome::Raw {
                    texts: vec![r#"{"errorMsg":"no"}"#],
                    uptime: Duration::ZERO,
                }
            } else {
                open(0, Duration::ZERO)
            };
            let script = Script::new(std::iter::repeat_n(outcome, 100));
            let config = ReconnectConfig::builder().seed(seed).build().unwrap();
            let mut stream = ReconnectingStream::with_config(script.factory(), config);
            let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
            tokio::time::sleep(Duration::from_secs(20)).await;
            driver.abort();
            let calls = script.calls().len();
            assert!(
                calls <= 9,
                "seed {seed}, errors {errors_only}: {calls} handshakes in 20 s"
            );
            assert!(calls >= 7, "seed {seed}: {calls}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fleet_spreads_its_first_reconnect_over_the_window() {
    // 500 streams with the defaults, each with its own seed, all dropped at the same instant
    // after 10 s up: the first reconnects spread over [0, 580 ms].
    let mut scripts = Vec::new();
    let mut drivers = Vec::new();
    for seed in 0..500u64 {
        let script = Script::new([
            open(0, Duration::from_secs(10)),
            open(0, Duration::from_secs(3600)),
        ]);
        let config = ReconnectConfig::builder().seed(seed).build().unwrap();
        let mut stream = ReconnectingStream::with_config(script.factory(), config);
        drivers.push(tokio::spawn(async move {
            while stream.next().await.is_some() {}
        }));
        scripts.push(script);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut bins = [0usize; 6];
    for script in &scripts {
        let gaps = script.gaps_ms();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        let after_drop = gaps[0] - 10_000;
        assert!(after_drop <= 581, "{after_drop} ms after the drop");
        bins[(after_drop / 100).min(5) as usize] += 1;
    }
    for d in drivers {
        d.abort();
    }
    // About 86 in each 100 ms (17%); never a fifth of the fleet.
    assert!(bins.iter().all(|b| *b < 100), "{bins:?}");
    assert!(bins[..5].iter().all(|b| *b > 60), "{bins:?}");
}

#[tokio::test(start_paused = true)]
async fn a_zero_window_makes_the_first_reconnect_immediate() {
    let script = Script::new([
        open(0, Duration::from_secs(10)),
        open(0, Duration::from_secs(3600)),
    ]);
    let config = ReconnectConfig::builder()
        .first_reconnect_window(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(gaps_until_open(&script, config, 2).await, [10_000]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_and_503_is_honoured_and_capped() {
    for (status, after, want) in [
        (503, Duration::from_secs(3), 3000),
        (429, Duration::from_secs(7), 7000),
        // Capped by the 10 s maximum.
        (503, Duration::from_secs(3600), 10_000),
        // Shorter than the schedule: the schedule wins.
        (503, ms(1), 0),
    ] {
        let script = Script::new([
            Outcome::Refuse {
                status,
                retry_after: Some(after),
            },
            open(0, Duration::from_secs(3600)),
        ]);
        let gaps = gaps_until_open(&script, base().build().unwrap(), 1).await;
        assert_eq!(gaps, [want.max(1)], "{status} Retry-After {after:?}");
    }
    // Only 429 and 503 carry a wait the stream honours.
    let script = Script::new([
        Outcome::Refuse {
            status: 500,
            retry_after: Some(Duration::from_secs(5)),
        },
        open(0, Duration::from_secs(3600)),
    ]);
    assert_eq!(
        gaps_until_open(&script, base().build().unwrap(), 1).await,
        [0]
    );
}

#[tokio::test(start_paused = true)]
async fn close_1013_waits_at_least_the_minimum_despite_progress() {
    let script = Script::new([
        Outcome::CloseWith {
            frames: 1,
            uptime: ms(100),
            code: 1013,
        },
        Outcome::CloseWith {
            frames: 1,
            uptime: ms(100),
            code: 1000,
        },
        open(0, Duration::from_secs(3600)),
    ]);
    let mut stream = ReconnectingStream::with_config(script.factory(), base().build().unwrap());
    let mut errors = stream.on_error();
    let mut closes = stream.on_close();
    let mut opens = stream.on_open();
    let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
    for n in 1..=3 {
        assert_eq!(opens.recv().await.unwrap().connection, n);
    }
    driver.abort();
    // 1013: the minimum (1 s) after the close, though the connection made progress; 1000 after
    // progress: at once.
    assert_eq!(script.gaps_ms(), [1100, 100]);
    let closes = drain(&mut closes);
    assert_eq!(closes[0].code, Some(stream_websocket::CloseCode::Again));
    assert!(closes[0].progress && closes[0].reconnect);
    // An overloaded server is worth an alarm; a normal close is not.
    let errors = drain(&mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].close_code(),
        Some(stream_websocket::CloseCode::Again)
    );
}

#[tokio::test(start_paused = true)]
async fn a_classifier_can_end_the_stream_on_an_application_close_code() {
    let script = Script::new([Outcome::CloseWith {
        frames: 1,
        uptime: ms(100),
        code: 4001,
    }]);
    let config = base()
        .classify(|e| match e.close_code().map(u16::from) {
            Some(4001) => Disposition::Stop,
            _ => e.default_disposition(),
        })
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    assert!(matches!(
        stream.next().await,
        Some(Ok(Incoming::Message(_)))
    ));
    let end = stream.next().await;
    assert!(
        matches!(&end, Some(Err(e)) if e.close_code() == Some(stream_websocket::CloseCode::Library(4001))),
        "{end:?}"
    );
    assert!(stream.next().await.is_none());
    assert_eq!(script.calls().len(), 1);
}
