//! Turning WebSocket messages into items and back.
//!
//! [`ReconnectingStream`](crate::ReconnectingStream) is generic over a [`Codec`]. The default,
//! [`PulsarCodec`], speaks the JSON frames of GDN streams and the Apache Pulsar WebSocket API;
//! [`RawCodec`] passes text and binary messages through untouched.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::error::DecodeError;

/// Decodes incoming data messages and encodes outgoing items.
///
/// Control frames (ping, pong, close) never reach a codec: the stream handles them.
pub trait Codec {
    /// What the stream yields.
    type Item;
    /// What the sink accepts.
    type Out;

    /// Decodes one text or binary message.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`]; the stream reports it on the error channel and skips the message.
    fn decode(&mut self, message: Message) -> Result<Self::Item, DecodeError>;

    /// Encodes one outgoing item. Takes a reference because the stream keeps the item until the
    /// connection has flushed it, so it can be written again after a reconnect.
    fn encode(&mut self, item: &Self::Out) -> Message;

    /// Whether this decoded item proves that the connection works: the peer did what the
    /// application asked of it. When a connection on which the peer sent at least one such item
    /// ends, the reconnect schedule starts over (the next reconnect goes out within the first
    /// reconnect window), however short the connection lived; see
    /// [`ReconnectConfigBuilder::first_reconnect_window`](crate::ReconnectConfigBuilder::first_reconnect_window).
    ///
    /// Control frames (pings, pongs) and frames that do not decode never count. The default
    /// counts every decoded item; [`PulsarCodec`] does not count error answers.
    fn is_progress(&self, item: &Self::Item) -> bool {
        let _ = item;
        true
    }
}

/// Passes text and binary messages through unchanged.
///
/// # Cost per message
///
/// The stream keeps each message it writes until the flush that delivers it, so the connection
/// gets a second handle to the same payload. Text and binary payloads are reference-counted
/// (`bytes::Bytes`), so the handle copies no data: it costs one atomic increment, and one
/// decrement when the message is flushed. A payload that is not shared yet and was built from a
/// `String` or `Vec<u8>` with no spare capacity (`Message::text(String::from("…"))`, for one)
/// becomes shared at that point, which allocates a small header once for that message. A
/// payload built with spare capacity, or cloned from one already sent, has that header already.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Item = Message;
    type Out = Message;

    #[inline]
    fn decode(&mut self, message: Message) -> Result<Message, DecodeError> {
        Ok(message)
    }

    #[inline]
    fn encode(&mut self, item: &Message) -> Message {
        // Text and binary payloads are reference-counted: these clones copy no data. The data
        // cases are spelled out so that the common ones skip the general enum clone.
        match item {
            Message::Text(text) => Message::Text(text.clone()),
            Message::Binary(data) => Message::Binary(data.clone()),
            other => other.clone(),
        }
    }
}

/// The GDN / Pulsar WebSocket JSON frames: consumer messages, producer acknowledgements, and a
/// raw JSON fallback for anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct PulsarCodec;

/// An opaque message id, as the server sent it (base64 of Pulsar's serialized id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// Wraps an id received earlier.
    pub fn new(id: impl Into<String>) -> Self {
        MessageId(id.into())
    }

    /// The id as the server sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message delivered to a consumer or reader.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerMessage {
    /// The id to acknowledge it with.
    pub message_id: MessageId,
    /// The payload bytes (decoded from base64).
    pub payload: Bytes,
    /// Application properties (possibly empty).
    pub properties: HashMap<String, String>,
    /// When the broker stored it, ISO-8601 as the server formats it.
    pub publish_time: Option<String>,
    /// The producer-set event time, if any.
    pub event_time: Option<String>,
    /// The ordering key, if any.
    pub key: Option<String>,
    /// How often it was redelivered (0 when the server does not say).
    pub redelivery_count: u32,
}

/// The server's answer to one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerAck {
    /// The `context` the message was sent with, echoed back.
    pub context: Option<String>,
    /// Stored, or why not.
    pub result: AckResult,
}

/// Whether a published message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckResult {
    /// Stored under this id (`"result": "ok"`).
    Ok(MessageId),
    /// Refused (`"result": "send-error:N"`): 3 = not JSON, 7 = bad payload or event time,
    /// 8 = broker failure (timeout, queue full).
    Failed {
        /// The `N` of `send-error:N`, if present.
        code: Option<u32>,
        /// The server's `errorMsg`.
        message: String,
    },
}

/// A decoded server frame.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Incoming {
    /// A consumer or reader message.
    Message(ConsumerMessage),
    /// A producer acknowledgement.
    Ack(ProducerAck),
    /// The answer to an `isEndOfTopic` command.
    EndOfTopic(bool),
    /// Any other JSON object.
    Json(serde_json::Map<String, serde_json::Value>),
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// The payload bytes; sent base64-encoded.
    pub payload: Bytes,
    /// Application properties.
    pub properties: HashMap<String, String>,
    /// Ordering key (needed for Key_Shared subscriptions).
    pub key: Option<String>,
    /// Echoed in the acknowledgement; make it unique to correlate acks with messages.
    pub context: Option<String>,
    /// Event time, ISO-8601 with offset (e.g. `2024-05-01T12:00:00.000Z`).
    pub event_time: Option<String>,
}

impl Publish {
    /// A message with this payload and nothing else.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Publish {
            payload: payload.into(),
            ..Publish::default()
        }
    }

    /// Adds an application property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets the ordering key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the context echoed in the acknowledgement.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Sets the event time (ISO-8601 with offset).
    pub fn event_time(mut self, time: impl Into<String>) -> Self {
        self.event_time = Some(time.into());
        self
    }
}

/// Something to send to the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outgoing {
    /// Publish a message (producer sockets): `{"payload": base64, …}`.
    Publish(Publish),
    /// Acknowledge a message (consumer and reader sockets): `{"messageId": id}`.
    Ack(MessageId),
    /// Ask for redelivery after the negative-ack delay:
    /// `{"type": "negativeAcknowledge", "messageId": id}`. Servers older than Pulsar 2.7 treat it
    /// as an ack.
    Nack(MessageId),
    /// Allow this many more deliveries (consumers in pull mode only).
    Permit(u32),
    /// Any JSON object, sent as is.
    Json(serde_json::Map<String, serde_json::Value>),
}

impl From<Publish> for Outgoing {
    fn from(p: Publish) -> Self {
        Outgoing::Publish(p)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireCommand<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permit_messages: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFrame<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    payload: Option<Cow<'a, str>>,
    #[serde(default)]
    properties: Option<HashMap<String, String>>,
    #[serde(default)]
    publish_time: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    redelivery_count: Option<u32>,
    #[serde(borrow, default, deserialize_with = "borrowed_str")]
    result: Option<Cow<'a, str>>,
    #[serde(default)]
    error_msg: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    end_of_topic: Option<bool>,
}

/// An optional string field that borrows from the frame unless it has escapes. (serde's
/// `#[serde(borrow)]` does not reach through `Option`: a plain `Option<Cow<str>>` field is
/// always copied.) Accepts and rejects exactly what `Option<String>` does.
fn borrowed_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct OptionalStr;
    struct Str;

    impl<'de> Visitor<'de> for OptionalStr {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Str).map(Some)
        }
    }

    impl<'de> Visitor<'de> for Str {
        type Value = Cow<'de, str>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }

    d.deserialize_option(OptionalStr)
}

/// Frames expected to be up to this size are serialized in a per-thread buffer and then copied
/// into an allocation of exactly their size; larger ones are serialized in place.
const SCRATCH_LIMIT: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serializes a frame. `capacity`: the expected size.
fn to_json(value: &impl Serialize, capacity: usize) -> Message {
    to_frame(capacity, |buf| json_into(buf, value))
}

fn json_into(buf: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(buf, value).expect("serializing to a Vec cannot fail");
}

/// A text frame of what `write` writes, which must be UTF-8. `capacity`: the expected size. A
/// small frame costs one allocation: a `Bytes` made from a `Vec` with spare capacity needs a
/// second one (its shared header), one made from an exactly sized `Vec` does not.
fn to_frame(capacity: usize, write: impl Fn(&mut Vec<u8>)) -> Message {
    let exact = if capacity <= SCRATCH_LIMIT {
        SCRATCH
            .try_with(|scratch| {
                let mut buf = scratch.try_borrow_mut().ok()?;
                buf.clear();
                write(&mut buf);
                let exact = buf.to_vec();
                if buf.capacity() > SCRATCH_LIMIT {
                    *buf = Vec::new();
                }
                Some(exact)
            })
            .ok()
            .flatten()
    } else {
        None
    };
    let buf = exact.unwrap_or_else(|| {
        let mut buf = Vec::with_capacity(capacity);
        write(&mut buf);
        buf
    });
    let text = String::from_utf8(buf).expect("frames are written as UTF-8");
    Message::Text(text.into())
}

/// Writes a publish frame exactly as `serde_json` prints it (fields in the order payload,
/// properties, key, context, eventTime; absent ones left out), except that the base64 payload
/// is encoded straight into the frame: base64 never needs JSON escaping, and running it through
/// the escaper was most of the cost of a frame.
fn write_publish(p: &Publish, buf: &mut Vec<u8>) {
    buf.extend_from_slice(br#"{"payload":""#);
    match base64::encoded_len(p.payload.len(), true) {
        Some(n) => {
            let start = buf.len();
            buf.resize(start + n, 0);
            let written = STANDARD
                .encode_slice(&p.payload, &mut buf[start..])
                .expect("the space is what encoded_len asked for");
            buf.truncate(start + written);
        }
        // A length whose base64 overflows usize cannot be in memory; kept total all the same.
        None => buf.extend_from_slice(STANDARD.encode(&p.payload).as_bytes()),
    }
    buf.push(b'"');
    if !p.properties.is_empty() {
        buf.extend_from_slice(br#","properties":"#);
        json_into(buf, &p.properties);
    }
    let fields: [(&[u8], &Option<String>); 3] = [
        (br#","key":"#, &p.key),
        (br#","context":"#, &p.context),
        (br#","eventTime":"#, &p.event_time),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            buf.extend_from_slice(name);
            json_into(buf, value);
        }
    }
    buf.push(b'}');
}

impl PulsarCodec {
    /// Decodes one text frame.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Json`] for text that is not JSON, [`DecodeError::Shape`] for JSON of the
    /// wrong shape, [`DecodeError::Base64`] for a payload that is not standard padded base64.
    pub fn decode_text(text: &str) -> Result<Incoming, DecodeError> {
        // serde would also read a struct from a JSON array (fields by position); frames are
        // objects only.
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => DecodeError::Shape("frame is not a JSON object".into()),
                Err(e) => DecodeError::Json(e.to_string()),
            });
        }
        let frame: WireFrame<'_> = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => return Err(classify_json_error(e)),
        };
        if let Some(result) = frame.result {
            let result = if result == "ok" {
                let id = frame.message_id.ok_or_else(|| {
                    DecodeError::Shape("acknowledgement with result ok but no messageId".into())
                })?;
                AckResult::Ok(MessageId(id.into_owned()))
            } else {
                let code = result
                    .strip_prefix("send-error:")
                    .and_then(|n| n.trim().parse().ok());
                AckResult::Failed {
                    code,
                    message: frame.error_msg.unwrap_or_default(),
                }
            };
            return Ok(Incoming::Ack(ProducerAck {
                context: frame.context,
                result,
            }));
        }
        if let Some(id) = frame.message_id {
            let payload = frame.payload.ok_or_else(|| {
                DecodeError::Shape("message frame with a messageId but no payload".into())
            })?;
            if id.is_empty() {
                return Err(DecodeError::Shape(
                    "message frame with an empty messageId".into(),
                ));
            }
            let payload = STANDARD
                .decode(payload.as_bytes())
                .map_err(|e| DecodeError::Base64 {
                    field: "payload",
                    detail: e.to_string(),
                })?;
            return Ok(Incoming::Message(ConsumerMessage {
                message_id: MessageId(id.into_owned()),
                payload: Bytes::from(payload),
                properties: frame.properties.unwrap_or_default(),
                publish_time: frame.publish_time,
                event_time: frame.event_time,
                key: frame.key,
                redelivery_count: frame.redelivery_count.unwrap_or(0),
            }));
        }
        if let Some(end) = frame.end_of_topic {
            return Ok(Incoming::EndOfTopic(end));
        }
        // Anything else: hand the object over as it is (a rare path, so parsing twice is fine).
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(Incoming::Json(map)),
            Ok(_) => Err(DecodeError::Shape("frame is not a JSON object".into())),
            Err(e) => Err(DecodeError::Json(e.to_string())),
        }
    }

    /// Encodes one outgoing item as a text frame.
    pub fn encode_outgoing(item: &Outgoing) -> Message {
        match item {
            Outgoing::Publish(p) => {
                // base64 grows by 4/3; the rest is small unless there are many properties.
                let capacity =
                    p.payload.len() / 3 * 4 + 64 + p.context.as_ref().map_or(0, String::len);
                to_frame(capacity, |buf| write_publish(p, buf))
            }
            Outgoing::Ack(id) => to_json(
                &WireCommand {
                    kind: None,
                    message_id: Some(id.as_str()),
                    permit_messages: None,
                },
                id.0.len() + 20,
            ),
            Outgoing::Nack(id) => to_json(
                &WireCommand {
                    kind: Some("negativeAcknowledge"),
                    message_id: Some(id.as_str()),
                    permit_messages: None,
                },
                id.0.len() + 56,
            ),
            Outgoing::Permit(n) => to_json(
                &WireCommand {
                    kind: Some("permit"),
                    message_id: None,
                    permit_messages: Some(*n),
                },
                48,
            ),
            Outgoing::Json(map) => to_json(map, 64),
        }
    }
}

/// Tells "not JSON at all" from "JSON of the wrong shape" (for text that starts like an object).
fn classify_json_error(e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => DecodeError::Shape(e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => DecodeError::Json(e.to_string()),
    }
}

impl Codec for PulsarCodec {
    type Item = Incoming;
    type Out = Outgoing;

    fn decode(&mut self, message: Message) -> Result<Incoming, DecodeError> {
        match message {
            Message::Text(text) => Self::decode_text(text.as_str()),
            Message::Binary(data) => Err(DecodeError::Binary(data.len())),
            _ => Err(DecodeError::Shape(
                "control frame given to the codec".into(),
            )),
        }
    }

    fn encode(&mut self, item: &Outgoing) -> Message {
        Self::encode_outgoing(item)
    }

    /// A consumer message, a stored-message acknowledgement (the producer's confirmation) and an
    /// end-of-topic answer count as progress. Error answers do not: a refused publish
    /// (`send-error`), and any other JSON object with an `error` or `errorMsg` field.
    fn is_progress(&self, item: &Incoming) -> bool {
        match item {
            Incoming::Message(_) | Incoming::EndOfTopic(_) => true,
            Incoming::Ack(ack) => matches!(ack.result, AckResult::Ok(_)),
            Incoming::Json(object) => {
                !(object.contains_key("error") || object.contains_key("errorMsg"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: Message) -> String {
        match m {
            Message::Text(t) => t.as_str().to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn messages_and_confirmations_are_progress_and_error_answers_are_not() {
        let codec = PulsarCodec;
        let progress = |frame: &str| codec.is_progress(&PulsarCodec::decode_text(frame).unwrap());
        assert!(progress(
            r#"{"messageId":"CAAQAw==","payload":"aGk=","publishTime":"t"}"#
        ));
        assert!(progress(
            r#"{"result":"ok","messageId":"CAAQAw==","context":"1"}"#
        ));
        assert!(progress(r#"{"endOfTopic":false}"#));
        assert!(progress(r#"{"type":"status","ready":true}"#));
        assert!(!progress(
            r#"{"result":"send-error:7","errorMsg":"bad payload","context":"1"}"#
        ));
        assert!(!progress(r#"{"errorMsg":"not authorized"}"#));
        assert!(!progress(r#"{"error":true,"code":401}"#));
    }

    #[test]
    fn decodes_a_consumer_message() {
        let f = r#"{"messageId":"CAAQAw==","payload":"aMOpbGxv","properties":{"a":"b"},
            "publishTime":"2021-10-29T16:01:38.967-07:00","redeliveryCount":2,"key":"k","extra":1}"#;
        let Incoming::Message(m) = PulsarCodec::decode_text(f).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.message_id.as_str(), "CAAQAw==");
        assert_eq!(&m.payload[..], "héllo".as_bytes());
        assert_eq!(m.properties["a"], "b");
        assert_eq!(m.redelivery_count, 2);
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(m.event_time, None);
    }

    #[test]
    fn decodes_acks() {
        let ok = PulsarCodec::decode_text(r#"{"result":"ok","messageId":"id1","context":"c1"}"#);
        assert_eq!(
            ok.unwrap(),
            Incoming::Ack(ProducerAck {
                context: Some("c1".into()),
                result: AckResult::Ok(MessageId::new("id1")),
            })
        );
        let err = PulsarCodec::decode_text(
            r#"{"result":"send-error:7","errorMsg":"bad payload","context":"c2","errorCode":0}"#,
        );
        assert_eq!(
            err.unwrap(),
            Incoming::Ack(ProducerAck {
                context: Some("c2".into()),
                result: AckResult::Failed {
                    code: Some(7),
                    message: "bad payload".into()
                },
            })
        );
    }

    #[test]
    fn other_frames_fall_back_to_json() {
        assert_eq!(
            PulsarCodec::decode_text(r#"{"endOfTopic":true}"#).unwrap(),
            Incoming::EndOfTopic(true)
        );
        let Incoming::Json(map) = PulsarCodec::decode_text(r#"{"hello":[1,2]}"#).unwrap() else {
            panic!()
        };
        assert_eq!(map["hello"], serde_json::json!([1, 2]));
    }

    #[test]
    fn bad_frames_give_typed_errors() {
        assert!(matches!(
            PulsarCodec::decode_text("not json"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            PulsarCodec::decode_text("[1,2]"),
            Err(DecodeError::Shape(_))
        ));
        // An array in the order of a message's fields is still not a message.
        assert!(matches!(
            PulsarCodec::decode_text(r#"["id","aGk="]"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            PulsarCodec::decode_text(r#"{"messageId":5,"payload":"AA=="}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            PulsarCodec::decode_text(r#"{"messageId":"x","payload":"!!!"}"#),
            Err(DecodeError::Base64 { .. })
        ));
        assert!(matches!(
            PulsarCodec::decode_text(r#"{"messageId":"x"}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            PulsarCodec.decode(Message::Binary(Bytes::from_static(b"\x00\x01"))),
            Err(DecodeError::Binary(2))
        ));
    }

    #[test]
    fn encodes_outgoing_frames() {
        let p = Publish::new(&b"h\xc3\xa9"[..])
            .property("p", "v")
            .context("c-1")
            .key("k");
        let v: serde_json::Value =
            serde_json::from_str(&text(PulsarCodec::encode_outgoing(&p.into()))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"payload":"aMOp","properties":{"p":"v"},"context":"c-1","key":"k"})
        );
        assert_eq!(
            text(PulsarCodec::encode_outgoing(&Publish::new("hi").into())),
            r#"{"payload":"aGk="}"#
        );
        assert_eq!(
            text(PulsarCodec::encode_outgoing(&Outgoing::Ack(
                MessageId::new("m1")
            ))),
            r#"{"messageId":"m1"}"#
        );
        assert_eq!(
            text(PulsarCodec::encode_outgoing(&Outgoing::Nack(
                MessageId::new("m1")
            ))),
            r#"{"type":"negativeAcknowledge","messageId":"m1"}"#
        );
        assert_eq!(
            text(PulsarCodec::encode_outgoing(&Outgoing::Permit(3))),
            r#"{"type":"permit","permitMessages":3}"#
        );
    }

    /// The publish frame as serde prints it, for comparison with `write_publish`.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SerdePublish<'a> {
        payload: String,
        #[serde(skip_serializing_if = "HashMap::is_empty")]
        properties: &'a HashMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        context: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event_time: &'a Option<String>,
    }

    proptest::proptest! {
        /// The hand-written publish frame is byte for byte what serde_json prints, and decodes
        /// back to the same message.
        #[test]
        fn publish_frames_match_serde(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            properties in proptest::collection::hash_map(".{0,6}", ".{0,6}", 0..3),
            key in proptest::option::of(".{0,8}"),
            context in proptest::option::of("[\\\"\u{0}-\u{1f}a-z\u{e9}\u{1F600}]{0,8}"),
            event_time in proptest::option::of(".{0,8}"),
        ) {
            let mut p = Publish::new(payload.clone());
            p.properties = properties.clone();
            p.key = key.clone();
            p.context = context.clone();
            p.event_time = event_time.clone();
            let ours = text(PulsarCodec::encode_outgoing(&Outgoing::Publish(p)));
            let serde = serde_json::to_string(&SerdePublish {
                payload: STANDARD.encode(&payload),
                properties: &properties,
                key: &key,
                context: &context,
                event_time: &event_time,
            })
            .unwrap();
            proptest::prop_assert_eq!(&ours, &serde);
        }
    }
}
