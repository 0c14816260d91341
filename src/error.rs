//! The crate's error type and the retry-or-stop classification.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite;

use crate::config::ConfigError;
use crate::redact::redact_url;

/// Whether an error is retried (with backoff) or ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Reconnect after the backoff delay.
    Retry,
    /// End the stream with this error.
    Stop,
}

/// Longest server error body kept in [`Error::Http`].
const MAX_BODY: usize = 256;

/// Everything that can go wrong, cheap to clone (sources are shared) so that the same error can be
/// given to every listener.
///
/// Each variant says whether [`Error::default_disposition`] retries it. Secrets never appear in
/// the text: URLs are redacted before they are stored.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered the WebSocket handshake with an HTTP error instead of `101`.
    /// Retried for 408, 409, 425, 429 and 5xx; every other status (400, 401, 403, 404, 3xx, …)
    /// ends the stream.
    #[error("handshake rejected with HTTP {status}{}", body_suffix(.body))]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, if it had one (the server's reason).
        body: Option<String>,
    },
    /// One connection attempt took longer than the connect timeout. Retried.
    #[error("connection attempt timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// No pong or other frame arrived within the pong timeout after a ping: the connection is
    /// presumed dead (half-open). Retried.
    #[error("no pong or other frame within {0:?} after a ping; connection presumed dead")]
    KeepaliveTimeout(Duration),
    /// An I/O error on the socket: refused, reset, broken pipe, … Retried.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The peer broke the WebSocket protocol. Retried.
    #[error("WebSocket protocol error: {0}")]
    Protocol(#[source] Arc<tungstenite::Error>),
    /// A message exceeded the configured maximum message or frame size. Ends the stream: the same
    /// message would be redelivered and fail again.
    #[error("message too large: {0}")]
    Capacity(#[source] Arc<tungstenite::Error>),
    /// TLS failed in the handshake: a certificate was refused (unknown issuer, wrong name,
    /// expired), or the peer shares no protocol version or cipher suite with us. Ends the
    /// stream: retrying cannot fix it. TLS failures on an established connection (a bad record,
    /// a decrypt error, an alert) are reported as [`Error::Io`] and retried.
    #[error("TLS error: {0}")]
    Tls(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The URL cannot be used (bad scheme, no host, TLS support not compiled in). Ends the
    /// stream. The text is redacted.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The peer closed the connection with a Close frame (`code` is `None` for a close without a
    /// status, 1005). Retried: servers close for restarts and idle timeouts.
    #[error("connection closed by peer (code {}{})", code.map_or_else(|| "none".to_string(), |c| c.to_string()), reason_suffix(.reason))]
    ConnectionClosed {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The close reason (may be empty).
        reason: String,
    },
    /// The connection factory failed for a reason of its own (for example fetching a one-time
    /// password). Retried.
    #[error("connection factory failed: {0}")]
    Factory(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A frame could not be decoded. Reported on the error channel; the stream goes on.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The retry cap was reached. Ends the stream.
    #[error("gave up after {attempts} consecutive failed attempts; last error: {last}")]
    GaveUp {
        /// Attempts made since the last stable connection.
        attempts: u32,
        /// The error that ended the last attempt.
        last: Box<Error>,
    },
    /// The stream was closed by [`close`](futures::SinkExt::close); it sends and yields nothing
    /// more.
    #[error("the stream is closed")]
    Closed,
    /// `close()` ended with items that could not be written; get them back with
    /// [`take_unsent`](crate::ReconnectingStream::take_unsent).
    #[error("closed with {0} outgoing items unsent; take them back with take_unsent()")]
    Unsent(usize),
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn body_suffix(body: &Option<String>) -> String {
    match body {
        Some(b) if !b.is_empty() => format!(": {b}"),
        _ => String::new(),
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(", reason {reason:?}")
    }
}

impl Error {
    /// Wraps any error from a connection factory as [`Error::Factory`].
    pub fn factory<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Factory(Arc::new(error))
    }

    /// The HTTP status of a rejected handshake, if that is what this is.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.http_status(),
            _ => None,
        }
    }

    /// The built-in classification: permanent failures stop, transient ones are retried. Each
    /// variant's documentation says which it is.
    pub fn default_disposition(&self) -> Disposition {
        match self {
            Error::Http { status, .. } => match status {
                408 | 409 | 425 | 429 | 500..=599 => Disposition::Retry,
                _ => Disposition::Stop,
            },
            Error::ConnectTimeout(_)
            | Error::KeepaliveTimeout(_)
            | Error::Io(_)
            | Error::Protocol(_)
            | Error::ConnectionClosed { .. }
            | Error::Factory(_)
            | Error::Decode(_) => Disposition::Retry,
            Error::Capacity(_)
            | Error::Tls(_)
            | Error::Url(_)
            | Error::GaveUp { .. }
            | Error::Closed
            | Error::Unsent(_)
            | Error::Config(_) => Disposition::Stop,
        }
    }

    /// True if [`default_disposition`](Self::default_disposition) retries this error.
    pub fn is_retryable(&self) -> bool {
        self.default_disposition() == Disposition::Retry
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::Error as W;
        match e {
            W::Io(io) if is_tls_failure(&io) => Error::Tls(Arc::new(io)),
            W::Io(io) => Error::Io(Arc::new(io)),
            W::Http(resp) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_ref().map(|b| {
                    let end = b.len().min(MAX_BODY);
                    redact_url(String::from_utf8_lossy(&b[..end]).trim()).into_owned()
                });
                Error::Http { status, body }
            }
            W::Url(u) => Error::Url(redact_url(&u.to_string()).into_owned()),
            W::ConnectionClosed | W::AlreadyClosed => Error::ConnectionClosed {
                code: None,
                reason: String::new(),
            },
            e @ W::Capacity(_) => Error::Capacity(Arc::new(e)),
            e @ W::Tls(_) => Error::Tls(Arc::new(e)),
            e => Error::Protocol(Arc::new(e)),
        }
    }
}

/// Whether an I/O error is a TLS failure that retrying cannot fix. rustls reports its errors as
/// I/O errors wrapping its own. A refused certificate (ours or the peer's), or a peer that
/// shares no protocol version or cipher with us, can only happen in the handshake and fails the
/// same way every time: permanent. Anything else (a bad record, a decrypt error or an alert on
/// an established connection) is a broken connection like any other: retried, as `Error::Io`.
fn is_tls_failure(io: &io::Error) -> bool {
    #[cfg(feature = "rustls")]
    if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        use rustls::AlertDescription as A;
        return match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::InvalidCertRevocationList(_)
            | rustls::Error::PeerIncompatible(_) => true,
            rustls::Error::AlertReceived(alert) => matches!(
                alert,
                A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::CertificateRequired
                    | A::HandshakeFailure
                    | A::ProtocolVersion
                    | A::InsufficientSecurity
            ),
            _ => false,
        };
    }
    let _ = io;
    false
}

/// A frame from the server could not be decoded. The stream reports it and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text frame is not JSON.
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    /// The JSON has the wrong shape or wrong field types.
    #[error("unexpected JSON frame: {0}")]
    Shape(String),
    /// A base64 field could not be decoded.
    #[error("field `{field}` is not valid standard base64: {detail}")]
    Base64 {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A binary frame arrived where the protocol only uses text frames.
    #[error("unexpected binary frame of {0} bytes")]
    Binary(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http;

    fn http_err(status: u16) -> Error {
        let resp = http::Response::builder()
            .status(status)
            .body(Some(b"Failed to authenticate".to_vec()))
            .unwrap();
        tungstenite::Error::Http(Box::new(resp)).into()
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn handshake_tls_failures_stop_and_mid_connection_ones_are_retried() {
        use rustls::{AlertDescription, CertificateError};
        let wrap = |e: rustls::Error| -> Error {
            tungstenite::Error::Io(io::Error::new(io::ErrorKind::InvalidData, e)).into()
        };
        let permanent = [
            rustls::Error::InvalidCertificate(CertificateError::Expired),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            rustls::Error::NoCertificatesPresented,
            rustls::Error::AlertReceived(AlertDescription::BadCertificate),
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
        ];
        for e in permanent {
            let text = format!("{e:?}");
            let err = wrap(e);
            assert!(matches!(err, Error::Tls(_)), "{text}: {err:?}");
            assert_eq!(err.default_disposition(), Disposition::Stop, "{text}");
        }
        let transient = [
            rustls::Error::DecryptError,
            rustls::Error::AlertReceived(AlertDescription::DecodeError),
            rustls::Error::AlertReceived(AlertDescription::InternalError),
            rustls::Error::General("connection broke".into()),
        ];
        for e in transient {
            let text = format!("{e:?}");
            let err = wrap(e);
            assert!(matches!(err, Error::Io(_)), "{text}: {err:?}");
            assert_eq!(err.default_disposition(), Disposition::Retry, "{text}");
        }
    }

    #[test]
    fn handshake_statuses_are_classified() {
        for s in [400, 401, 403, 404, 301, 302, 405, 410] {
            assert_eq!(http_err(s).default_disposition(), Disposition::Stop, "{s}");
        }
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert_eq!(http_err(s).default_disposition(), Disposition::Retry, "{s}");
        }
        let e = http_err(401);
        assert_eq!(e.http_status(), Some(401));
        assert_eq!(
            e.to_string(),
            "handshake rejected with HTTP 401: Failed to authenticate"
        );
    }

    #[test]
    fn transport_errors_are_retried() {
        let io: Error = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        assert!(io.is_retryable());
        assert!(Error::ConnectTimeout(Duration::from_secs(1)).is_retryable());
        let closed: Error = tungstenite::Error::ConnectionClosed.into();
        assert!(closed.is_retryable());
        let cap: Error =
            tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
                size: 10,
                max_size: 5,
            })
            .into();
        assert!(!cap.is_retryable());
    }

    #[test]
    fn url_errors_are_redacted() {
        let e: Error = tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
            "ws://h/x?otp=s3cr3t".into(),
        ))
        .into();
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!e.is_retryable());
    }
}
