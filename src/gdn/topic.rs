//! [`Topic`]: where a stream lives, named the GDN or the Apache Pulsar way, and the checks on
//! the names that go into stream URLs.

use std::fmt;

use super::error::UrlError;

/// The default GDN fabric, `_system`.
pub const DEFAULT_FABRIC: &str = "_system";

/// Longest GDN stream name (without the `c8globals.` / `c8locals.` prefix) the server accepts
/// when a stream is created: 230 characters.
pub const MAX_STREAM_NAME_CHARS: usize = 230;

/// Where a stream lives: `persistent://<tenant>/<namespace>/<topic>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    tenant: String,
    namespace: String,
    topic: String,
    gdn: bool,
}

impl Topic {
    /// A Macrometa GDN stream.
    ///
    /// A global stream lives in namespace `c8global.<fabric>` as topic `c8globals.<stream>`; a
    /// local one (`local == true`) in `c8local.<fabric>` as `c8locals.<stream>`. Pass the bare
    /// stream name, without the prefix. Most streams are in the fabric [`DEFAULT_FABRIC`]
    /// (`_system`).
    ///
    /// ```
    /// use stream_websocket::gdn::{Topic, DEFAULT_FABRIC};
    ///
    /// let topic = Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false)?;
    /// assert_eq!(topic.full_name(), "persistent://acme_x.com/c8global._system/c8globals.orders");
    /// # Ok::<(), stream_websocket::gdn::UrlError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`UrlError::EmptyName`] for an empty tenant, fabric or stream; [`UrlError::InvalidName`]
    /// for a name containing `/`, `%` or a control character, a stream name longer than
    /// [`MAX_STREAM_NAME_CHARS`] or one that already has the `c8globals.` / `c8locals.` prefix,
    /// and a tenant that is `.` or `..`.
    pub fn gdn(tenant: &str, fabric: &str, stream: &str, local: bool) -> Result<Topic, UrlError> {
        check_segment("tenant", tenant)?;
        check_name("fabric", fabric)?;
        check_name("stream", stream)?;
        if stream.chars().count() > MAX_STREAM_NAME_CHARS {
            return Err(invalid_name("stream", stream, "longer than 230 characters"));
        }
        if stream.starts_with("c8globals.") || stream.starts_with("c8locals.") {
            return Err(invalid_name(
                "stream",
                stream,
                "already has the c8globals./c8locals. prefix; pass the bare stream name",
            ));
        }
        let (ns, tp) = if local {
            ("c8local", "c8locals")
        } else {
            ("c8global", "c8globals")
        };
        Ok(Topic {
            tenant: tenant.to_string(),
            namespace: format!("{ns}.{fabric}"),
            topic: format!("{tp}.{stream}"),
            gdn: true,
        })
    }

    /// A plain Apache Pulsar topic, `persistent://<tenant>/<namespace>/<topic>`.
    ///
    /// # Errors
    ///
    /// [`UrlError::EmptyName`] for an empty name; [`UrlError::InvalidName`] for a name containing
    /// `/`, `%` or a control character, or one that is `.` or `..`.
    pub fn pulsar(tenant: &str, namespace: &str, topic: &str) -> Result<Topic, UrlError> {
        check_segment("tenant", tenant)?;
        check_segment("namespace", namespace)?;
        check_segment("topic", topic)?;
        Ok(Topic {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            gdn: false,
        })
    }

    /// True for a GDN stream (its URLs get the `/_ws` prefix).
    pub fn is_gdn(&self) -> bool {
        self.gdn
    }

    /// `persistent://<tenant>/<namespace>/<topic>`, for display and logs (not percent-encoded).
    pub fn full_name(&self) -> String {
        format!(
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The namespace (`c8global.<fabric>` / `c8local.<fabric>` for GDN).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The topic name within the namespace (`c8globals.<stream>` / `c8locals.<stream>` for GDN).
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }
}

fn invalid_name(what: &'static str, name: &str, reason: &'static str) -> UrlError {
    UrlError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    }
}

/// A name that is part of a path segment.
fn check_name(what: &'static str, name: &str) -> Result<(), UrlError> {
    if name.is_empty() {
        return Err(UrlError::EmptyName { what });
    }
    if name.contains('/') {
        return Err(invalid_name(what, name, "contains '/'"));
    }
    if name.contains('%') {
        return Err(invalid_name(what, name, "contains '%'"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid_name(what, name, "contains a control character"));
    }
    Ok(())
}

/// A name that is a whole path segment: also not `.` or `..`, which proxies may resolve away.
pub(super) fn check_segment(what: &'static str, name: &str) -> Result<(), UrlError> {
    check_name(what, name)?;
    if name == "." || name == ".." {
        return Err(invalid_name(what, name, "is '.' or '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gdn_topic() -> Topic {
        Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false).unwrap()
    }

    #[test]
    fn gdn_global_topic() {
        let topic = gdn_topic();
        assert!(topic.is_gdn());
        assert_eq!(
            topic.full_name(),
            "persistent://acme_x.com/c8global._system/c8globals.orders"
        );
        assert_eq!(topic.to_string(), topic.full_name());
    }

    #[test]
    fn gdn_local_topic() {
        let topic = Topic::gdn("acme", "fab1", "events", true).unwrap();
        assert_eq!(topic.tenant(), "acme");
        assert_eq!(topic.namespace(), "c8local.fab1");
        assert_eq!(topic.topic(), "c8locals.events");
    }

    #[test]
    fn pulsar_topic() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        assert!(!topic.is_gdn());
        assert_eq!(topic.full_name(), "persistent://public/default/orders");
    }

    #[test]
    fn display_names_are_not_encoded() {
        let topic = Topic::gdn("t", "my fabric", "Bestellungen für Köln~", false).unwrap();
        assert_eq!(
            topic.full_name(),
            "persistent://t/c8global.my fabric/c8globals.Bestellungen für Köln~"
        );
    }

    #[test]
    fn empty_names_are_rejected() {
        assert_eq!(
            Topic::gdn("", "f", "s", false),
            Err(UrlError::EmptyName { what: "tenant" })
        );
        assert_eq!(
            Topic::gdn("t", "", "s", false),
            Err(UrlError::EmptyName { what: "fabric" })
        );
        assert_eq!(
            Topic::gdn("t", "f", "", false),
            Err(UrlError::EmptyName { what: "stream" })
        );
        assert_eq!(
            Topic::pulsar("t", "", "x"),
            Err(UrlError::EmptyName { what: "namespace" })
        );
        assert_eq!(
            Topic::pulsar("t", "n", ""),
            Err(UrlError::EmptyName { what: "topic" })
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let reason = |r: Result<Topic, UrlError>| match r {
            Err(UrlError::InvalidName { reason, .. }) => reason,
            other => panic!("expected InvalidName, got {other:?}"),
        };
        assert_eq!(reason(Topic::gdn("a/b", "f", "s", false)), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f/g", "s", false)), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f", "s/x", false)), "contains '/'");
        assert_eq!(reason(Topic::pulsar("t", "n", "a/b")), "contains '/'");
        assert_eq!(reason(Topic::gdn("t", "f", "50%", false)), "contains '%'");
        assert_eq!(reason(Topic::pulsar("t%20", "n", "x")), "contains '%'");
        assert_eq!(
            reason(Topic::gdn("t", "f", "a\nb", false)),
            "contains a control character"
        );
        assert_eq!(
            reason(Topic::pulsar("t", "n\u{7f}", "x")),
            "contains a control character"
        );
        assert_eq!(reason(Topic::pulsar("..", "n", "x")), "is '.' or '..'");
        assert_eq!(reason(Topic::pulsar("t", ".", "x")), "is '.' or '..'");

        let ok = "é".repeat(MAX_STREAM_NAME_CHARS);
        assert!(Topic::gdn("t", "f", &ok, false).is_ok());
        let long = "s".repeat(MAX_STREAM_NAME_CHARS + 1);
        assert_eq!(
            reason(Topic::gdn("t", "f", &long, false)),
            "longer than 230 characters"
        );
        assert!(matches!(
            Topic::gdn("t", "f", "c8globals.orders", false),
            Err(UrlError::InvalidName { what: "stream", .. })
        ));
    }
}
