//! [`EchoServer`]: a WebSocket server that sends every text and binary message back, for users
//! of [`RawCodec`](stream_websocket::RawCodec) and their tests.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server on `127.0.0.1` that echoes every text and binary message on the same
/// connection, answers pings (tungstenite does) and closes when the client does. Any path is
/// accepted. A cheap, cloneable handle: [`shutdown`](Self::shutdown) from any handle stops it,
/// and so does dropping the last one.
#[derive(Clone)]
pub struct EchoServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoServer")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl EchoServer {
    /// Starts one on `127.0.0.1` and a free port.
    ///
    /// # Errors
    ///
    /// The I/O error if the socket cannot be bound.
    pub async fn start() -> io::Result<EchoServer> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let stop = watch::Sender::new(false);
        tokio::spawn(serve(listener, stop.subscribe()));
        Ok(EchoServer {
            inner: Arc::new(Inner { addr, stop }),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `ws://127.0.0.1:<port>/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.inner.addr)
    }

    /// Stops accepting and drops every connection.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}

async fn serve(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                conns.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if matches!(msg, Message::Text(_) | Message::Binary(_))
                            && ws.send(msg).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Dropping the set aborts the connections.
}
