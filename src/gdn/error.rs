//! [`UrlError`]: what can be wrong with a name, server address or option of a stream URL.

use crate::error::Error;

/// A stream name, server address or option that cannot be put into a stream URL.
///
/// Messages never contain secrets: server addresses are redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// A name that must not be empty is empty.
    #[error("{what} is empty")]
    EmptyName {
        /// Which name (`"tenant"`, `"fabric"`, `"stream"`, `"namespace"`, `"topic"`,
        /// `"subscription"`, `"producer name"`, …).
        what: &'static str,
    },
    /// A name contains something the server cannot accept.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server address is not `ws://host[:port]` or `wss://host[:port]`. Holds the address
    /// with any credentials redacted.
    #[error(
        "invalid server {0:?}: expected ws://host[:port] or wss://host[:port] \
         without credentials, path or query"
    )]
    InvalidServer(String),
    /// An option value the server would refuse (it answers such handshakes with HTTP 400).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option (query parameter or setting) concerned.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        Error::Url(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_wrong() {
        assert_eq!(
            UrlError::EmptyName { what: "tenant" }.to_string(),
            "tenant is empty"
        );
    }

    #[test]
    fn url_error_converts_to_crate_error() {
        let e: Error = UrlError::EmptyName { what: "tenant" }.into();
        assert!(
            matches!(&e, Error::Url(m) if m == "tenant is empty"),
            "{e:?}"
        );
        assert!(!e.is_retryable());
    }
}
