//! The checks of the `build_url` fuzz target, shared with `tests/fuzz_seeds.rs` (included there
//! with `#[path]`), so that the seed replay in `cargo test` runs exactly what the fuzzer runs.
//!
//! Input format (so that seeds can be written by hand): the bytes are split on `\n` into fields.
//!
//! | field | meaning |
//! |---|---|
//! | 0 | control bytes, read in order (missing bytes read as 0): kind (even: GDN, odd: Pulsar), role (% 3: producer, consumer, reader), local (bit 0), subscription type (% 4), option presence bits, initial position (bit 0), auth (% 4: none, apikey, bearer, otp), then little-endian numbers for the options |
//! | 1 | server |
//! | 2 | tenant |
//! | 3 | fabric (GDN) or namespace (Pulsar) |
//! | 4 | stream (GDN) or topic (Pulsar) |
//! | 5 | subscription |
//! | 6 | producer / consumer / reader name |
//! | 7 | reader start message id, API key, token or one-time password |
//!
//! Invalid UTF-8 is replaced (lossy), so every input is a valid case.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use stream_websocket::gdn::{
    Auth, ConsumerOptions, Endpoint, InitialPosition, ProducerOptions, ReaderOptions, ReaderStart,
    SubscriptionType, Topic,
};
use stream_websocket::tungstenite::http;
use stream_websocket::{MessageId, Secret};

/// Largest value the server accepts in a numeric option (a Java `int`).
const MAX_INT: u64 = i32::MAX as u64;

/// Reads little-endian numbers from the control bytes; missing bytes read as zero.
struct Control<'a>(&'a [u8]);

impl Control<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A duration of up to ~584 years in nanoseconds: covers sub-millisecond rounding and values
    /// far past the server's limit.
    fn duration(&mut self) -> Duration {
        Duration::from_nanos(self.u64())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Producer,
    Consumer,
    Reader,
}

/// One decoded case.
#[derive(Debug)]
pub struct Case {
    gdn: bool,
    role: Role,
    local: bool,
    subscription_type: SubscriptionType,
    server: String,
    tenant: String,
    namespace_or_fabric: String,
    topic_or_stream: String,
    subscription: String,
    name: Option<String>,
    secret: String,
    auth: u8,
    send_timeout: Option<Duration>,
    max_pending: Option<u32>,
    receiver_queue_size: Option<u32>,
    ack_timeout: Option<Duration>,
    negative_ack_delay: Option<Duration>,
    initial_position: Option<InitialPosition>,
    priority_level: Option<i32>,
    reader_start: ReaderStart,
}

impl Case {
    pub fn decode(data: &[u8]) -> Case {
        let mut fields = data.split(|&b| b == b'\n');
        let mut c = Control(fields.next().unwrap_or_default());
        let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        let server = text();
        let tenant = text();
        let namespace_or_fabric = text();
        let topic_or_stream = text();
        let subscription = text();
        let name = text();
        let secret = text();

        let gdn = c.u8() % 2 == 0;
        let role = match c.u8() % 3 {
            0 => Role::Producer,
            1 => Role::Consumer,
            _ => Role::Reader,
        };
        let local = c.u8() & 1 == 1;
        let subscription_type = match c.u8() % 4 {
            0 => SubscriptionType::Exclusive,
            1 => SubscriptionType::Shared,
            2 => SubscriptionType::Failover,
            _ => SubscriptionType::KeyShared,
        };
        let present = c.u8();
        let position = c.u8();
        let auth = c.u8() % 4;
        let has = |bit: u8| present & (1 << bit) != 0;
        let name = has(0).then_some(name);
        let send_timeout = has(1).then(|| c.duration());
        let max_pending = has(2).then(|| c.u32());
        let receiver_queue_size = has(3).then(|| c.u32());
        let ack_timeout = has(4).then(|| c.duration());
        let negative_ack_delay = has(5).then(|| c.duration());
        let priority_level = has(6).then(|| c.u32() as i32);
        let initial_position = match position % 3 {
            0 => None,
            1 => Some(InitialPosition::Latest),
            _ => Some(InitialPosition::Earliest),
        };
        let reader_start = match position % 4 {
            0 => ReaderStart::Latest,
            1 => ReaderStart::Earliest,
            _ => ReaderStart::MessageId(MessageId::new(secret.clone())),
        };
        Case {
            gdn,
            role,
            local,
            subscription_type,
            server,
            tenant,
            namespace_or_fabric,
            topic_or_stream,
            subscription,
            name,
            secret,
            auth,
            send_timeout,
            max_pending,
            receiver_queue_size,
            ack_timeout,
            negative_ack_delay,
            initial_position,
            priority_level,
            reader_start,
        }
    }
}

// ----- the documented rules, as a model ----------------------------------------------------------

/// A name inside a path segment: not empty, no `/`, `%` or control character.
fn name_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains('%') && !s.chars().any(char::is_control)
}

/// A whole path segment: also not `.` or `..`.
fn segment_ok(s: &str) -> bool {
    name_ok(s) && s != "." && s != ".."
}

/// Whole milliseconds, rounded up.
fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}

fn millis_ok(d: Duration) -> bool {
    ceil_millis(d) <= u128::from(MAX_INT)
}

/// The `(namespace, topic)` the topic must get, or `None` if the names break a documented rule.
fn expected_topic(case: &Case) -> Option<(String, String)> {
    if case.gdn {
        let (fabric, stream) = (&case.namespace_or_fabric, &case.topic_or_stream);
        let ok = segment_ok(&case.tenant)
            && name_ok(fabric)
            && name_ok(stream)
            && stream.chars().count() <= 230
            && !stream.starts_with("c8globals.")
            && !stream.starts_with("c8locals.");
        let (ns, tp) = if case.local {
            ("c8local", "c8locals")
        } else {
            ("c8global", "c8globals")
        };
        ok.then(|| (format!("{ns}.{fabric}"), format!("{tp}.{stream}")))
    } else {
        let ok = segment_ok(&case.tenant)
            && segment_ok(&case.namespace_or_fabric)
            && segment_ok(&case.topic_or_stream);
        ok.then(|| {
            (
                case.namespace_or_fabric.clone(),
                case.topic_or_stream.clone(),
            )
        })
    }
}

/// The query parameters the URL must carry (decoded), or `None` if an option breaks a rule.
fn expected_query(case: &Case) -> Option<BTreeMap<String, String>> {
    let mut q = BTreeMap::new();
    let mut put = |k: &str, v: String| q.insert(k.to_string(), v);
    if let Some(name) = &case.name {
        if name.is_empty() {
            return None;
        }
    }
    let int_ok = |n: u32| u64::from(n) <= MAX_INT;
    match case.role {
        Role::Producer => {
            if let Some(n) = &case.name {
                put("producerName", n.clone());
            }
            if let Some(t) = case.send_timeout {
                if !millis_ok(t) {
                    return None;
                }
                put("sendTimeoutMillis", ceil_millis(t).to_string());
            }
            if let Some(n) = case.max_pending {
                if !int_ok(n) {
                    return None;
                }
                put("maxPendingMessages", n.to_string());
            }
        }
        Role::Consumer => {
            if !segment_ok(&case.subscription) {
                return None;
            }
            put(
                "subscriptionType",
                case.subscription_type.as_str().to_string(),
            );
            if let Some(n) = case.receiver_queue_size {
                if !int_ok(n) {
                    return None;
                }
                put("receiverQueueSize", n.to_string());
            }
            if let Some(n) = &case.name {
                put("consumerName", n.clone());
            }
            if let Some(t) = case.ack_timeout {
                let ms = ceil_millis(t);
                if !millis_ok(t) || (ms != 0 && ms < 1000) {
                    return None;
                }
                put("ackTimeoutMillis", ms.to_string());
            }
            if let Some(d) = case.negative_ack_delay {
                if !millis_ok(d) {
                    return None;
                }
                put("negativeAckRedeliveryDelay", ceil_millis(d).to_string());
            }
            if let Some(p) = case.initial_position {
                put("subscriptionInitialPosition", p.as_str().to_string());
            }
            if let Some(l) = case.priority_level {
                put("priorityLevel", l.to_string());
            }
        }
        Role::Reader => {
            if let Some(n) = &case.name {
                put("readerName", n.clone());
            }
            if let Some(n) = case.receiver_queue_size {
                if !int_ok(n) {
                    return None;
                }
                put("receiverQueueSize", n.to_string());
            }
            let id = match &case.reader_start {
                ReaderStart::Earliest => "earliest".to_string(),
                ReaderStart::Latest => "latest".to_string(),
                ReaderStart::MessageId(id) if id.as_str().is_empty() => return None,
                ReaderStart::MessageId(id) => id.as_str().to_string(),
            };
            put("messageId", id);
        }
    }
    Some(q)
}

/// `scheme://authority` as the URL must start: the scheme in lower case, one trailing `/` gone.
fn expected_prefix(server: &str) -> Option<String> {
    let (scheme, rest) = server.split_once("://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    Some(format!("{}://{authority}", scheme.to_ascii_lowercase()))
}

/// A server that is certainly acceptable: `ws`/`wss`, a host of letters, digits, `-`, `.`, `_`,
/// an optional port 1..=65535, and `http::Uri` parses it.
fn plainly_valid_server(server: &str) -> bool {
    let Some((scheme, rest)) = server.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        return false;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n != 0)
    });
    host_ok && port_ok && http::Uri::try_from(format!("{server}/x").as_str()).is_ok()
}

// ----- decoding what the URL holds --------------------------------------------------------------

/// Percent-decodes one URL component; `None` for a malformed escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every byte is unreserved or part of a `%XX` escape with upper-case hex digits.
fn properly_encoded(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1..i + 3).is_some_and(|h| {
                h.iter()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
            });
            if !ok {
                return false;
            }
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'.' | b'_' | b'~') {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("query pair without '=': {pair:?}"));
        assert!(properly_encoded(v), "query value not encoded: {v:?}");
        let v = percent_decode(v).unwrap_or_else(|| panic!("query value does not decode: {v:?}"));
        assert!(
            map.insert(k.to_string(), v).is_none(),
            "duplicate query key {k:?}"
        );
    }
    map
}

// ----- the check ---------------------------------------------------------------------------------

/// Builds the topic and endpoint of `data` and checks them against the model. Panics on any
/// violation; never panics otherwise.
pub fn check(data: &[u8]) {
    let case = Case::decode(data);

    let topic = if case.gdn {
        Topic::gdn(
            &case.tenant,
            &case.namespace_or_fabric,
            &case.topic_or_stream,
            case.local,
        )
    } else {
        Topic::pulsar(
            &case.tenant,
            &case.namespace_or_fabric,
            &case.topic_or_stream,
        )
    };
    let want_topic = expected_topic(&case);
    let topic = match (topic, &want_topic) {
        (Ok(t), Some((ns, tp))) => {
            assert_eq!(t.tenant(), case.tenant);
            assert_eq!(t.namespace(), ns);
            assert_eq!(t.topic(), tp);
            assert_eq!(t.is_gdn(), case.gdn);
            assert_eq!(
                t.full_name(),
                format!("persistent://{}/{ns}/{tp}", case.tenant)
            );
            assert_eq!(t.to_string(), t.full_name());
            t
        }
        (Err(e), None) => {
            let _ = e.to_string();
            return;
        }
        (Ok(t), None) => panic!("topic accepted against the rules: {case:?} -> {t:?}"),
        (Err(e), Some(_)) => panic!("valid topic refused: {case:?} -> {e}"),
    };

    let endpoint = match case.role {
        Role::Producer => {
            let mut o = ProducerOptions::default();
            if let Some(n) = &case.name {
                o = o.producer_name(n.clone());
            }
            if let Some(t) = case.send_timeout {
                o = o.send_timeout(t);
            }
            if let Some(n) = case.max_pending {
                o = o.max_pending_messages(n);
            }
            Endpoint::producer(&case.server, &topic, o)
        }
        Role::Consumer => {
            let mut o = ConsumerOptions::new(case.subscription.clone())
                .subscription_type(case.subscription_type);
            if let Some(n) = case.receiver_queue_size {
                o = o.receiver_queue_size(n);
            }
            if let Some(n) = &case.name {
                o = o.consumer_name(n.clone());
            }
            if let Some(t) = case.ack_timeout {
                o = o.ack_timeout(t);
            }
            if let Some(d) = case.negative_ack_delay {
                o = o.negative_ack_delay(d);
            }
            if let Some(p) = case.initial_position {
                o = o.initial_position(p);
            }
            if let Some(l) = case.priority_level {
                o = o.priority_level(l);
            }
            Endpoint::consumer(&case.server, &topic, o)
        }
        Role::Reader => {
            let mut o = ReaderOptions::default().start(case.reader_start.clone());
            if let Some(n) = &case.name {
                o = o.reader_name(n.clone());
            }
            if let Some(n) = case.receiver_queue_size {
                o = o.receiver_queue_size(n);
            }
            Endpoint::reader(&case.server, &topic, o)
        }
    };
    let want_query = expected_query(&case);
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            let text = e.to_string();
            let must_succeed =
                want_query.is_some() && plainly_valid_server(&case.server) && data.len() < 8 * 1024;
            assert!(!must_succeed, "valid endpoint refused: {case:?} -> {text}");
            return;
        }
    };
    let want_query =
        want_query.unwrap_or_else(|| panic!("endpoint accepted against the rules: {case:?}"));
    let (namespace, topic_name) = want_topic.expect("checked above");

    // The URL parses, starts with the server and holds every name, percent-encoded.
    let url = endpoint.url();
    let uri = http::Uri::try_from(url.as_str())
        .unwrap_or_else(|e| panic!("URL does not parse: {url:?}: {e}"));
    assert!(matches!(uri.scheme_str(), Some("ws" | "wss")), "{url}");
    let prefix = expected_prefix(&case.server)
        .unwrap_or_else(|| panic!("accepted a server without a scheme: {case:?}"));
    assert!(
        url.starts_with(&prefix),
        "URL {url:?} does not start with {prefix:?}"
    );
    let rest = &url[prefix.len()..];
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    assert_eq!(uri.path(), path, "{url}");
    assert_eq!(uri.query().unwrap_or(""), query, "{url}");

    let role = match case.role {
        Role::Producer => "producer",
        Role::Consumer => "consumer",
        Role::Reader => "reader",
    };
    let mut want_path: Vec<(&str, bool)> = Vec::new();
    if case.gdn {
        want_path.push(("_ws", false));
    }
    want_path.extend([
        ("ws", false),
        ("v2", false),
        (role, false),
        ("persistent", false),
    ]);
    want_path.extend([
        (case.tenant.as_str(), true),
        (namespace.as_str(), true),
        (topic_name.as_str(), true),
    ]);
    if case.role == Role::Consumer {
        want_path.push((case.subscription.as_str(), true));
    }
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("path {path:?} does not start with '/'"))
        .split('/')
        .collect();
    assert_eq!(segments.len(), want_path.len(), "{url}");
    for (seg, (want, encoded)) in segments.iter().zip(&want_path) {
        if *encoded {
            assert!(properly_encoded(seg), "segment {seg:?} of {url:?}");
            assert_eq!(
                percent_decode(seg).as_deref(),
                Some(*want),
                "segment of {url:?}"
            );
        } else {
            assert_eq!(seg, want, "{url}");
        }
    }
    assert_eq!(parse_query(query), want_query, "query of {url:?}");
    assert_eq!(endpoint.topic(), &topic);

    // The upgrade request for one attempt, with the authentication of the case.
    let auth = match case.auth {
        0 => Auth::None,
        1 => Auth::api_key(case.secret.clone()),
        2 => Auth::bearer(case.secret.clone()),
        _ => {
            let otp = case.secret.clone();
            Auth::otp(move || {
                let otp = otp.clone();
                async move { Ok(Secret::new(otp)) }
            })
        }
    };
    let endpoint = endpoint.with_auth(auth);
    let debug = format!("{endpoint:?}");
    if case.auth != 0 && case.secret.len() >= 12 && !url.contains(&case.secret) {
        assert!(!debug.contains(&case.secret), "secret in Debug: {debug}");
    }
    let request = endpoint
        .request()
        .now_or_never()
        .expect("building a request does not wait when the password is at hand");
    match (case.auth, request) {
        (0, Ok(r)) => assert_eq!(r.uri().to_string(), url),
        (0, Err(e)) => panic!("request for a valid URL refused: {url:?}: {e}"),
        (1 | 2, Ok(r)) => {
            assert_eq!(r.uri().to_string(), url);
            let value = r
                .headers()
                .get(http::header::AUTHORIZATION)
                .expect("an Authorization header");
            assert!(value.is_sensitive());
            let scheme = if case.auth == 1 { "apikey" } else { "bearer" };
            assert_eq!(
                value.as_bytes(),
                format!("{scheme} {}", case.secret).as_bytes()
            );
        }
        (1 | 2, Err(e)) => {
            // Refused only for an empty secret or one that cannot be a header value.
            let scheme = if case.auth == 1 { "apikey" } else { "bearer" };
            let header_ok =
                http::HeaderValue::from_str(&format!("{scheme} {}", case.secret)).is_ok();
            assert!(
                case.secret.is_empty() || !header_ok,
                "usable secret refused: {e}"
            );
            assert!(!e.to_string().contains(&case.secret) || case.secret.len() < 12);
        }
        (_, Ok(r)) => {
            let full = r.uri().to_string();
            let appended = full
                .strip_prefix(&url)
                .unwrap_or_else(|| panic!("{full:?} does not extend {url:?}"));
            let sep = if url.contains('?') { "&otp=" } else { "?otp=" };
            let encoded = appended
                .strip_prefix(sep)
                .unwrap_or_else(|| panic!("{appended:?} is not an otp parameter"));
            assert!(properly_encoded(encoded), "{encoded:?}");
            assert_eq!(
                percent_decode(encoded).as_deref(),
                Some(case.secret.as_str())
            );
        }
        (_, Err(e)) => {
            assert!(case.secret.is_empty(), "one-time password refused: {e}");
        }
    }
}
