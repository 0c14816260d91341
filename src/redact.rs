//! Keeping secrets out of logs, errors and `Debug` output.

use std::borrow::Cow;
use std::fmt;

/// Query parameters whose values are replaced by [`redact_url`] (compared case-insensitively).
pub const SECRET_QUERY_KEYS: &[&str] = &[
    "otp",
    "token",
    "apikey",
    "api_key",
    "jwt",
    "password",
    "access_token",
];

const MASK: &str = "REDACTED";

/// Returns `url` with the values of secret query parameters ([`SECRET_QUERY_KEYS`]) and any
/// password in the user-info part replaced by `REDACTED`. Borrowed if nothing had to change.
///
/// ```
/// use stream_websocket::redact_url;
/// assert_eq!(
///     redact_url("wss://h/_ws/ws/v2/consumer/t?otp=abc&subscriptionType=Shared"),
///     "wss://h/_ws/ws/v2/consumer/t?otp=REDACTED&subscriptionType=Shared"
/// );
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut changed = false;

    // user:password@host → user:REDACTED@host
    let mut head = before_query.to_string();
    if let Some(scheme_end) = head.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = head[auth_start..]
            .find('/')
            .map_or(head.len(), |i| auth_start + i);
        if let Some(at) = head[auth_start..auth_end].rfind('@') {
            let userinfo = &head[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                let pw_start = auth_start + colon + 1;
                head.replace_range(pw_start..auth_start + at, MASK);
                changed = true;
            }
        }
    }

    let mut out = head;
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, v)) if is_secret_key(k) && !v.is_empty() => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(MASK);
                    changed = true;
                }
                _ => out.push_str(pair),
            }
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(url)
    }
}

fn is_secret_key(key: &str) -> bool {
    SECRET_QUERY_KEYS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(key))
}

/// A string that must not leak: its `Debug` and `Display` print `REDACTED`. Use
/// [`expose`](Secret::expose) where the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_query_values_and_passwords() {
        let u = "wss://user:pw@h:8080/p?Token=a.b.c&x=1&otp=&apikey=k1";
        let r = redact_url(u);
        assert_eq!(
            r,
            "wss://user:REDACTED@h:8080/p?Token=REDACTED&x=1&otp=&apikey=REDACTED"
        );
        assert!(matches!(redact_url("ws://h/p?x=1"), Cow::Borrowed(_)));
        assert_eq!(redact_url("not a url ?otp=1"), "not a url ?otp=REDACTED");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(REDACTED) REDACTED");
        assert_eq!(s.expose(), "hunter2");
    }
}
