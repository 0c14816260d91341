//! Settings at their extremes: each is either refused by `build()` with an error naming it, or
//! works (no panic, no spin), in virtual time.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use stream_websocket::Listen;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use stream_websocket::{ConfigError, Error, Jitter, ReconnectConfig, ReconnectingStream};
use support::{Outcome, Script, Ws};

/// A factory that always fails at once, counting its calls.
fn failing(calls: Arc<AtomicUsize>) -> impl FnMut() -> BoxFuture<'static, Result<Ws, Error>> {
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()) }.boxed()
    }
}

#[test]
fn a_zero_minimum_delay_is_refused_by_name() {
    let zero = Duration::ZERO;
    for builder in [
        ReconnectConfig::builder().min_delay(zero).max_delay(zero),
        ReconnectConfig::builder().min_delay(zero),
        ReconnectConfig::builder().min_delay_range(zero, Duration::from_secs(1)),
    ] {
        assert_eq!(builder.build().unwrap_err(), ConfigError::Zero("min_delay"));
    }
    let text = ConfigError::Zero("min_delay").to_string();
    assert!(text.contains("min_delay"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn one_poll_makes_at_most_two_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_nanos(1))
        .max_delay(Duration::from_nanos(1))
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(failing(calls.clone()), config);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    assert!(stream.poll_next_unpin(&mut cx).is_pending());
    let after_one_poll = calls.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&after_one_poll),
        "{after_one_poll} attempts in one poll"
    );
    // It keeps going across polls (the delays pass in virtual time).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(stream.poll_next_unpin(&mut cx).is_pending());
    }
    assert!(calls.load(Ordering::SeqCst) > after_one_poll);
}

#[tokio::test(start_paused = true)]
async fn maximal_keepalive_durations_work() {
    let script = Script::new([Outcome::Open {
        frames: 3,
        uptime: Duration::from_secs(60),
        close: true,
    }]);
    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_secs(1))
        .ping_interval(Duration::MAX)
        .pong_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .min_uptime(Duration::MAX)
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    for _ in 0..3 {
        assert!(stream.next().await.unwrap().is_ok());
    }
    // The server closes after a minute; the script then refuses with 401, which ends it.
    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(end.http_status(), Some(401), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn every_jitter_works_with_a_maximal_delay() {
    let jitters = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Proportional(1.0),
    ];
    // Several seeds, so that proportional jitter draws factors above 1 too.
    for (jitter, seed) in jitters
        .into_iter()
        .flat_map(|j| (0..8).map(move |s| (j, s)))
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let config = ReconnectConfig::builder()
            .min_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .first_reconnect_window(Duration::ZERO)
            .jitter(jitter)
            .seed(seed)
            .build()
            .unwrap();
        let mut stream = ReconnectingStream::with_config(failing(calls.clone()), config);
        let mut reconnecting = stream.on_reconnecting();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // Attempt, immediate retry, then a wait of up to `Duration::MAX`.
        for _ in 0..3 {
            assert!(matches!(stream.poll_next_unpin(&mut cx), Poll::Pending));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{jitter:?}");
        let delays: Vec<Duration> = std::iter::from_fn(|| reconnecting.try_recv().ok())
            .map(|e| e.delay)
            .collect();
        assert_eq!(delays.len(), 2, "{jitter:?}");
        assert_eq!(delays[0], Duration::ZERO);
    }
}

/// A stream whose connections all stall (the server reads nothing, so 100 KiB items fill the
/// pipe and are never flushed) and die by keepalive: each dead connection hands back what it
/// held.
#[tokio::test(start_paused = true)]
async fn handed_back_items_count_against_the_queue_bound() {
    use futures::SinkExt;
    use stream_websocket::{Outgoing, Publish, UnsentPolicy};

    let stall = Outcome::Stall {
        uptime: Duration::from_secs(3600),
    };
    let script = Script::new(std::iter::repeat_n(stall, 20));
    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(5))
        .pong_timeout(Duration::from_secs(5))
        .queue_capacity(4)
        .unsent_policy(UnsentPolicy::HandBack)
        .build()
        .unwrap();
    let mut stream = ReconnectingStream::with_config(script.factory(), config);
    let big =
        |i: usize| Outgoing::Publish(Publish::new(vec![b'x'; 100 * 1024]).context(i.to_string()));
    let mut accepted = 0;
    for i in 0..12 {
        let fed = tokio::time::timeout(Duration::from_secs(60), stream.feed(big(i))).await;
        match fed {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
    }
    let unsent = stream.take_unsent();
    assert!(
        accepted <= 4 && unsent.len() + stream.pending() <= 4,
        "accepted {accepted}, {} handed back, {} pending: beyond the bound of 4",
        unsent.len(),
        stream.pending()
    );
    assert!(
        !unsent.is_empty(),
        "the dead connection handed its items back"
    );
    // Taking them frees the room: the next item is accepted at once.
    let fed = tokio::time::timeout(Duration::from_millis(1), stream.feed(big(99))).await;
    assert!(matches!(fed, Ok(Ok(()))), "{fed:?}");
}

#[test]
fn a_consumer_always_requeues_its_acks() {
    use stream_websocket::gdn::Consumer;
    use stream_websocket::UnsentPolicy;

    let config = ReconnectConfig::builder()
        .unsent_policy(UnsentPolicy::HandBack)
        .build()
        .unwrap();
    let consumer = Consumer::with_config(failing(Arc::default()), config);
    assert_eq!(consumer.config().unsent_policy(), UnsentPolicy::Requeue);
}
