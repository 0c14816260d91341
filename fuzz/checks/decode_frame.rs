//! The checks of the `decode_frame` fuzz target, shared with `tests/fuzz_seeds.rs` (included there
//! with `#[path]`), so that the seed replay in `cargo test` runs exactly what the fuzzer runs.
//!
//! The input is one server frame: as a text frame when it is UTF-8, and always as a binary frame.
//! Never a panic; the stream's `Codec::decode` and `PulsarCodec::decode_text` agree; only a JSON
//! object decodes; a consumer message has a non-empty id; a binary frame is refused.
#![allow(dead_code)]

use stream_websocket::tungstenite::Message;
use stream_websocket::{AckResult, Codec, DecodeError, Incoming, PulsarCodec};

/// Decodes `data` as the stream would; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let mut codec = PulsarCodec;
    if let Ok(text) = std::str::from_utf8(data) {
        let decoded = codec.decode(Message::Text(text.into()));
        // The stream's path and the public helper agree.
        assert_eq!(decoded, PulsarCodec::decode_text(text));
        // Frames are JSON objects: nothing else decodes (serde would read a struct from an
        // array, field by field).
        if decoded.is_ok() {
            let start = text.trim_start_matches([' ', '\t', '\n', '\r']);
            assert!(
                start.starts_with('{'),
                "not an object, yet decoded: {text:?}"
            );
        }
        match &decoded {
            Ok(Incoming::Message(m)) => assert!(!m.message_id.as_str().is_empty()),
            Ok(Incoming::Ack(a)) => {
                if let AckResult::Ok(id) = &a.result {
                    let _ = id.as_str();
                }
            }
            Ok(Incoming::EndOfTopic(_) | Incoming::Json(_)) => {}
            Ok(other) => panic!("unknown variant {other:?}"),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // The protocol has no binary frames: every one is refused with its length.
    assert_eq!(
        codec.decode(Message::Binary(data.to_vec().into())),
        Err(DecodeError::Binary(data.len()))
    );
}
