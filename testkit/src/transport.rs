//! The byte streams a connection runs on: plain TCP or TLS on the same port (a TLS client's
//! first byte is 0x16, a handshake record), and the server's certificate and key.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use stream_websocket::Secret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// A TLS certificate chain and private key for [`LocalServer`](crate::LocalServer), PEM
/// encoded: generated ([`TlsIdentity::generate`]) or loaded ([`TlsIdentity::from_pem`]), and
/// given to [`ServerConfig::tls_identity`](crate::ServerConfig::tls_identity) so that a server
/// keeps its certificate across restarts.
///
/// `Debug` never prints the private key.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: String,
    key_pem: Secret,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

impl TlsIdentity {
    /// Generates a new key pair (ECDSA P-256) and a self-signed certificate for `127.0.0.1`,
    /// `::1` and `localhost`, what a server with [TLS](crate::ServerConfig::tls) on and no
    /// identity given makes at start.
    ///
    /// # Errors
    ///
    /// If key generation fails (it does not in practice).
    pub fn generate() -> io::Result<TlsIdentity> {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        Ok(TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: Secret::new(signing_key.serialize_pem()),
        })
    }

    /// A certificate chain (one or more `CERTIFICATE` blocks, the server's first) and its
    /// private key (PKCS#8, PKCS#1 or SEC1 PEM), checked: both must parse and the key must
    /// belong to the first certificate.
    ///
    /// # Errors
    ///
    /// `InvalidData` naming what is wrong (never the key's content).
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> io::Result<Self> {
        let identity = TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: Secret::new(key_pem),
        };
        identity.acceptor()?;
        Ok(identity)
    }

    /// The certificate chain, PEM encoded: what clients should trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM encoded. Keep it secret: write it only to a file no one else can
    /// read.
    pub fn key_pem(&self) -> &str {
        self.key_pem.expose()
    }

    /// A TLS 1.2/1.3 acceptor that serves this identity and offers `http/1.1`.
    fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("the certificate is not valid PEM"))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in the certificate PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
            .map_err(|_| bad("no valid private key in the key PEM"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                bad(&format!(
                    "the key and certificate do not make a TLS identity: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The certificate a server serves and the acceptor that serves it.
pub(crate) struct Identity {
    pub(crate) cert_pem: String,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key never leaves the acceptor; the certificate is public.
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// Serves `identity`, or a newly generated one.
    pub(crate) fn new(identity: Option<&TlsIdentity>) -> io::Result<Identity> {
        let generated;
        let identity = match identity {
            Some(i) => i,
            None => {
                generated = TlsIdentity::generate()?;
                &generated
            }
        };
        Ok(Identity {
            cert_pem: identity.cert_pem.clone(),
            acceptor: identity.acceptor()?,
        })
    }
}

/// A connection's transport after the first byte told plain from TLS.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// Waits for the client's first byte and, if it starts a TLS handshake and the server has a
    /// certificate, completes the handshake.
    pub(crate) async fn accept(tcp: TcpStream, identity: Option<&Identity>) -> io::Result<Io> {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        match identity {
            Some(identity) if n == 1 && first[0] == TLS_HANDSHAKE => {
                let tls = identity.acceptor.accept(tcp).await?;
                Ok(Io::Tls(Box::new(tls)))
            }
            _ => Ok(Io::Plain(tcp)),
        }
    }

    /// Whether the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A transport with bytes already read from it (the upgrade request the HTTP layer parsed)
/// put back in front, so the WebSocket handshake reads them again.
pub(crate) struct Replay<S> {
    pub(crate) prefix: Bytes,
    pub(crate) inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
