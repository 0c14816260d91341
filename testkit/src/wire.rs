//! What the local server parses and prints: request paths and query strings, producer and
//! consumer frames, message ids and timestamps. Every parser returns an error value for bad
//! input; nothing here panics on what a client sends.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The base64 decoder for payloads: the standard alphabet like Java's basic decoder, which
/// accepts a missing `=` padding and rejects the URL-safe alphabet and line breaks.
const PAYLOAD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A handshake refusal: the HTTP status and the text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) status: u16,
    pub(super) body: String,
}

impl Rejection {
    pub(super) fn new(status: u16, body: impl Into<String>) -> Self {
        Rejection {
            status,
            body: body.into(),
        }
    }

    fn bad_param(detail: impl std::fmt::Display) -> Self {
        Rejection::new(400, format!("Invalid query params: {detail}"))
    }
}

/// Which endpoint a request opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndpointKind {
    Producer,
    Consumer,
    Reader,
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) kind: EndpointKind,
    /// `persistent://tenant/namespace/topic`, percent-decoded.
    pub(super) topic: String,
    /// The consumer's subscription name, percent-decoded.
    pub(super) subscription: Option<String>,
}

/// Parses `/_ws/ws/v2/{kind}/persistent/{tenant}/{namespace}/{topic}[/{subscription}]`, with
/// or without the `/_ws` prefix.
pub(super) fn parse_route(path: &str) -> Result<Route, Rejection> {
    let not_found = || {
        Rejection::new(
            404,
            "Not found: expected /ws/v2/{producer|consumer|reader}/persistent/{tenant}/{namespace}/{topic}[/{subscription}], optionally prefixed by /_ws",
        )
    };
    let rest = match path.strip_prefix("/_ws") {
        Some(r) if r.starts_with("/ws/") => r,
        _ => path,
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < 4 || !segments[0].is_empty() || segments[1] != "ws" || segments[2] != "v2" {
        return Err(not_found());
    }
    let kind = match segments[3] {
        "producer" => EndpointKind::Producer,
        "consumer" => EndpointKind::Consumer,
        "reader" => EndpointKind::Reader,
        _ => return Err(not_found()),
    };
    match segments.get(4) {
        Some(&"persistent") => {}
        Some(&"non-persistent") => {
            return Err(Rejection::new(
                400,
                "Invalid topic domain: only persistent topics are supported",
            ))
        }
        _ => return Err(not_found()),
    }
    let names = &segments[5..];
    let expected = match kind {
        EndpointKind::Consumer => 4,
        EndpointKind::Producer | EndpointKind::Reader => 3,
    };
    if names.len() != expected {
        return Err(if kind == EndpointKind::Consumer && names.len() >= 3 {
            Rejection::new(
                400,
                "Invalid subscription: expected exactly one non-empty path segment after the topic",
            )
        } else {
            not_found()
        });
    }
    let mut decoded = Vec::with_capacity(names.len());
    for (i, raw) in names.iter().enumerate() {
        let what = ["tenant", "namespace", "topic", "subscription"][i];
        let value = percent_decode(raw, false)
            .ok_or_else(|| Rejection::new(400, format!("Invalid {what}: bad percent-encoding")))?;
        if value.is_empty() {
            return Err(Rejection::new(400, format!("Invalid {what}: empty")));
        }
        if value.contains('/') {
            return Err(Rejection::new(400, format!("Invalid {what}: contains '/'")));
        }
        decoded.push(value);
    }
    Ok(Route {
        kind,
        topic: format!("persistent://{}/{}/{}", decoded[0], decoded[1], decoded[2]),
        subscription: decoded.get(3).cloned(),
    })
}

/// Percent-decodes `s`; with `plus_is_space`, `+` means a space (query strings, as a servlet
/// container decodes them). `None` for a broken escape or bytes that are not UTF-8.
pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A decoded query string. For a repeated name the first value counts, like a servlet's
/// `getParameter`.
#[derive(Debug, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: Option<&str>) -> Result<Query, Rejection> {
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
                return Err(Rejection::new(
                    400,
                    "Invalid query params: bad percent-encoding",
                ));
            };
            pairs.push((k, v));
        }
        Ok(Query(pairs))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A subscription type, as named in `subscriptionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubType {
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

impl SubType {
    /// Exclusive and Failover: one consumer receives at a time.
    pub(super) fn single_active(self) -> bool {
        matches!(self, SubType::Exclusive | SubType::Failover)
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InitialPosition {
    Latest,
    Earliest,
}

/// The consumer's query parameters.
#[derive(Debug, Clone)]
pub(super) struct ConsumerParams {
    pub(super) kind: SubType,
    /// Most unacknowledged messages in flight; at least 1.
    pub(super) queue: usize,
    pub(super) initial: InitialPosition,
    pub(super) ack_timeout: Option<Duration>,
    pub(super) nack_delay: Duration,
}

/// The most messages in flight per consumer or reader connection, and the default.
pub(super) const MAX_QUEUE: usize = 1000;

fn queue_size(q: &Query) -> Result<usize, Rejection> {
    match q.get("receiverQueueSize") {
        None => Ok(MAX_QUEUE),
        Some(v) => match v.trim().parse::<u64>() {
            // 0 means one message at a time, as in the Pulsar proxy.
            Ok(n) => Ok(usize::try_from(n).unwrap_or(MAX_QUEUE).clamp(1, MAX_QUEUE)),
            Err(_) => Err(Rejection::bad_param(
                "receiverQueueSize must be a non-negative integer",
            )),
        },
    }
}

fn millis(q: &Query, name: &str) -> Result<Option<u64>, Rejection> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Rejection::bad_param(format!("{name} must be a non-negative integer"))),
    }
}

pub(super) fn consumer_params(
    q: &Query,
    default_nack_delay: Duration,
) -> Result<ConsumerParams, Rejection> {
    let kind = match q.get("subscriptionType") {
        None | Some("Exclusive") => SubType::Exclusive,
        Some("Shared") => SubType::Shared,
        Some("Failover") => SubType::Failover,
        Some("Key_Shared") => SubType::KeyShared,
        Some(_) => {
            return Err(Rejection::bad_param(
                "subscriptionType must be Exclusive, Shared, Failover or Key_Shared",
            ))
        }
    };
    let initial = match q.get("subscriptionInitialPosition") {
        None | Some("Latest") => InitialPosition::Latest,
        Some("Earliest") => InitialPosition::Earliest,
        Some(_) => {
            return Err(Rejection::bad_param(
                "subscriptionInitialPosition must be Latest or Earliest",
            ))
        }
    };
    let ack_timeout = match millis(q, "ackTimeoutMillis")? {
        None | Some(0) => None,
        Some(ms) if ms >= 1000 => Some(Duration::from_millis(ms)),
        Some(_) => {
            return Err(Rejection::bad_param(
                "ackTimeoutMillis must be 0 or at least 1000",
            ))
        }
    };
    let nack_delay =
        millis(q, "negativeAckRedeliveryDelay")?.map_or(default_nack_delay, Duration::from_millis);
    Ok(ConsumerParams {
        kind,
        queue: queue_size(q)?,
        initial,
        ack_timeout,
        nack_delay,
    })
}

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReaderStart {
    Earliest,
    Latest,
    /// After the message with this id (exclusive, like Pulsar's default).
    After(String),
}

/// The reader's query parameters.
#[derive(Debug, Clone)]
pub(super) struct ReaderParams {
    pub(super) start: ReaderStart,
    pub(super) queue: usize,
}

pub(super) fn reader_params(q: &Query) -> Result<ReaderParams, Rejection> {
    let start = match q.get("messageId") {
        None | Some("latest") => ReaderStart::Latest,
        Some("earliest") => ReaderStart::Earliest,
        Some(id) => ReaderStart::After(id.to_string()),
    };
    Ok(ReaderParams {
        start,
        queue: queue_size(q)?,
    })
}

/// Builds a message id: base64 of `<ledger>:<entry>`.
pub(super) fn message_id(ledger: u64, entry: usize) -> String {
    // Once per stored message: the text is put together on the stack, not by `format!`.
    let mut text = [0u8; 41];
    let mut len = push_decimal(&mut text, 0, ledger);
    text[len] = b':';
    len = push_decimal(&mut text, len + 1, entry as u64);
    STANDARD.encode(&text[..len])
}

/// Writes `n` in decimal at `at`; returns the end. (`buf` has room: 20 digits at most.)
fn push_decimal(buf: &mut [u8], at: usize, mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[at..at + d.len()].copy_from_slice(d);
    at + d.len()
}

/// Splits a message id built by [`message_id`]; `None` if it is not one.
pub(super) fn parse_message_id(id: &str) -> Option<(u64, usize)> {
    let raw = STANDARD.decode(id.trim()).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (ledger, entry) = text.split_once(':')?;
    Some((ledger.parse().ok()?, entry.parse().ok()?))
}

/// A message a producer sent, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewMessage {
    pub(super) payload: Bytes,
    pub(super) properties: BTreeMap<String, String>,
    pub(super) key: Option<String>,
    pub(super) context: Option<String>,
    pub(super) event_time: Option<String>,
}

/// Why a producer frame was refused: `send-error:<code>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SendError {
    pub(super) code: u8,
    pub(super) message: String,
    pub(super) context: Option<String>,
}

impl SendError {
    fn json(message: impl Into<String>) -> Self {
        SendError {
            code: 3,
            message: message.into(),
            context: None,
        }
    }
}

/// A JSON scalar read as a string, the way Jackson coerces scalars into `String` fields;
/// `None` for null. Borrowed from the frame unless it has escapes.
struct Scalar<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // As serde_json prints the number it parsed.
                let n = serde_json::Number::from_f64(v)
                    .map_or_else(|| v.to_string(), |n| n.to_string());
                Ok(Some(Cow::Owned(n)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        d.deserialize_any(V).map(Scalar)
    }
}

/// `properties`: an object of scalars (null values are left out), or null.
struct Properties(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BTreeMap<String, String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`properties` as an object of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(BTreeMap::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut properties = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    // A repeated key: the last one counts, as in a JSON object tree.
                    match map.next_value::<Scalar<'de>>()?.0 {
                        Some(v) => properties.insert(k, v.into_owned()),
                        None => properties.remove(&k),
                    };
                }
                Ok(properties)
            }
        }
        d.deserialize_any(V).map(Properties)
    }
}

/// A producer frame as read, before its payload is checked.
#[derive(Default)]
struct PublishFrame<'a> {
    payload: Option<Cow<'a, str>>,
    context: Option<Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
    event_time: Option<Cow<'a, str>>,
    properties: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for PublishFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        enum Field {
            Payload,
            Context,
            Key,
            EventTime,
            Properties,
            Other,
        }
        impl<'de> Deserialize<'de> for Field {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Field;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                        Ok(match v {
                            "payload" => Field::Payload,
                            "context" => Field::Context,
                            "key" => Field::Key,
                            "eventTime" => Field::EventTime,
                            "properties" => Field::Properties,
                            _ => Field::Other,
                        })
                    }
                }
                d.deserialize_identifier(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PublishFrame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Unknown fields are ignored; a repeated field: the last one counts.
                let mut frame = PublishFrame::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Payload => frame.payload = map.next_value::<Scalar<'de>>()?.0,
                        Field::Context => frame.context = map.next_value::<Scalar<'de>>()?.0,
                        Field::Key => frame.key = map.next_value::<Scalar<'de>>()?.0,
                        Field::EventTime => frame.event_time = map.next_value::<Scalar<'de>>()?.0,
                        Field::Properties => frame.properties = map.next_value::<Properties>()?.0,
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(frame)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks one producer frame. (Read field by field, borrowing from the text: this runs once
/// per published message.)
///
/// Not JSON, not an object or a field of the wrong type → code 3 without the context (the
/// proxy could not read it); a missing, null or non-base64 payload or a bad `eventTime` → code 7
/// with the context.
pub(super) fn parse_publish(text: &str) -> Result<NewMessage, SendError> {
    let frame: PublishFrame<'_> = serde_json::from_str(text)
        .map_err(|e| SendError::json(format!("Failed to deserialize from JSON: {e}")))?;
    let context = frame.context.map(Cow::into_owned);
    let payload_error = |message: String| SendError {
        code: 7,
        message,
        context: context.clone(),
    };
    let Some(payload) = frame.payload else {
        return Err(payload_error("Payload is null or missing".into()));
    };
    let payload = PAYLOAD_BASE64
        .decode(payload.as_bytes())
        .map_err(|e| payload_error(format!("Failed to decode payload as base64: {e}")))?;
    if let Some(t) = &frame.event_time {
        if !is_iso8601_with_offset(t) {
            return Err(payload_error(format!(
                "Failed to parse eventTime {t:?}: expected ISO-8601 with an offset"
            )));
        }
    }
    Ok(NewMessage {
        payload: Bytes::from(payload),
        properties: frame.properties,
        key: frame.key.map(Cow::into_owned),
        context,
        event_time: frame.event_time.map(Cow::into_owned),
    })
}

/// A consumer or reader command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// No `type` or an unknown one: an acknowledgement (or, on a reader, flow control).
    Ack(Option<String>),
    /// `negativeAcknowledge`.
    Nack(Option<String>),
    /// `permit` (only meaningful in pull mode, which this server does not have).
    Permit,
    /// `isEndOfTopic`.
    IsEndOfTopic,
}

/// Parses a consumer or reader frame; `Err` when it is not a JSON object (the proxy then closes
/// the socket).
pub(super) fn parse_command(text: &str) -> Result<Command, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let id = match obj.get("messageId") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(match obj.get("type").and_then(Value::as_str) {
        Some("negativeAcknowledge") => Command::Nack(id),
        Some("permit") => Command::Permit,
        Some("isEndOfTopic") => Command::IsEndOfTopic,
        _ => Command::Ack(id),
    })
}

/// A producer acknowledgement frame.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckFrame<'a> {
    result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_msg: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("serializing to a String cannot fail")
}

/// The producer's success acknowledgement.
pub(super) fn ok_ack(message_id: &str, context: Option<&str>) -> String {
    json(&AckFrame {
        result: "ok",
        message_id: Some(message_id),
        error_msg: None,
        context,
    })
}

/// The producer's failure acknowledgement.
pub(super) fn error_ack(e: &SendError) -> String {
    json(&AckFrame {
        result: &format!("send-error:{}", e.code),
        message_id: None,
        error_msg: Some(&e.message),
        context: e.context.as_deref(),
    })
}

/// A consumer or reader message frame.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryFrame<'a> {
    message_id: &'a str,
    payload: String,
    properties: &'a BTreeMap<String, String>,
    publish_time: &'a str,
    redelivery_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<&'a str>,
}

/// The consumer and reader message frame.
pub(super) fn delivery(
    message_id: &str,
    payload: &[u8],
    properties: &BTreeMap<String, String>,
    publish_time: &str,
    redelivery_count: u32,
    key: Option<&str>,
    event_time: Option<&str>,
) -> String {
    json(&DeliveryFrame {
        message_id,
        payload: STANDARD.encode(payload),
        properties,
        publish_time,
        redelivery_count,
        key,
        event_time,
    })
}

/// `time` as ISO-8601 UTC with milliseconds, e.g. `2026-11-23T10:00:00.000Z`.
pub(super) fn iso8601(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// True for `YYYY-MM-DDTHH:MM[:SS[.fraction]](Z|±HH:MM)`, the shape Java's
/// `ISO_OFFSET_DATE_TIME` reads.
pub(super) fn is_iso8601_with_offset(s: &str) -> bool {
    fn num(s: &str, range: std::ops::RangeInclusive<u32>) -> bool {
        s.bytes().all(|b| b.is_ascii_digit()) && s.parse().is_ok_and(|n| range.contains(&n))
    }
    let Some((date, time)) = s.split_once('T') else {
        return false;
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3
        || d[0].len() != 4
        || !num(d[0], 0..=9999)
        || d[1].len() != 2
        || !num(d[1], 1..=12)
        || d[2].len() != 2
        || !num(d[2], 1..=31)
    {
        return false;
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, None)
    } else if let Some(i) = time.rfind(['+', '-']) {
        (&time[..i], Some(&time[i + 1..]))
    } else {
        return false;
    };
    if let Some(off) = offset {
        let Some((h, m)) = off.split_once(':') else {
            return false;
        };
        if h.len() != 2 || !num(h, 0..=18) || m.len() != 2 || !num(m, 0..=59) {
            return false;
        }
    }
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let t: Vec<&str> = hms.split(':').collect();
    let ranges = [0..=23, 0..=59, 0..=60];
    (t.len() == 2 || (t.len() == 3))
        && (fraction.is_none() || t.len() == 3)
        && t.iter()
            .zip(ranges)
            .all(|(part, range)| part.len() == 2 && num(part, range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r =
            parse_route("/_ws/ws/v2/consumer/persistent/t%2Ex/c8local._system/c8locals.s/my%20sub")
                .unwrap();
        assert_eq!(r.kind, EndpointKind::Consumer);
        assert_eq!(r.topic, "persistent://t.x/c8local._system/c8locals.s");
        assert_eq!(r.subscription.as_deref(), Some("my sub"));
        let r = parse_route("/ws/v2/producer/persistent/public/default/t").unwrap();
        assert_eq!(r.kind, EndpointKind::Producer);
        assert_eq!(r.subscription, None);
        assert_eq!(
            parse_route("/ws/v2/reader/persistent/a/b/c").unwrap().kind,
            EndpointKind::Reader
        );

        for (path, status) in [
            ("/", 404),
            ("/ws/v2/producer", 404),
            ("/ws/v1/producer/persistent/a/b/c", 404),
            ("/x/ws/v2/producer/persistent/a/b/c", 404),
            ("/ws/v2/nope/persistent/a/b/c", 404),
            ("/ws/v2/producer/persistent/a/b", 404),
            ("/ws/v2/producer/persistent/a/b/c/d", 404),
            ("/ws/v2/producer/non-persistent/a/b/c", 400),
            ("/ws/v2/consumer/persistent/a/b/c", 400),
            ("/ws/v2/consumer/persistent/a/b/c/", 400),
            ("/ws/v2/consumer/persistent/a/b/c/d/e", 400),
            ("/ws/v2/producer/persistent/a//c", 400),
            ("/ws/v2/producer/persistent/a/b/%zz", 400),
            ("/ws/v2/producer/persistent/a/b/%2F", 400),
            ("/ws/v2/producer/persistent/a/b/%FF", 400),
        ] {
            assert_eq!(
                parse_route(path).map_err(|r| r.status),
                Err(status),
                "{path}"
            );
        }
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("a=1&b=x%3D%3D&c&a=2&d=x+y")).unwrap();
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x=="));
        assert_eq!(q.get("c"), Some(""));
        assert_eq!(q.get("d"), Some("x y"));
        assert_eq!(q.get("e"), None);
        assert!(Query::parse(Some("a=%4")).is_err());

        let d = Duration::from_millis(100);
        let p = consumer_params(&Query::default(), d).unwrap();
        assert_eq!(p.kind, SubType::Exclusive);
        assert_eq!(p.queue, 1000);
        assert_eq!(p.initial, InitialPosition::Latest);
        assert_eq!(p.ack_timeout, None);
        let q = Query::parse(Some(
            "subscriptionType=Key_Shared&receiverQueueSize=0&subscriptionInitialPosition=Earliest&ackTimeoutMillis=1000",
        ))
        .unwrap();
        let p = consumer_params(&q, d).unwrap();
        assert_eq!(p.kind, SubType::KeyShared);
        assert_eq!(p.queue, 1);
        assert_eq!(p.initial, InitialPosition::Earliest);
        assert_eq!(p.ack_timeout, Some(Duration::from_secs(1)));
        let q = Query::parse(Some("receiverQueueSize=5000")).unwrap();
        assert_eq!(consumer_params(&q, d).unwrap().queue, 1000);
        for bad in [
            "subscriptionType=shared",
            "subscriptionType=",
            "receiverQueueSize=-1",
            "receiverQueueSize=x",
            "ackTimeoutMillis=999",
            "ackTimeoutMillis=x",
            "subscriptionInitialPosition=earliest",
        ] {
            let q = Query::parse(Some(bad)).unwrap();
            assert_eq!(consumer_params(&q, d).unwrap_err().status, 400, "{bad}");
        }
        let q = Query::parse(Some("messageId=earliest")).unwrap();
        assert_eq!(reader_params(&q).unwrap().start, ReaderStart::Earliest);
        assert_eq!(
            reader_params(&Query::default()).unwrap().start,
            ReaderStart::Latest
        );
    }

    #[test]
    fn ids_are_base64_of_ledger_and_entry() {
        for (ledger, entry) in [(0, 0), (7, 42), (u64::MAX, usize::MAX), (10, 1_000_000)] {
            let id = message_id(ledger, entry);
            assert_eq!(
                STANDARD.decode(&id).unwrap(),
                format!("{ledger}:{entry}").into_bytes()
            );
            assert_eq!(parse_message_id(&id), Some((ledger, entry)));
        }
    }

    #[test]
    fn ids_round_trip() {
        let id = message_id(3, 41);
        assert_eq!(parse_message_id(&id), Some((3, 41)));
        assert_eq!(parse_message_id("!!"), None);
        assert_eq!(parse_message_id(&STANDARD.encode("x:1")), None);
        assert_eq!(parse_message_id(""), None);
    }

    #[test]
    fn publish_frames() {
        let m = parse_publish(
            r#"{"payload":"aGk=","properties":{"a":"b","n":1},"key":"k","context":"c","eventTime":"2024-05-01T12:00:00.000Z","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(&m.payload[..], b"hi");
        assert_eq!(m.properties["a"], "b");
        assert_eq!(m.properties["n"], "1");
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(m.context.as_deref(), Some("c"));
        assert_eq!(
            &parse_publish(r#"{"payload":"aGk"}"#).unwrap().payload[..],
            b"hi"
        );
        assert_eq!(parse_publish(r#"{"payload":""}"#).unwrap().payload.len(), 0);

        for bad in [
            "nope",
            "[1]",
            "\"noop\"",
            r#"{"payload":[1]}"#,
            r#"{"properties":[]}"#,
            r#"{"context":{}}"#,
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert_eq!((e.code, e.context), (3, None), "{bad}");
        }
        for bad in [
            r#"{"context":"c"}"#,
            r#"{"payload":null,"context":"c"}"#,
            r#"{"payload":"a-_b","context":"c"}"#,
            r#"{"payload":"aGk=\n","context":"c"}"#,
            r#"{"payload":"aGk=","eventTime":"yesterday","context":"c"}"#,
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert_eq!((e.code, e.context.as_deref()), (7, Some("c")), "{bad}");
        }
    }

    #[test]
    fn publish_frames_read_like_a_json_tree() {
        // Scalars are coerced to strings as Jackson does; numbers print as serde_json prints them.
        let m = parse_publish(
            r#"{"payload":"aGk=","key":7,"context":true,"properties":{"f":1.5,"e":1e3,"neg":-2,"u":"\u00e9"}}"#,
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some("7"));
        assert_eq!(m.context.as_deref(), Some("true"));
        assert_eq!(m.properties["f"], "1.5");
        assert_eq!(m.properties["e"], "1000.0");
        assert_eq!(m.properties["neg"], "-2");
        assert_eq!(m.properties["u"], "\u{e9}");
        // A repeated field or property: the last one counts; a null property is left out.
        let m = parse_publish(
            r#"{"payload":"eA==","context":"a","context":"b","properties":{"p":"1","p":null,"q":"1","q":"2"},"payload":"aGk="}"#,
        )
        .unwrap();
        assert_eq!(&m.payload[..], b"hi");
        assert_eq!(m.context.as_deref(), Some("b"));
        assert_eq!(m.properties.len(), 1);
        assert_eq!(m.properties["q"], "2");
        // Null fields are absent; unknown fields of any shape are ignored.
        let m = parse_publish(
            r#"{"payload":"aGk=","key":null,"properties":null,"x":{"y":[1,{"z":null}]}}"#,
        )
        .unwrap();
        assert_eq!((m.key, m.properties.len()), (None, 0));
        // A non-scalar property value or a trailing second value: not readable, code 3.
        for bad in [
            r#"{"payload":"aGk=","properties":{"a":[]}}"#,
            r#"{"payload":"aGk="} {}"#,
            r#"{"payload":"aGk=","key":{}}"#,
        ] {
            assert_eq!(parse_publish(bad).unwrap_err().code, 3, "{bad}");
        }
    }

    #[test]
    fn printed_frames() {
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            parse(ok_ack("aWQ=", Some("c"))),
            serde_json::json!({"result": "ok", "messageId": "aWQ=", "context": "c"})
        );
        assert_eq!(
            parse(ok_ack("aWQ=", None)),
            serde_json::json!({"result": "ok", "messageId": "aWQ="})
        );
        let e = SendError {
            code: 7,
            message: "bad \"payload\"".into(),
            context: Some("c".into()),
        };
        assert_eq!(
            parse(error_ack(&e)),
            serde_json::json!({"result": "send-error:7", "errorMsg": "bad \"payload\"", "context": "c"})
        );
        let props = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert_eq!(
            parse(delivery(
                "aWQ=",
                b"hi",
                &props,
                "2026-01-01T00:00:00.000Z",
                2,
                Some("k"),
                None
            )),
            serde_json::json!({
                "messageId": "aWQ=", "payload": "aGk=", "properties": {"a": "b"},
                "publishTime": "2026-01-01T00:00:00.000Z", "redeliveryCount": 2, "key": "k"
            })
        );
        assert_eq!(
            parse(delivery(
                "aWQ=",
                b"",
                &BTreeMap::new(),
                "t",
                0,
                None,
                Some("e")
            ))["properties"],
            serde_json::json!({})
        );
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_command(r#"{"messageId":"x"}"#),
            Ok(Command::Ack(Some("x".into())))
        );
        assert_eq!(
            parse_command(r#"{"type":"whatever","messageId":"x"}"#),
            Ok(Command::Ack(Some("x".into())))
        );
        assert_eq!(
            parse_command(r#"{"type":"negativeAcknowledge","messageId":"x"}"#),
            Ok(Command::Nack(Some("x".into())))
        );
        assert_eq!(
            parse_command(r#"{"type":"permit","permitMessages":3}"#),
            Ok(Command::Permit)
        );
        assert_eq!(
            parse_command(r#"{"type":"isEndOfTopic"}"#),
            Ok(Command::IsEndOfTopic)
        );
        assert_eq!(parse_command("{}"), Ok(Command::Ack(None)));
        assert!(parse_command("\"noop\"").is_err());
        assert!(parse_command("noop").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        for ok in [
            "2024-05-01T12:00:00.000Z",
            "2021-10-29T16:01:38.967-07:00",
            "2021-10-29T16:01+02:00",
            "2021-10-29T16:01:38Z",
        ] {
            assert!(is_iso8601_with_offset(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T12:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00.5Z",
            "2024-05-01T12:00:00+0200",
            "2016-08-30 16:45:57.785",
            "２０２４-05-01T12:00:00Z",
        ] {
            assert!(!is_iso8601_with_offset(bad), "{bad}");
        }
    }
}
