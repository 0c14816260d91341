//! A fleet of 500 streams on real sockets (127.0.0.1) whose server drops them all at once, then
//! refuses every handshake with 503 for a second, then accepts again: with the defaults, the
//! reconnects spread over the first-reconnect window instead of arriving together.
//!
//! Real time, because the spread is about when handshakes reach a real server; every wait is
//! for something to happen (bounded by `bounded`), never a sleep standing in for it.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use stream_websocket::{ReconnectConfig, ReconnectingStream};
use support::{ms, ServerWs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

const FLEET: usize = 500;
const REFUSAL: Duration = Duration::from_secs(1);

/// The server's side of the test: it holds every accepted connection (so that it can drop them
/// all at once), refuses handshakes with 503 while `refusing`, and records when each handshake
/// arrived and whether it was accepted.
#[derive(Default)]
struct Server {
    refusing: AtomicBool,
    open: Mutex<Vec<ServerWs>>,
    arrivals: Mutex<Vec<(Instant, bool)>>,
    changed: Notify,
}

impl Server {
    fn accepted(&self) -> usize {
        self.arrivals.lock().unwrap().iter().filter(|a| a.1).count()
    }

    async fn wait_until(&self, done: impl Fn(&Server) -> bool) {
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let server = server.clone();
        tokio::spawn(async move {
            if server.refusing.load(Ordering::SeqCst) {
                server
                    .arrivals
                    .lock()
                    .unwrap()
                    .push((Instant::now(), false));
                server.changed.notify_waiters();
                // Read the request head, then refuse it.
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = tcp.write_all(reply.as_bytes()).await;
                return;
            }
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            server.open.lock().unwrap().push(ws);
            server.arrivals.lock().unwrap().push((Instant::now(), true));
            server.changed.notify_waiters();
        });
    }
}

/// Connects the fleet, drops it, refuses for [`REFUSAL`], accepts again; returns every handshake
/// after the drop, as (time since the drop, accepted), and the time from the server's return
/// until the whole fleet was back.
async fn mass_drop(config: ReconnectConfig) -> (Vec<(Duration, bool)>, Duration) {
    // One fleet at a time: two at once would share the machine's cores (and the process-wide
    // sequence that places first reconnects).
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server = Arc::new(Server::default());
    let accept_loop = tokio::spawn(serve(listener, server.clone()));

    let mut fleet = Vec::new();
    for _ in 0..FLEET {
        let url = url.clone();
        let mut stream = ReconnectingStream::with_config(
            move || stream_websocket::connect(url.clone()),
            config.clone(),
        );
        fleet.push(tokio::spawn(async move {
            while stream.next().await.is_some() {}
        }));
    }
    server.wait_until(|s| s.accepted() == FLEET).await;

    // Every connection goes at once; every handshake is refused until the server returns.
    server.refusing.store(true, Ordering::SeqCst);
    let dropped_at = Instant::now();
    server.open.lock().unwrap().clear();
    server
        .wait_until(|s| s.arrivals.lock().unwrap().len() >= 2 * FLEET)
        .await;
    // The whole fleet has tried (and been refused) once: the server returns a second after
    // the drop, or at once if that took longer.
    tokio::time::sleep_until(dropped_at + REFUSAL).await;
    let returned_at = Instant::now();
    server.refusing.store(false, Ordering::SeqCst);
    server.wait_until(|s| s.accepted() == 2 * FLEET).await;
    let back_after = server
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.1)
        .map(|a| a.0)
        .max()
        .unwrap()
        - returned_at;

    for task in fleet {
        task.abort();
    }
    accept_loop.abort();
    let arrivals = server.arrivals.lock().unwrap();
    let after_drop = arrivals
        .iter()
        .filter(|a| a.0 >= dropped_at)
        .map(|(at, ok)| (*at - dropped_at, *ok))
        .collect();
    (after_drop, back_after)
}

/// The most handshakes in any 100 ms window, sliding by 10 ms.
fn peak_per_100ms(arrivals: &[(Duration, bool)]) -> usize {
    let last = arrivals.iter().map(|a| a.0).max().unwrap_or_default();
    let mut peak = 0;
    let mut from = Duration::ZERO;
    while from <= last {
        let n = arrivals
            .iter()
            .filter(|a| a.0 >= from && a.0 < from + ms(100))
            .count();
        peak = peak.max(n);
        from += ms(10);
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_loses_its_server_comes_back_spread_out() {
    let (arrivals, back_after) = support::bounded(mass_drop(ReconnectConfig::default())).await;
    let accepted = arrivals.iter().filter(|a| a.1).count();
    assert_eq!(accepted, FLEET, "every stream came back once");
    // The refused first reconnects spread evenly over the 580 ms window: about 17% of the fleet
    // per 100 ms (the rest of a fifth is for the scheduler of a loaded machine).
    let first: Vec<(Duration, bool)> = arrivals.iter().filter(|a| !a.1).copied().collect();
    let peak = peak_per_100ms(&first);
    assert!(
        peak <= FLEET / 5,
        "{peak} of {FLEET} reconnects in one 100 ms window"
    );
    let latest = first.iter().map(|a| a.0).max().unwrap();
    assert!(
        latest >= ms(450),
        "the window was not used: all within {latest:?}"
    );
    // Everything, refusals and returns, stays spread; all are back well within max_delay
    // (10 s) of the server's return.
    let peak = peak_per_100ms(&arrivals);
    assert!(peak <= FLEET / 5, "{peak} handshakes in one 100 ms window");
    assert!(
        back_after <= Duration::from_secs(10),
        "back after {back_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_window_the_fleet_stampedes() {
    // The contrast that shows the test above can fail: an immediate first reconnect brings the
    // fleet back all at once.
    let config = ReconnectConfig::builder()
        .first_reconnect_window(Duration::ZERO)
        .build()
        .unwrap();
    let (arrivals, _) = support::bounded(mass_drop(config)).await;
    // The test above fails without the window: more than a fifth of the fleet lands in one
    // 100 ms (83% in the first 100 ms measured on 2 cores in a debug build; an instant
    // stampede is spread only by how fast the machine connects 500 sockets).
    let first: Vec<(Duration, bool)> = arrivals.iter().filter(|a| !a.1).copied().collect();
    let peak = peak_per_100ms(&first);
    assert!(peak > FLEET / 5, "{peak} of {FLEET} in the busiest 100 ms");
}
