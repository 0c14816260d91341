//! Opening a `tokio-tungstenite` connection, for use inside a connection factory.

use std::fmt;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
pub use tokio_tungstenite::Connector;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::Error;
use crate::redact::redact_url;

/// The connection [`connect`] opens: a WebSocket over plain TCP or TLS.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket connection (TCP, TLS for `wss://`, handshake) with tungstenite's default
/// limits (64 MiB messages, 16 MiB frames; GDN / Pulsar messages need up to about 8 MiB).
///
/// Meant to be called from a connection factory:
///
/// ```no_run
/// use stream_websocket::{connect, ReconnectingStream};
///
/// let url = "wss://example.com/ws/v2/consumer/persistent/t/ns/topic/sub".to_string();
/// let stream = ReconnectingStream::new(move || connect(url.clone()));
/// ```
///
/// The URL is logged (at debug level) with its credentials redacted ([`redact_url`]).
/// A request with headers (e.g. `Authorization`) can be passed instead of a URL; headers are never
/// logged.
///
/// # Errors
///
/// [`Error::Url`] for a URL that cannot be used, [`Error::Io`] when the TCP connection fails,
/// [`Error::Tls`] for TLS failures and [`Error::Http`] when the server refuses the handshake.
pub async fn connect<R>(request: R) -> Result<WsStream, Error>
where
    R: IntoClientRequest + Unpin,
{
    connect_with_config(request, WebSocketConfig::default()).await
}

/// [`connect`] with explicit tungstenite limits (maximum message and frame size, buffers).
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with_config<R>(request: R, config: WebSocketConfig) -> Result<WsStream, Error>
where
    R: IntoClientRequest + Unpin,
{
    connect_with(request, ConnectOptions::new().websocket_config(config)).await
}

/// How [`connect_with`] opens a connection: tungstenite limits and the TLS connector.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    websocket: WebSocketConfig,
    connector: Option<Connector>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("websocket", &self.websocket)
            .field("custom_tls", &self.connector.is_some())
            .finish()
    }
}

impl ConnectOptions {
    /// tungstenite's default limits and the default TLS setup (rustls with the webpki roots, or
    /// native-tls, whichever feature is enabled).
    pub fn new() -> Self {
        Self::default()
    }

    /// tungstenite limits: maximum message and frame size, buffer sizes.
    /// Default: `WebSocketConfig::default()` (64 MiB messages, 16 MiB frames).
    pub fn websocket_config(mut self, config: WebSocketConfig) -> Self {
        self.websocket = config;
        self
    }

    /// A TLS connector of your own: for example rustls with a private root store, or client
    /// certificates. Default: the enabled TLS feature's standard setup.
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// rustls with this client configuration (a custom root store, for instance).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn rustls(self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.connector(Connector::Rustls(config))
    }
}

/// [`connect`] with [`ConnectOptions`].
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with<R>(request: R, options: ConnectOptions) -> Result<WsStream, Error>
where
    R: IntoClientRequest + Unpin,
{
    let request = request.into_client_request()?;
    let uri = request.uri().to_string();
    tracing::debug!(url = %redact_url(&uri), "opening WebSocket");
    #[cfg(feature = "rustls")]
    if request.uri().scheme_str() == Some("wss") {
        // Use ring unless the application installed a provider of its own. Ignoring the result is
        // right: it only fails when a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    let (ws, response) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(options.websocket),
        true,
        options.connector,
    )
    .await?;
    // Without a TLS feature the only connector is `Plain`, which is what this does.
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    let (ws, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(options.websocket), true)
            .await?;
    tracing::debug!(
        status = response.status().as_u16(),
        "WebSocket handshake complete"
    );
    Ok(ws)
}
