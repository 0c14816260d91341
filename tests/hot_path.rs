//! The write path against a scripted in-memory transport whose every call is counted: fed items
//! wait in order until a flush writes them, and nothing written is lost when the connection
//! fails.
mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use stream_websocket::Listen;

use futures::{future, FutureExt, Sink, SinkExt, Stream, StreamExt};
use stream_websocket::tungstenite::{self, Message};
use stream_websocket::{Error, RawCodec, ReconnectConfig, ReconnectingStream};
use support::{bounded, drain};

/// One scripted connection, shared by the transport and the test.
#[derive(Default)]
struct Wire {
    /// What the peer sent and the stream has not read yet.
    incoming: VecDeque<Message>,
    /// The waker of the last read that found nothing.
    read_waker: Option<Waker>,
    /// How many times the stream polled for a message.
    reads: usize,
    /// What the stream wrote, and how much of it a flush completed.
    written: Vec<String>,
    flushed: usize,
    /// `start_send` fails (once) instead of taking the message.
    fail_next_send: bool,
    /// Flushes stay pending (the peer is not reading).
    flush_blocked: bool,
}

impl Wire {
    /// Delivers `message` to the stream and wakes it, as a socket would.
    fn deliver(&mut self, message: Message) {
        self.incoming.push_back(message);
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }
}

struct Scripted(Arc<Mutex<Wire>>);

impl Stream for Scripted {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut wire = self.0.lock().unwrap();
        wire.reads += 1;
        match wire.incoming.pop_front() {
            Some(message) => Poll::Ready(Some(Ok(message))),
            None => {
                wire.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Sink<Message> for Scripted {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let mut wire = self.0.lock().unwrap();
        if std::mem::take(&mut wire.fail_next_send) {
            return Err(tungstenite::Error::AlreadyClosed);
        }
        wire.written
            .push(item.into_text().unwrap().as_str().to_string());
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut wire = self.0.lock().unwrap();
        if wire.flush_blocked {
            // Tests unblock it only together with a delivery, which wakes the stream anyway.
            return Poll::Pending;
        }
        wire.flushed = wire.written.len();
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_flush(cx)
    }
}

/// A stream over these connections, one per attempt, in order (then none: later attempts fail).
fn stream_over(
    wires: &[Arc<Mutex<Wire>>],
) -> ReconnectingStream<impl stream_websocket::Connect<Transport = Scripted>, RawCodec> {
    let mut wires: VecDeque<_> = wires.iter().cloned().collect();
    let factory = move || {
        future::ready(
            wires
                .pop_front()
                .map(Scripted)
                .ok_or_else(|| std::io::Error::other("no more scripted connections")),
        )
    };
    ReconnectingStream::with_codec(factory, ReconnectConfig::default(), RawCodec)
}

/// Polls `f` once: whether it is still pending.
fn pending<F: std::future::Future>(f: F) -> bool {
    f.now_or_never().is_none()
}

fn wire() -> Arc<Mutex<Wire>> {
    Arc::new(Mutex::new(Wire::default()))
}

/// Asserts that `conn` was written exactly `items`, and that a flush completed all of them.
fn assert_delivered(conn: &Mutex<Wire>, items: &[&str]) {
    let wire = conn.lock().unwrap();
    assert_eq!(wire.written, items);
    assert_eq!(wire.flushed, items.len());
}

fn text(item: Option<Result<Message, stream_websocket::Error>>) -> String {
    item.expect("a message")
        .expect("not an error")
        .into_text()
        .unwrap()
        .as_str()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn fed_items_wait_in_order_until_a_flush_writes_them() {
    bounded(async {
        let conn = wire();
        let mut stream = stream_over(std::slice::from_ref(&conn));
        stream.flush().await.expect("connected");
        stream.feed(Message::text("a")).await.unwrap();
        stream.feed(Message::text("b")).await.unwrap();
        assert!(
            conn.lock().unwrap().written.is_empty(),
            "queued, not written"
        );
        assert_eq!(stream.pending(), 2);
        stream.flush().await.unwrap();
        assert_delivered(&conn, &["a", "b"]);
        assert_eq!(stream.pending(), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_item_whose_write_fails_goes_out_on_the_next_connection() {
    bounded(async {
        let (first, second) = (wire(), wire());
        first.lock().unwrap().fail_next_send = true;
        let mut stream = stream_over(&[first.clone(), second.clone()]);
        let mut errors = stream.on_error();
        stream.flush().await.expect("connected");

        // The write fails inside the flush, which reconnects and writes it again.
        stream.send(Message::text("x")).await.unwrap();
        assert!(first.lock().unwrap().written.is_empty());
        assert_delivered(&second, &["x"]);
        assert_eq!(stream.connections(), 2);
        let errors = drain(&mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn items_unflushed_when_the_peer_closes_go_out_on_the_next_connection() {
    bounded(async {
        let (first, second) = (wire(), wire());
        first.lock().unwrap().flush_blocked = true;
        let mut stream = stream_over(&[first.clone(), second.clone()]);
        let mut closes = stream.on_close();
        stream.flush().await.expect("connected");

        stream.feed(Message::text("y")).await.unwrap();
        assert!(pending(stream.flush()), "the peer is not reading");
        {
            // The peer's Close arrives, and from now on its socket would take a flush.
            let mut wire = first.lock().unwrap();
            wire.flush_blocked = false;
            wire.deliver(Message::Close(None));
        }
        second.lock().unwrap().deliver(Message::text("after"));
        assert_eq!(text(stream.next().await), "after");

        // Written to the first connection, never flushed there: its Close reply, which would
        // have flushed it to a peer that stopped reading, was not sent.
        assert_eq!(first.lock().unwrap().flushed, 0);
        stream.flush().await.unwrap();
        assert_delivered(&second, &["y"]);
        let closes = drain(&mut closes);
        assert_eq!(closes.len(), 1, "{closes:?}");
        assert!(
            matches!(closes[0].error, Some(Error::ConnectionClosed { .. })),
            "a clean close: {closes:?}"
        );
    })
    .await;
}
