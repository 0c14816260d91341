//! The crate's error type and the retry-or-stop classification.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::config::ConfigError;
use crate::redact::{redact_json, redact_url};

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
///
/// The message (`Display`) describes this error only; its cause, if it has one, comes from
/// [`source()`](std::error::Error::source) and is not repeated in the message. To print the whole
/// story, walk the chain, or use a reporter that does (`anyhow`'s `{:#}`, `eyre`, …):
///
/// ```
/// use std::error::Error as _;
/// # let e = stream_websocket::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
/// let mut text = e.to_string();
/// let mut cause = e.source();
/// while let Some(c) = cause {
///     text = format!("{text}: {c}");
///     cause = c.source();
/// }
/// assert_eq!(text, "I/O error: connection refused");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The server answered the WebSocket handshake with an HTTP error instead of `101`.
    /// Retried for 408, 409, 425, 429 and 5xx; every other status (400, 401, 403, 404, 3xx, …)
    /// ends the stream. On 429 and 503 the stream waits at least `retry_after` (capped by
    /// `max_delay`) before the next attempt.
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, if it had one (the server's reason), with secrets
        /// redacted by [`redact_json`].
        body: Option<String>,
        /// The response's `Retry-After` header (delay-seconds or an HTTP date, as a wait from
        /// when the response arrived), if it had a valid one.
        retry_after: Option<Duration>,
    },
    /// One connection attempt took longer than the connect timeout. Retried.
    ConnectTimeout(Duration),
    /// No pong or other frame arrived within the pong timeout after a ping: the connection is
    /// presumed dead (half-open). Retried.
    KeepaliveTimeout(Duration),
    /// An I/O error on the socket: refused, reset, broken pipe, … Retried. The I/O error is the
    /// [`source`](std::error::Error::source).
    Io(Arc<io::Error>),
    /// The peer broke the WebSocket protocol. Retried. The
    /// [`source`](std::error::Error::source) is what tungstenite reported, without tungstenite's
    /// own wrapper (whose message repeats it).
    Protocol(Arc<tungstenite::Error>),
    /// A message exceeded the configured maximum message or frame size. Ends the stream: the same
    /// message would be redelivered and fail again. The [`source`](std::error::Error::source) is
    /// tungstenite's [`CapacityError`](tungstenite::error::CapacityError).
    Capacity(Arc<tungstenite::Error>),
    /// TLS failed in the handshake: a certificate was refused (unknown issuer, wrong name,
    /// expired), or the peer shares no protocol version or cipher suite with us. Ends the
    /// stream: retrying cannot fix it. TLS failures on an established connection (a bad record,
    /// a decrypt error, an alert) are reported as [`Error::Io`] and retried. The TLS library's
    /// error is the [`source`](std::error::Error::source), or, for a certificate refused while
    /// a GDN REST call fetched a one-time password, the `RestError` whose chain ends in it.
    Tls(Arc<dyn std::error::Error + Send + Sync>),
    /// The URL cannot be used (bad scheme, no host, TLS support not compiled in). Ends the
    /// stream. The text is redacted.
    Url(String),
    /// The peer closed the connection with a Close frame (`code` is `None` for a close without a
    /// status, 1005), or the connection ended without one (`code` `None`, and a `reason` that
    /// says so).
    ///
    /// Retried, as servers close for restarts and idle timeouts, except for the codes that say
    /// the client is at fault, where the same client would be closed the same way again:
    ///
    /// | code | meaning (RFC 6455, IANA registry) | default | error event |
    /// |---|---|---|---|
    /// | 1000 Normal, 1001 Away, none (1005) | closed, going away (restart, idle timeout) | retry | no |
    /// | 1012 Restart | service restart | retry | no |
    /// | 1013 Again | try again later (overloaded) | retry, never sooner than `min_delay`, schedule not restarted | yes |
    /// | 1002 Protocol, 1010 Extension, 1011 Error, 1014 bad gateway | the server or a proxy failed | retry | yes |
    /// | 1003 Unsupported, 1007 Invalid, 1008 Policy, 1009 Size | the client sent what the server refuses | **stop** | yes |
    /// | 3000 Unauthorized, 3003 Forbidden (IANA) | as HTTP 401 and 403 | **stop** | yes |
    /// | other 3000–3999 (IANA), 4000–4999 (the application's own) | | retry | no |
    ///
    /// Application codes (4000–4999) mean what your server says they mean: decide with
    /// [`ReconnectConfigBuilder::classify`](crate::ReconnectConfigBuilder::classify).
    ConnectionClosed {
        /// The close code, if the frame had one.
        code: Option<CloseCode>,
        /// The close reason (may be empty).
        reason: String,
    },
    /// The connection factory failed for a reason of its own (for example fetching a one-time
    /// password). Retried. The factory's error is the [`source`](std::error::Error::source).
    Factory(Arc<dyn std::error::Error + Send + Sync>),
    /// A GDN REST call failed, typically fetching the one-time password of a connection
    /// ([`Client::otp_auth`](crate::gdn::Client::otp_auth)). Retried exactly when
    /// [`RestError::is_retryable`](crate::gdn::RestError::is_retryable) says so (429, 5xx, a
    /// transport error); a refusal (401, 403, 404, 400, …), a redirect, an unexpected or too
    /// long reply end the stream. On 429 and 503 the stream waits at least the reply's
    /// `Retry-After` (capped by `max_delay`). The [`RestError`](crate::gdn::RestError) is the
    /// [`source`](std::error::Error::source); [`http_status`](Error::http_status) gives the
    /// status GDN answered. (A refused certificate is [`Error::Tls`] instead.)
    #[cfg(feature = "rest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rest")))]
    Rest(Arc<crate::gdn::RestError>),
    /// A frame could not be decoded. Reported on the error channel; the stream goes on. Prints
    /// as the [`DecodeError`] itself.
    Decode(DecodeError),
    /// The retry cap was reached. Ends the stream. `last` is the
    /// [`source`](std::error::Error::source).
    GaveUp {
        /// Attempts made since the schedule last started over.
        attempts: u32,
        /// The error that ended the last attempt.
        last: Box<Error>,
    },
    /// The stream was closed by [`close`](futures::SinkExt::close); it sends and yields nothing
    /// more.
    Closed,
    /// `close()` ended with items that could not be written; get them back with
    /// [`take_unsent`](crate::ReconnectingStream::take_unsent).
    Unsent(usize),
    /// A configuration value is invalid. Prints as the [`ConfigError`] itself.
    Config(ConfigError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Http { status, body, .. } => {
                write!(
                    f,
                    "handshake rejected with HTTP {status}{}",
                    body_suffix(body)
                )
            }
            Error::ConnectTimeout(d) => write!(f, "connection attempt timed out after {d:?}"),
            Error::KeepaliveTimeout(d) => write!(
                f,
                "no pong or other frame within {d:?} after a ping; connection presumed dead"
            ),
            // The cause is the source: not repeated here.
            Error::Io(_) => f.write_str("I/O error"),
            Error::Protocol(_) => f.write_str("WebSocket protocol error"),
            Error::Capacity(_) => f.write_str("size limit exceeded"),
            Error::Tls(_) => f.write_str("TLS handshake failed"),
            Error::Url(url) => write!(f, "invalid URL: {url}"),
            Error::ConnectionClosed { code, reason } => write!(
                f,
                "connection closed by peer (code {}{})",
                code.map_or_else(|| "none".to_string(), |c| u16::from(c).to_string()),
                reason_suffix(reason)
            ),
            Error::Factory(_) => f.write_str("connection factory failed"),
            #[cfg(feature = "rest")]
            Error::Rest(_) => f.write_str("GDN REST request failed"),
            Error::Decode(e) => fmt::Display::fmt(e, f),
            Error::GaveUp { attempts, .. } => {
                write!(f, "gave up after {attempts} consecutive failed attempts")
            }
            Error::Closed => f.write_str("the stream is closed"),
            Error::Unsent(n) => write!(
                f,
                "closed with {n} outgoing items unsent; take them back with take_unsent()"
            ),
            Error::Config(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(&**e),
            Error::Protocol(e) | Error::Capacity(e) => Some(tungstenite_cause(e)),
            Error::Tls(e) => Some(match e.downcast_ref::<tungstenite::Error>() {
                Some(t) => tungstenite_cause(t),
                None => &**e,
            }),
            Error::Factory(e) => Some(&**e),
            #[cfg(feature = "rest")]
            Error::Rest(e) => Some(&**e),
            Error::GaveUp { last, .. } => Some(&**last),
            // Transparent: these print as the inner error, so its source is theirs.
            Error::Decode(e) => e.source(),
            Error::Config(e) => e.source(),
            Error::Http { .. }
            | Error::ConnectTimeout(_)
            | Error::KeepaliveTimeout(_)
            | Error::Url(_)
            | Error::ConnectionClosed { .. }
            | Error::Closed
            | Error::Unsent(_) => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// Formats an error and every [`source`](std::error::Error::source) below it, joined by `": "`:
/// the whole story in one line, for the crate's logs (each message names only its own layer).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// The cause to report for a tungstenite error. tungstenite's error types print their cause in
/// their own message (`"WebSocket protocol error: {0}"`) and return it from `source()` as well;
/// a chain through them would say everything twice. So skip each tungstenite layer that has a
/// source, down to the first one that does not (or to a foreign error such as `io::Error`).
fn tungstenite_cause(e: &tungstenite::Error) -> &(dyn std::error::Error + 'static) {
    use tungstenite::error::ProtocolError;
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(inner) = cause.source() {
        if cause.is::<tungstenite::Error>() || cause.is::<ProtocolError>() {
            cause = inner;
        } else {
            break;
        }
    }
    cause
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
    /// Wraps any error from a connection factory as [`Error::Factory`] (retried): any
    /// `std::error::Error`, a boxed one, an `anyhow::Error` (which converts into a boxed one), or
    /// a plain message (`&str`, `String`).
    ///
    /// ```
    /// use stream_websocket::Error;
    /// let from_text = Error::factory("the token service is down");
    /// let from_io = Error::factory(std::io::Error::other("no route"));
    /// assert_eq!(std::error::Error::source(&from_text).unwrap().to_string(), "the token service is down");
    /// assert!(from_io.is_retryable());
    /// ```
    pub fn factory<E>(error: E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Error::Factory(Arc::from(error.into()))
    }

    /// The HTTP status of a rejected handshake, or of a failed GDN REST call
    /// ([`Error::Rest`]), if that is what this is.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            #[cfg(feature = "rest")]
            Error::Rest(e) => e.status(),
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
            | Error::Factory(_)
            | Error::Decode(_) => Disposition::Retry,
            Error::ConnectionClosed { code, .. } => match code.map(u16::from) {
                Some(1003 | 1007 | 1008 | 1009 | 3000 | 3003) => Disposition::Stop,
                _ => Disposition::Retry,
            },
            #[cfg(feature = "rest")]
            Error::Rest(e) => {
                if e.is_retryable() {
                    Disposition::Retry
                } else {
                    Disposition::Stop
                }
            }
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

    /// The close code, if the peer closed the connection with one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::ConnectionClosed { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether a close that is retried still deserves an error event: the server failed (1002,
    /// 1010, 1011, 1014) or is overloaded (1013). Closes that end the stream always get one.
    pub(crate) fn is_alarming_close(&self) -> bool {
        matches!(
            self.close_code().map(u16::from),
            Some(1002 | 1010 | 1011 | 1013 | 1014)
        )
    }

    /// The least the stream must wait before the next attempt after this error, whatever the
    /// schedule says: `Retry-After` on a 429 or 503 handshake, `min_delay` after a close 1013
    /// (Try Again Later). Capped by `max_delay`.
    pub(crate) fn wait_at_least(&self, min_delay: Duration, max_delay: Duration) -> Duration {
        let floor = match self {
            Error::Http {
                status: 429 | 503,
                retry_after: Some(after),
                ..
            } => *after,
            #[cfg(feature = "rest")]
            Error::Rest(e) => match e.api_error() {
                Some(api) if matches!(api.status, 429 | 503) => api.retry_after.unwrap_or_default(),
                _ => Duration::ZERO,
            },
            Error::ConnectionClosed {
                code: Some(CloseCode::Again),
                ..
            } => min_delay,
            _ => Duration::ZERO,
        };
        floor.min(max_delay)
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
                    redact_json(String::from_utf8_lossy(&b[..end]).trim()).into_owned()
                });
                let retry_after = resp
                    .headers()
                    .get(tungstenite::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::retry_after::parse(v, std::time::SystemTime::now()));
                Error::Http {
                    status,
                    body,
                    retry_after,
                }
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
pub(crate) fn is_tls_failure(io: &io::Error) -> bool {
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
    fn http_bodies_are_redacted() {
        let body = |text: &str| -> Option<String> {
            let resp = http::Response::builder()
                .status(401)
                .body(Some(text.as_bytes().to_vec()))
                .unwrap();
            match tungstenite::Error::Http(Box::new(resp)).into() {
                Error::Http { body, .. } => body,
                e => panic!("expected Error::Http, got {e:?}"),
            }
        };
        assert_eq!(
            body(r#"{"error":true,"otp":"s3cr3t"}"#).as_deref(),
            Some(r#"{"error":true,"otp":"REDACTED"}"#)
        );
        let long = format!(r#"{{"code":401,"jwt":"s3cr3t{}"}}"#, "x".repeat(MAX_BODY));
        assert_eq!(
            body(&long).as_deref(),
            Some(r#"{"code":401,"jwt":"REDACTED"#)
        );
        assert_eq!(
            body("invalid token=s3cr3t").as_deref(),
            Some("invalid token=REDACTED")
        );
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

/// Rendering errors as chains: each layer's message names only that layer, and its cause comes
/// from `source()`, so a reporter that walks the chain prints every cause exactly once.
#[cfg(test)]
mod chain_tests {
    use super::*;
    use crate::config::ReconnectConfig;
    use crate::gdn::{ProducerError, UrlError};
    use std::error::Error as StdError;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};

    /// The message of `e` and of every `source()` below it, top first.
    fn segments(e: &(dyn StdError + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push(c.to_string());
            cause = c.source();
        }
        out
    }

    /// The whole chain as a reporter prints it: the messages joined by ": ".
    fn report(e: &(dyn StdError + 'static)) -> String {
        segments(e).join(": ")
    }

    /// No layer repeats the text of the layer below it, and `cause` appears exactly once.
    fn assert_said_once(e: &(dyn StdError + 'static), cause: &str) {
        let segs = segments(e);
        let full = segs.join(": ");
        for pair in segs.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "{full:?}: {:?} repeats its source {:?}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(full.matches(cause).count(), 1, "{cause:?} in {full:?}");
    }

    fn refused() -> Error {
        io::Error::from(io::ErrorKind::ConnectionRefused).into()
    }

    #[test]
    fn io_error_chain_names_the_cause_once() {
        let e = refused();
        assert_eq!(e.to_string(), "I/O error");
        assert_eq!(report(&e), "I/O error: connection refused");
        assert_said_once(&e, "connection refused");

        let os: Error = io::Error::from_raw_os_error(111).into();
        assert_said_once(&os, &io::Error::from_raw_os_error(111).to_string());
    }

    #[test]
    fn protocol_error_chain_names_the_cause_once() {
        let e: Error =
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake).into();
        assert!(matches!(e, Error::Protocol(_)), "{e:?}");
        assert_eq!(e.to_string(), "WebSocket protocol error");
        assert_eq!(
            report(&e),
            "WebSocket protocol error: Connection reset without closing handshake"
        );
        assert_said_once(&e, "Connection reset without closing handshake");

        // A tungstenite error without a cause of its own is the cause itself.
        let e: Error = tungstenite::Error::Utf8("invalid byte".into()).into();
        assert_eq!(
            report(&e),
            "WebSocket protocol error: UTF-8 encoding error: invalid byte"
        );
        assert_said_once(&e, "invalid byte");
        let e: Error = tungstenite::Error::AttackAttempt.into();
        assert_eq!(
            report(&e),
            "WebSocket protocol error: Attack attempt detected"
        );
    }

    #[test]
    fn capacity_error_chain_names_the_cause_once() {
        let e: Error = tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 10,
            max_size: 5,
        })
        .into();
        assert!(matches!(e, Error::Capacity(_)), "{e:?}");
        assert_eq!(e.to_string(), "size limit exceeded");
        assert_eq!(report(&e), "size limit exceeded: Message too long: 10 > 5");
        assert_said_once(&e, "Message too long: 10 > 5");
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn tls_error_chain_names_the_cause_once() {
        let cause = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let text = cause.to_string();
        let e: Error =
            tungstenite::Error::Io(io::Error::new(io::ErrorKind::InvalidData, cause)).into();
        assert!(matches!(e, Error::Tls(_)), "{e:?}");
        assert_eq!(e.to_string(), "TLS handshake failed");
        assert_eq!(report(&e), format!("TLS handshake failed: {text}"));
        assert_said_once(&e, &text);

        // tungstenite's own TLS errors (not through I/O) too.
        let e: Error = tungstenite::Error::Tls(tungstenite::error::TlsError::InvalidDnsName).into();
        assert!(matches!(e, Error::Tls(_)), "{e:?}");
        assert_eq!(report(&e), "TLS handshake failed: Invalid DNS name");
        assert_said_once(&e, "Invalid DNS name");
    }

    #[test]
    fn factory_error_chain_names_the_cause_once() {
        let e = Error::factory(io::Error::other("one-time password service down"));
        assert_eq!(e.to_string(), "connection factory failed");
        assert_eq!(
            report(&e),
            "connection factory failed: one-time password service down"
        );
        assert_said_once(&e, "one-time password service down");
    }

    #[test]
    fn gave_up_error_has_the_last_error_as_its_source() {
        let e = Error::GaveUp {
            attempts: 3,
            last: Box::new(refused()),
        };
        assert_eq!(e.to_string(), "gave up after 3 consecutive failed attempts");
        let last = e.source().and_then(|s| s.downcast_ref::<Error>());
        assert!(matches!(last, Some(Error::Io(_))), "{last:?}");
        assert_eq!(
            report(&e),
            "gave up after 3 consecutive failed attempts: I/O error: connection refused"
        );
        assert_said_once(&e, "connection refused");

        let e = Error::GaveUp {
            attempts: 2,
            last: Box::new(Error::Http {
                status: 503,
                body: Some("try later".into()),
                retry_after: None,
            }),
        };
        assert_eq!(
            report(&e),
            "gave up after 2 consecutive failed attempts: handshake rejected with HTTP 503: try later"
        );
        assert_eq!(e.http_status(), Some(503));
    }

    #[test]
    fn producer_stopped_error_has_the_stream_error_as_its_source() {
        let e = ProducerError::Stopped(refused());
        assert_eq!(e.to_string(), "producer stopped before confirmation");
        let stopped = e.source().and_then(|s| s.downcast_ref::<Error>());
        assert!(matches!(stopped, Some(Error::Io(_))), "{stopped:?}");
        assert_eq!(
            report(&e),
            "producer stopped before confirmation: I/O error: connection refused"
        );
        assert_said_once(&e, "connection refused");

        let e = ProducerError::Stopped(Error::Http {
            status: 401,
            body: Some("Failed to authenticate".into()),
            retry_after: None,
        });
        assert_eq!(
            report(&e),
            "producer stopped before confirmation: handshake rejected with HTTP 401: \
             Failed to authenticate"
        );

        let e = ProducerError::Stopped(Error::GaveUp {
            attempts: 4,
            last: Box::new(
                tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake).into(),
            ),
        });
        assert_eq!(
            report(&e),
            "producer stopped before confirmation: gave up after 4 consecutive failed attempts: \
             WebSocket protocol error: Connection reset without closing handshake"
        );
        assert_said_once(&e, "Connection reset without closing handshake");
    }

    /// Why `source()` skips tungstenite's layers: each one that has a source repeats it in its
    /// own message. If a tungstenite release stops doing that, this fails and the skipping can go.
    #[test]
    fn tungstenite_errors_with_a_source_repeat_it() {
        use tokio_tungstenite::tungstenite::http;
        let with_source = [
            tungstenite::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            tungstenite::Error::Capacity(CapacityError::TooManyHeaders),
            tungstenite::Error::Url(tungstenite::error::UrlError::NoHostName),
            tungstenite::Error::HttpFormat("\0".parse::<http::Uri>().unwrap_err().into()),
        ];
        for e in with_source {
            let cause = e.source().expect("a source").to_string();
            assert!(
                e.to_string().ends_with(&format!(": {cause}")),
                "{e} / {cause}"
            );
            // Through the crate's error, the chain says it once.
            let e = Error::Protocol(Arc::new(e));
            assert_said_once(&e, &cause);
            assert_eq!(report(&e), format!("WebSocket protocol error: {cause}"));
        }
    }

    #[test]
    fn the_log_chain_formatter_says_every_cause_once() {
        let e = Error::GaveUp {
            attempts: 3,
            last: Box::new(refused()),
        };
        assert_eq!(Chain(&e).to_string(), report(&e));
        assert_eq!(Chain(&Error::Closed).to_string(), "the stream is closed");
    }

    /// Errors without a cause keep their whole story in their own message.
    #[test]
    fn errors_without_a_source_say_everything_themselves() {
        let leaves: Vec<Box<dyn StdError + 'static>> = vec![
            Box::new(Error::Http {
                status: 401,
                body: Some("Failed to authenticate".into()),
                retry_after: None,
            }),
            Box::new(Error::ConnectTimeout(Duration::from_secs(10))),
            Box::new(Error::KeepaliveTimeout(Duration::from_secs(20))),
            Box::new(Error::Url("ws://h/x?otp=REDACTED".into())),
            Box::new(Error::ConnectionClosed {
                code: Some(CloseCode::Away),
                reason: "going away".into(),
            }),
            Box::new(Error::Closed),
            Box::new(Error::Unsent(2)),
            Box::new(Error::Decode(DecodeError::Binary(3))),
            Box::new(Error::Config(ConfigError::Zero("connect_timeout"))),
            Box::new(DecodeError::Json("expected value".into())),
            Box::new(ProducerError::Rejected {
                code: Some(7),
                message: "bad payload".into(),
            }),
            Box::new(ProducerError::Closed),
            Box::new(ProducerError::Unconfirmed),
            Box::new(ProducerError::DrainTimeout { unconfirmed: 3 }),
            Box::new(UrlError::EmptyName { what: "tenant" }),
            Box::new(crate::event::ListenerError::Lagged(5)),
            Box::new(
                ReconnectConfig::builder()
                    .grow_factor(0.5)
                    .build()
                    .unwrap_err(),
            ),
        ];
        for e in leaves {
            assert!(e.source().is_none(), "{e}: {:?}", e.source());
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            Error::Http {
                status: 401,
                body: Some("Failed to authenticate".into()),
                retry_after: None,
            }
            .to_string(),
            "handshake rejected with HTTP 401: Failed to authenticate"
        );
        assert_eq!(
            Error::Decode(DecodeError::Binary(3)).to_string(),
            "unexpected binary frame of 3 bytes"
        );
    }
}
