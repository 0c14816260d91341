//! What a GDN REST call can fail with, and how such a failure enters the stream's retry logic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;
use crate::gdn::UrlError;
use crate::redact_json;

/// Longest `errorMessage` (or text body) kept in an [`ApiError`], in bytes.
const MAX_MESSAGE: usize = 256;

/// A request GDN answered with an error status, with what the body said about it.
///
/// GDN error bodies look like `{"error":true,"code":404,"errorNum":1203,"errorMessage":"..."}`;
/// `error_num` and `error_message` are `None` when the body has no such field. A body that is not
/// JSON gives its first 256 bytes as the message. Messages pass through
/// [`redact_json`](crate::redact_json) (secret members, `name=value` pairs and URLs) before they
/// are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The request, method and path without the query: `"GET /_api/user"`.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// GDN's `errorNum`, if the body had one (581: the stream already exists).
    pub error_num: Option<i64>,
    /// GDN's `errorMessage`, if the body had one, cut to 256 bytes.
    pub error_message: Option<String>,
    /// The `Retry-After` header (delay-seconds or an HTTP date, as a wait), if the reply had a
    /// valid one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Reads the error fields out of a reply body.
    pub(super) fn from_reply(
        request: String,
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "errorNum")]
            error_num: Option<i64>,
            #[serde(rename = "errorMessage")]
            error_message: Option<String>,
        }
        let (error_num, message) = match serde_json::from_slice::<Body>(body) {
            Ok(b) => (b.error_num, b.error_message),
            Err(_) => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                (None, (!text.is_empty()).then_some(text))
            }
        };
        ApiError {
            request,
            status,
            error_num,
            error_message: message.map(|m| cut(&redact_json(&m))),
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

/// `text` cut to at most [`MAX_MESSAGE`] bytes, at a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What a [`Client`](super::Client) call can fail with.
///
/// One variant per status class that callers treat differently; each carries the [`ApiError`]
/// (status, GDN's `errorNum` / `errorMessage`). 429, 5xx and transport errors were already
/// retried with backoff when they are returned ([`is_retryable`](Self::is_retryable) tells the
/// class). Secrets (API key, password, token, one-time password) never appear in the text.
///
/// A `RestError` converts into the crate's [`Error`]: retryable ones become
/// [`Error::Factory`] (the stream retries them with backoff), refusals become
/// [`Error::Http`] with the status (401, 403, 404, … end the stream), so a connection factory
/// can use `?` on them.
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
    /// HTTP 5xx, after the retries.
    #[error("server error: {0}")]
    Server(ApiError),
    /// Another status outside 2xx (400, 412, …), or a 2xx reply whose body says `"error":true`.
    #[error("request refused: {0}")]
    Status(ApiError),
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
        /// What is wrong with it (never a value from a reply that carries a secret).
        detail: String,
    },
    /// A [`ClientBuilder`](super::ClientBuilder) setting that cannot be used.
    #[error("invalid REST client setting: {0}")]
    Config(String),
    /// A stream name that cannot be used. Prints as the [`UrlError`] itself.
    #[error(transparent)]
    Url(#[from] UrlError),
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
            RestError::Transport { .. }
            | RestError::Decode { .. }
            | RestError::Config(_)
            | RestError::Url(_) => None,
        }
    }

    /// The HTTP status GDN answered, for the status variants.
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(|a| a.status)
    }

    /// GDN's `errorNum`, if the reply had one.
    pub fn error_num(&self) -> Option<i64> {
        self.api_error().and_then(|a| a.error_num)
    }

    /// True for the transient failures that a [`Client`](super::Client) retries with backoff:
    /// 429, 5xx and transport errors.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RestError::RateLimited(_) | RestError::Server(_) | RestError::Transport { .. }
        )
    }

    /// True if a request may have reached the server although no answer came back (anything
    /// but a refused connection): a request that is not idempotent is not repeated then.
    pub(super) fn may_have_reached_server(&self) -> bool {
        match self {
            RestError::Transport { source, .. } => !source.is_connect(),
            _ => false,
        }
    }

    pub(super) fn decode(request: &str, detail: impl Into<String>) -> RestError {
        RestError::Decode {
            request: request.to_string(),
            detail: detail.into(),
        }
    }
}

impl From<RestError> for Error {
    /// Retryable failures (429, 5xx, transport, an unexpected reply) become [`Error::Factory`],
    /// which a stream retries with backoff; a refusal becomes [`Error::Http`] with its status,
    /// classified like a refused handshake (401, 403, 404, 400 end the stream); a bad name or
    /// setting becomes [`Error::Url`].
    fn from(e: RestError) -> Self {
        match e {
            RestError::Unauthorized(a)
            | RestError::Forbidden(a)
            | RestError::NotFound(a)
            | RestError::Conflict(a)
            | RestError::Status(a) => Error::Http {
                status: a.status,
                body: Some(match a.error_message {
                    Some(m) => format!("{}: {m}", a.request),
                    None => a.request,
                }),
                retry_after: a.retry_after,
            },
            RestError::Url(u) => u.into(),
            RestError::Config(c) => Error::Url(c),
            e @ (RestError::RateLimited(_)
            | RestError::Server(_)
            | RestError::Transport { .. }
            | RestError::Decode { .. }) => Error::factory(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdn_error_bodies_are_read() {
        let body = br#"{"error":true,"code":409,"errorNum":581,"errorMessage":"stream exists"}"#;
        let a = ApiError::from_reply("POST /x".into(), 409, body, None);
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
        let a = ApiError::from_reply("GET /y".into(), 502, long.as_bytes(), None);
        let m = a.error_message.unwrap();
        assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
        assert!(!m.contains("s3cr3t"), "{m}");
        // A body cut short, or an echo of the request, keeps no secret either.
        for body in [
            &br#"{"email":"a@b","password":"hunter2","#[..],
            b"bad request: password=hunter2&email=a",
            br#"{"errorMessage":"rejected {\"otp\":\"hunter2\"}"}"#,
        ] {
            let a = ApiError::from_reply("POST /_open/auth".into(), 400, body, None);
            let m = a.error_message.unwrap_or_default();
            assert!(!m.contains("hunter2"), "{m}");
        }
        let empty = ApiError::from_reply("GET /y".into(), 500, b"  ", None);
        assert_eq!(empty.error_message, None);
        assert_eq!(empty.to_string(), "GET /y answered HTTP 500");
    }

    #[test]
    fn statuses_map_to_variants_and_crate_errors() {
        let api = |s| ApiError::from_reply("POST /apid/otp".into(), s, b"", None);
        for (status, retry) in [
            (401, false),
            (403, false),
            (404, false),
            (400, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            let e = RestError::from_status(api(status));
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.is_retryable(), retry, "{status}");
            let crate_error = Error::from(e);
            assert_eq!(
                crate_error.is_retryable(),
                retry,
                "{status}: {crate_error:?}"
            );
        }
        let e = Error::from(RestError::from_status(api(401)));
        assert_eq!(e.http_status(), Some(401));
        let e = Error::from(RestError::decode("POST /apid/otp", "no otp"));
        assert!(matches!(e, Error::Factory(_)), "{e:?}");
    }
}
