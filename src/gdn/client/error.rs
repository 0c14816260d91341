//! What a GDN REST call can fail with, and how such a failure enters the stream's retry logic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::secrets::{cut, KnownSecrets, MAX_MESSAGE};
use crate::error::Error;
use crate::gdn::UrlError;
use crate::{redact_json, redact_url};

/// A request GDN answered with an error status, with what the body said about it.
///
/// GDN error bodies look like `{"error":true,"code":404,"errorNum":1203,"errorMessage":"..."}`;
/// `error_num` and `error_message` are `None` when the body has no such field. A body that is not
/// JSON gives its start as the message. Only the first 64 KiB of an error body are read
/// ([`MAX_ERROR_REPLY_BYTES`](super::MAX_ERROR_REPLY_BYTES)). Before a message is stored, the
/// client's own secrets (API key, password, JWTs, recent one-time passwords) are replaced in it
/// wherever they appear, it is cut to 1 KiB, passed through [`redact_json`](crate::redact_json)
/// (secret members, `name=value` pairs, `bearer <token>`, `token: <value>`, JWTs, URLs) and cut
/// to 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The request, method and path without the query: `"GET /_api/user"`.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// GDN's `errorNum`, if the body had one (581: the stream already exists).
    pub error_num: Option<i64>,
    /// GDN's `errorMessage`, if the body had one, redacted and cut to 256 bytes.
    pub error_message: Option<String>,
    /// The `Retry-After` header (delay-seconds or an HTTP date, as a wait), if the reply had a
    /// valid one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Reads the error fields out of a reply body; `truncated` says the body was read only in
    /// part.
    pub(super) fn from_reply(
        request: String,
        status: u16,
        body: &[u8],
        truncated: bool,
        retry_after: Option<Duration>,
        known: &KnownSecrets,
    ) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "errorNum")]
            error_num: Option<i64>,
            #[serde(rename = "errorMessage")]
            error_message: Option<String>,
        }
        let (error_num, message) = match serde_json::from_slice::<Body>(body) {
            Ok(b) => (
                b.error_num,
                b.error_message.map(|m| known.clean(&m, false, redact_json)),
            ),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                (None, Some(known.clean(&text, truncated, redact_json)))
            }
        };
        ApiError {
            request,
            status,
            error_num,
            error_message: message.filter(|m| !m.is_empty()),
            retry_after,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} answered HTTP {}", self.request, self.status)?;
        if let Some(n) = self.error_num {
            write!(f, " (errorNum {n})")?;
        }
        if let Some(m) = &self.error_message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// The `Location` of a redirect, as [`RestError::Redirect`] keeps it: scrubbed, redacted and cut.
pub(super) fn redirect_location(location: &[u8], known: &KnownSecrets) -> String {
    let text = String::from_utf8_lossy(&location[..location.len().min(4 * MAX_MESSAGE)]);
    known.clean(&text, location.len() > 4 * MAX_MESSAGE, redact_url)
}

/// What a [`Client`](super::Client) call can fail with.
///
/// One variant per status class that callers treat differently; each carries the [`ApiError`]
/// (status, GDN's `errorNum` / `errorMessage`). Failures that [`is_retryable`](Self::is_retryable)
/// says are transient were already retried with backoff when they are returned, as far as the
/// call allows (see [the module documentation](super#retries)). Secrets (API key, password,
/// token, one-time password) never appear in the text or in `Debug`.
///
/// A `RestError` converts into the crate's [`Error`]: as [`Error::Rest`], retried by a stream
/// when [`is_retryable`](Self::is_retryable) says so and ending it otherwise; a refused
/// certificate as [`Error::Tls`], which ends a stream; an invalid name or setting as
/// [`Error::Url`]. So a connection factory can use `?` on them.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// HTTP 401: the API key or password was refused, or the token stayed refused after one new
    /// login.
    #[error("credentials refused: {0}")]
    Unauthorized(ApiError),
    /// HTTP 403: the credentials do not allow this.
    #[error("forbidden: {0}")]
    Forbidden(ApiError),
    /// HTTP 404: no such stream, fabric or path.
    #[error("not found: {0}")]
    NotFound(ApiError),
    /// HTTP 409: for a new stream, it exists already (`errorNum` 581).
    #[error("conflict: {0}")]
    Conflict(ApiError),
    /// HTTP 429, after the retries.
    #[error("rate limited: {0}")]
    RateLimited(ApiError),
    /// HTTP 5xx, after the retries the call allows.
    #[error("server error: {0}")]
    Server(ApiError),
    /// Another status outside 2xx and 3xx (400, 412, …), or a 2xx reply whose body says
    /// `"error":true`.
    #[error("request refused: {0}")]
    Status(ApiError),
    /// A 3xx reply. GDN needs no redirects, so the client follows none: a redirect could carry
    /// the credentials, a login or a message to another server, or from `https` to `http`, and
    /// a 301 or 302 would turn a publish into a `GET` without its body.
    #[error("{request} answered HTTP {status}{}; redirects are refused", location_suffix(.location))]
    Redirect {
        /// Method and path, as in [`ApiError::request`].
        request: String,
        /// The HTTP status (301, 302, 303, 307, 308, …).
        status: u16,
        /// Where it pointed, if the reply said: redacted
        /// ([`redact_url`](crate::redact_url)) and cut to 256 bytes.
        location: Option<String>,
    },
    /// A successful reply whose body is longer than the client accepts
    /// ([`ClientBuilder::max_reply_bytes`](super::ClientBuilder::max_reply_bytes)). Reading
    /// stopped there. The request was carried out.
    #[error("the reply to {request} is longer than the limit of {limit} bytes")]
    ReplyTooLarge {
        /// Method and path, as in [`ApiError::request`].
        request: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request did not get an answer: connection refused or reset, timeout, TLS failure.
    /// The [`source`](std::error::Error::source) is reqwest's error.
    #[error("{request} failed")]
    Transport {
        /// Method and path, as in [`ApiError::request`].
        request: String,
        /// What went wrong.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// A reply that is not what GDN sends (not JSON, a field missing or of the wrong type).
    #[error("unexpected reply to {request}: {detail}")]
    Decode {
        /// Method and path, as in [`ApiError::request`].
        request: String,
        /// What is wrong with it (never a string value from the reply).
        detail: String,
    },
    /// A [`ClientBuilder`](super::ClientBuilder) setting that cannot be used.
    #[error("invalid REST client setting: {0}")]
    Config(String),
    /// A stream name that cannot be used. Prints as the [`UrlError`] itself.
    #[error(transparent)]
    Url(#[from] UrlError),
}

fn location_suffix(location: &Option<String>) -> String {
    match location {
        Some(l) if !l.is_empty() => format!(" redirecting to {l}"),
        _ => String::new(),
    }
}

impl RestError {
    /// The error for a reply with a non-2xx status.
    pub(super) fn from_status(api: ApiError) -> RestError {
        match api.status {
            401 => RestError::Unauthorized(api),
            403 => RestError::Forbidden(api),
            404 => RestError::NotFound(api),
            409 => RestError::Conflict(api),
            429 => RestError::RateLimited(api),
            500..=599 => RestError::Server(api),
            _ => RestError::Status(api),
        }
    }

    /// What GDN answered, for the status variants.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            RestError::Unauthorized(a)
            | RestError::Forbidden(a)
            | RestError::NotFound(a)
            | RestError::Conflict(a)
            | RestError::RateLimited(a)
            | RestError::Server(a)
            | RestError::Status(a) => Some(a),
            RestError::Redirect { .. }
            | RestError::ReplyTooLarge { .. }
            | RestError::Transport { .. }
            | RestError::Decode { .. }
            | RestError::Config(_)
            | RestError::Url(_) => None,
        }
    }

    /// The HTTP status GDN answered, for the status variants and [`RestError::Redirect`].
    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Redirect { status, .. } => Some(*status),
            _ => self.api_error().map(|a| a.status),
        }
    }

    /// GDN's `errorNum`, if the reply had one.
    pub fn error_num(&self) -> Option<i64> {
        self.api_error().and_then(|a| a.error_num)
    }

    /// True for the transient failures: 429, 5xx, and transport errors other than a refused
    /// certificate. A [`Client`](super::Client) retries them with backoff where the call allows
    /// (a call that is not idempotent is not repeated after a failure that
    /// [may have been carried out](Self::may_have_been_processed)); as [`Error::Rest`], a stream
    /// retries them.
    pub fn is_retryable(&self) -> bool {
        match self {
            RestError::RateLimited(_) | RestError::Server(_) => true,
            RestError::Transport { .. } => !self.is_certificate_refusal(),
            _ => false,
        }
    }

    /// True if the server may have carried out the request although the call failed: a 5xx
    /// other than 503 (500, 502, 504, …), or a transport error after the connection was made (a
    /// timeout, a reset connection). 429, 503 and a connection that could not be made mean it
    /// was not. A call that is not idempotent ([`Client::publish`](super::Client::publish),
    /// [`Client::create_stream`](super::Client::create_stream)) is not repeated after such a
    /// failure.
    pub fn may_have_been_processed(&self) -> bool {
        match self {
            RestError::Server(a) => a.status != 503,
            RestError::Transport { source, .. } => !source.is_connect(),
            _ => false,
        }
    }

    /// True for a transport error caused by a TLS certificate that was refused (ours or the
    /// server's), or a server that shares no protocol version or cipher suite with us: it fails
    /// the same way every time.
    fn is_certificate_refusal(&self) -> bool {
        let RestError::Transport { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
        while let Some(c) = cause {
            cause = match c.downcast_ref::<std::io::Error>() {
                Some(io) if crate::error::is_tls_failure(io) => return true,
                // An `io::Error`'s `source()` skips the error it wraps (hyper wraps rustls' I/O
                // error in another one): go through it.
                Some(io) => io
                    .get_ref()
                    .map(|e| e as &(dyn std::error::Error + 'static)),
                None => c.source(),
            };
        }
        false
    }

    pub(super) fn decode(request: &str, detail: impl Into<String>) -> RestError {
        RestError::Decode {
            request: request.to_string(),
            detail: detail.into(),
        }
    }

    /// A [`RestError::Decode`] for a reply serde could not read. serde quotes string values of
    /// the reply in its messages: those are left out.
    pub(super) fn from_serde(request: &str, e: &serde_json::Error) -> RestError {
        let text = e.to_string();
        let mut detail = String::new();
        for (i, part) in text.split('"').enumerate() {
            if i % 2 == 0 {
                detail.push_str(part);
            } else {
                detail.push_str("\"…\"");
            }
        }
        RestError::decode(request, cut(&detail, MAX_MESSAGE))
    }
}

impl From<RestError> for Error {
    /// A refused certificate becomes [`Error::Tls`] (ends a stream, as on the socket); a bad
    /// name or setting becomes [`Error::Url`]; everything else [`Error::Rest`], retried by a
    /// stream if [`RestError::is_retryable`] says so.
    fn from(e: RestError) -> Self {
        match e {
            RestError::Url(u) => u.into(),
            RestError::Config(c) => Error::Url(c),
            e if e.is_certificate_refusal() => Error::Tls(Arc::new(e)),
            e => Error::Rest(Arc::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn reply(request: &str, status: u16, body: &[u8]) -> ApiError {
        ApiError::from_reply(
            request.into(),
            status,
            body,
            false,
            None,
            &KnownSecrets::default(),
        )
    }

    #[test]
    fn gdn_error_bodies_are_read() {
        let body = br#"{"error":true,"code":409,"errorNum":581,"errorMessage":"stream exists"}"#;
        let a = reply("POST /x", 409, body);
        assert_eq!(a.error_num, Some(581));
        assert_eq!(a.error_message.as_deref(), Some("stream exists"));
        let e = RestError::from_status(a);
        assert!(matches!(e, RestError::Conflict(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "conflict: POST /x answered HTTP 409 (errorNum 581): stream exists"
        );
        assert_eq!(e.error_num(), Some(581));
        assert!(!e.is_retryable());
    }

    #[test]
    fn other_bodies_give_their_start_redacted() {
        let long = format!("see http://h/?otp=s3cr3t {}", "é".repeat(300));
        let a = reply("GET /y", 502, long.as_bytes());
        let m = a.error_message.unwrap();
        assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
        assert!(!m.contains("s3cr3t"), "{m}");
        // A body cut short, or an echo of the request, keeps no secret either.
        for body in [
            &br#"{"email":"a@b","password":"hunter2","#[..],
            b"bad request: password=hunter2&email=a",
            br#"{"errorMessage":"rejected {\"otp\":\"hunter2\"}"}"#,
            br#"{"errorMessage":"rejected {\"Authorization\":\"bearer hunter2\"}"}"#,
            br#"{"errorMessage":"rejected \"passwd\":\"hunter2\""}"#,
            b"Authorization: apikey hunter2",
            b"bad token: hunter2",
            b"?otp[]=hunter2",
        ] {
            let a = reply("POST /_open/auth", 400, body);
            let m = a.error_message.unwrap_or_default();
            assert!(!m.contains("hunter2"), "{m}");
        }
        let empty = reply("GET /y", 500, b"  ");
        assert_eq!(empty.error_message, None);
        assert_eq!(empty.to_string(), "GET /y answered HTTP 500");
    }

    #[test]
    fn the_clients_own_secrets_are_replaced_in_messages() {
        let known = KnownSecrets::default();
        known.add_fixed("t1.k.SUPERSECRET");
        known.add_otp("one-time-42");
        for body in [
            &br#"{"errorMessage":"invalid API key t1.k.SUPERSECRET"}"#[..],
            b"invalid API key t1.k.SUPERSECRET, or so",
            b"otp one-time-42 was used",
        ] {
            let a = ApiError::from_reply("GET /z".into(), 401, body, false, None, &known);
            let m = a.error_message.unwrap();
            assert!(!m.contains("SUPERSECRET") && !m.contains("time-42"), "{m}");
            assert!(m.contains("REDACTED"), "{m}");
        }
    }

    #[test]
    fn statuses_map_to_variants_and_crate_errors() {
        let api = |s| reply("POST /apid/otp", s, b"");
        for (status, retry, processed) in [
            (401, false, false),
            (403, false, false),
            (404, false, false),
            (400, false, false),
            (429, true, false),
            (500, true, true),
            (502, true, true),
            (503, true, false),
            (504, true, true),
        ] {
            let e = RestError::from_status(api(status));
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.is_retryable(), retry, "{status}");
            assert_eq!(e.may_have_been_processed(), processed, "{status}");
            let crate_error = Error::from(e);
            assert!(matches!(crate_error, Error::Rest(_)), "{crate_error:?}");
            assert_eq!(
                crate_error.is_retryable(),
                retry,
                "{status}: {crate_error:?}"
            );
            assert_eq!(crate_error.http_status(), Some(status));
        }
        // An unexpected reply, a redirect or a reply too long is final.
        for e in [
            RestError::decode("POST /apid/otp", "no otp"),
            RestError::Redirect {
                request: "POST /apid/otp".into(),
                status: 307,
                location: None,
            },
            RestError::ReplyTooLarge {
                request: "POST /apid/otp".into(),
                limit: 10,
            },
        ] {
            assert!(!e.is_retryable(), "{e:?}");
            let crate_error = Error::from(e);
            assert!(matches!(crate_error, Error::Rest(_)), "{crate_error:?}");
            assert!(!crate_error.is_retryable(), "{crate_error:?}");
        }
    }

    /// A REST failure converted into the crate's error says it is one, not a refused handshake.
    #[test]
    fn crate_errors_name_rest_failures() {
        let rest = RestError::from_status(reply(
            "POST /apid/otp",
            400,
            br#"{"errorNum":4,"errorMessage":"bad request"}"#,
        ));
        let e = Error::from(rest.clone());
        assert_eq!(e.to_string(), "GDN REST request failed");
        let source = e.source().expect("the RestError");
        assert!(source.downcast_ref::<RestError>().is_some(), "{source:?}");
        assert_eq!(source.to_string(), rest.to_string());
        assert!(!format!("{e:?}").contains("Http"), "{e:?}");
        assert_eq!(e.default_disposition(), crate::Disposition::Stop);

        // Retry-After on a 429 or 503 holds a stream back, up to its maximum delay.
        let api = ApiError {
            retry_after: Some(Duration::from_secs(3)),
            ..reply("POST /apid/otp", 429, b"")
        };
        let e = Error::from(RestError::from_status(api));
        let wait = e.wait_at_least(Duration::from_millis(1), Duration::from_secs(10));
        assert_eq!(wait, Duration::from_secs(3));
        let wait = e.wait_at_least(Duration::from_millis(1), Duration::from_secs(1));
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn redirects_print_their_status_and_location() {
        let known = KnownSecrets::default();
        known.add_fixed("t1.k.SUPERSECRET");
        let location = redirect_location(
            b"http://127.0.0.1:9/apid/otp?otp=o1&k=t1.k.SUPERSECRET",
            &known,
        );
        let e = RestError::Redirect {
            request: "POST /apid/otp".into(),
            status: 307,
            location: Some(location),
        };
        assert_eq!(
            e.to_string(),
            "POST /apid/otp answered HTTP 307 redirecting to \
             http://127.0.0.1:9/apid/otp?otp=REDACTED&k=REDACTED; redirects are refused"
        );
        assert_eq!(e.status(), Some(307));
        let long = format!("https://h/{}", "x".repeat(10_000));
        assert!(redirect_location(long.as_bytes(), &known).len() <= MAX_MESSAGE);
    }

    #[test]
    fn decode_details_quote_no_reply_values() {
        #[derive(Debug, Deserialize)]
        struct Reply {
            #[allow(dead_code)]
            result: Vec<String>,
        }
        let e = serde_json::from_str::<Reply>(r#"{"result":"t1.k.SUPERSECRET"}"#).unwrap_err();
        assert!(
            e.to_string().contains("SUPERSECRET"),
            "serde quotes it: {e}"
        );
        let e = RestError::from_serde("GET /x", &e);
        assert!(matches!(e, RestError::Decode { .. }), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SUPERSECRET"), "{text}");
        assert!(text.contains("invalid type: string"), "{text}");
    }
}
