//! Percent-encoding of names and values, and query strings built from them.

/// Appends `s` percent-encoded: unreserved characters (`A-Z a-z 0-9 - . _ ~`) stay, every other
/// UTF-8 byte becomes `%XX`.
pub(super) fn push_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// `s` percent-encoded, as [`push_encoded`] appends it: for one path segment of a REST call.
#[cfg(feature = "rest")]
pub(super) fn encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_encoded(&mut out, s);
    out
}

/// A query string under construction, parameters in the order pushed.
#[derive(Debug, Default)]
pub(super) struct Query(String);

impl Query {
    /// Appends `key=value`, the value percent-encoded (the keys are fixed parameter names).
    pub(super) fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        push_encoded(&mut self.0, value);
    }

    /// True if no parameter was pushed.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The query string, without the leading `?`.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay() {
        let mut s = String::new();
        push_encoded(&mut s, "aZ09-._~ /?%+=&é");
        assert_eq!(s, "aZ09-._~%20%2F%3F%25%2B%3D%26%C3%A9");
    }

    #[test]
    fn query_keeps_the_order_and_encodes_values() {
        let mut q = Query::default();
        assert!(q.is_empty());
        q.push("a", "1 2");
        q.push("b", "x&y");
        assert!(!q.is_empty());
        assert_eq!(q.as_str(), "a=1%202&b=x%26y");
    }
}
