//! A fault-injecting TCP proxy to put between a client and a server in tests.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How [`FaultProxy::cut_all`] ends connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// An abortive close: the peers see "connection reset".
    Reset,
    /// An orderly close (FIN) in both directions.
    Fin,
}

/// What the proxy does with bytes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Mode {
    /// Keep connections open but forward nothing (half-open).
    blackhole: bool,
    /// Wait this long before forwarding each chunk.
    delay: Option<Duration>,
    /// Forward at most this many bytes per second, per direction.
    throttle: Option<u64>,
    /// Accept new connections and reset them at once.
    refuse: bool,
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Mode>,
    /// Connections whose handshake must be cut: how many more.
    cut_handshakes: AtomicUsize,
    /// Live connections, by id, with the sender that cuts them.
    live: Mutex<HashMap<u64, watch::Sender<Option<Cut>>>>,
    accepted: AtomicU64,
    next_id: AtomicU64,
    /// SplitMix64 state: the proxy's only source of randomness, so runs repeat when seeded.
    rng: Mutex<u64>,
}

impl Shared {
    fn random(&self, below: u64) -> u64 {
        let mut s = self.rng.lock().expect("proxy rng");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below.max(1)
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().expect("proxy mode")
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to a target and injects faults on command: cut every
/// connection (reset or FIN), blackhole (half-open), delay or throttle bytes, cut connections in
/// the middle of the WebSocket handshake, refuse new connections.
///
/// Its random choices (where a handshake is cut) come from a seed, so a test run repeats exactly.
/// Dropping the proxy stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("mode", &self.shared.mode())
            .field("live", &self.live_connections())
            .finish()
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    ///
    /// # Errors
    ///
    /// If the listening socket cannot be bound.
    pub async fn start(target: SocketAddr, seed: u64) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(seed),
            ..Shared::default()
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>`, for WebSocket clients.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Ends every live connection now.
    pub fn cut_all(&self, how: Cut) {
        for cut in self.shared.live.lock().expect("proxy live").values() {
            let _ = cut.send(Some(how));
        }
    }

    /// While on, connections stay open but no byte is forwarded either way (what a client sees
    /// when the peer vanished without a FIN).
    pub fn blackhole(&self, on: bool) {
        self.shared.mode.lock().expect("proxy mode").blackhole = on;
    }

    /// Delays every forwarded chunk by `delay` (`None`: no delay).
    pub fn delay(&self, delay: Option<Duration>) {
        self.shared.mode.lock().expect("proxy mode").delay = delay;
    }

    /// Limits each direction of each connection to this many bytes per second (`None`: no limit).
    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        self.shared.mode.lock().expect("proxy mode").throttle = bytes_per_second.map(|b| b.max(1));
    }

    /// The next `n` connections are cut in the middle of the server's handshake answer, after a
    /// (seeded) random number of its bytes.
    pub fn cut_handshakes(&self, n: usize) {
        self.shared.cut_handshakes.store(n, Ordering::SeqCst);
    }

    /// While on, new connections are accepted and reset at once (the server is never contacted).
    pub fn refuse(&self, on: bool) {
        self.shared.mode.lock().expect("proxy mode").refuse = on;
    }

    /// Connections open through the proxy right now.
    pub fn live_connections(&self) -> usize {
        self.shared.live.lock().expect("proxy live").len()
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all(Cut::Reset);
    }
}

/// Sends RST instead of FIN when the socket is dropped. A zero linger is an abortive close: it
/// does not block, which is what tokio's deprecation of `set_linger` warns about.
#[allow(deprecated)]
fn reset_on_drop(socket: &TcpStream) {
    let _ = socket.set_linger(Some(Duration::ZERO));
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.mode().refuse {
            reset_on_drop(&client);
            drop(client);
            continue;
        }
        tokio::spawn(relay(client, target, shared.clone()));
    }
}

/// Forwards one connection both ways until either side ends or it is cut.
async fn relay(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(target).await else {
        reset_on_drop(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (cut_tx, mut cut_rx) = watch::channel(None);
    shared.live.lock().expect("proxy live").insert(id, cut_tx);

    // Cut this one's handshake? Then forward only part of the server's first answer.
    let handshake_limit = shared
        .cut_handshakes
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .ok()
        .map(|_| 1 + shared.random(40) as usize);

    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let ending = {
        let upstream = pump(&mut client_read, &mut server_write, &shared, None);
        let downstream = pump(
            &mut server_read,
            &mut client_write,
            &shared,
            handshake_limit,
        );
        let cut = async {
            while cut_rx.changed().await.is_ok() {
                if let Some(how) = *cut_rx.borrow() {
                    return how;
                }
            }
            std::future::pending().await
        };
        tokio::pin!(upstream, downstream, cut);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            // A direction that closed (FIN) lets the other finish; an error or a handshake cut
            // ends both at once.
            tokio::select! {
                r = &mut upstream, if !up_done => match r {
                    Ok(Flow::Closed) => up_done = true,
                    _ => break Cut::Reset,
                },
                r = &mut downstream, if !down_done => match r {
                    Ok(Flow::Closed) => down_done = true,
                    _ => break Cut::Reset,
                },
                how = &mut cut => break how,
            }
            if up_done && down_done {
                break Cut::Fin;
            }
        }
    };
    if ending == Cut::Reset {
        // SO_LINGER 0: closing sends RST instead of FIN.
        reset_on_drop(client_write.as_ref());
        reset_on_drop(server_write.as_ref());
    }
    drop((client_read, client_write, server_read, server_write));
    shared.live.lock().expect("proxy live").remove(&id);
}

/// How one direction ended.
enum Flow {
    /// The sender closed its side.
    Closed,
    /// The byte limit was reached: the connection must be reset.
    Cut,
}

/// Copies bytes one way, honouring the mode; after `limit` bytes (if given) it stops and asks
/// for the connection to be reset.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    limit: Option<usize>,
) -> io::Result<Flow> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded = 0usize;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(Flow::Closed);
        }
        let mode = shared.mode();
        if mode.blackhole {
            continue; // swallowed: the other side never hears of it
        }
        let mut chunk = &buf[..n];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(forwarded);
            if chunk.len() >= room {
                to.write_all(&chunk[..room]).await?;
                return Ok(Flow::Cut);
            }
        }
        if let Some(d) = mode.delay {
            tokio::time::sleep(d).await;
        }
        while !chunk.is_empty() {
            let take = match mode.throttle {
                // Send in slices of a tenth of a second's worth.
                Some(bps) => chunk.len().min((bps / 10).max(1) as usize),
                None => chunk.len(),
            };
            to.write_all(&chunk[..take]).await?;
            forwarded += take;
            chunk = &chunk[take..];
            if let Some(bps) = mode.throttle {
                tokio::time::sleep(Duration::from_secs_f64(take as f64 / bps as f64)).await;
            }
        }
    }
}
