//! Arbitrary server frames: decoding must never panic, and whatever decodes as a consumer message
//! must carry a non-empty id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_websocket::tungstenite::Message;
use stream_websocket::{Codec, Incoming, PulsarCodec};

fuzz_target!(|data: &[u8]| {
    let mut codec = PulsarCodec;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(Incoming::Message(m)) = codec.decode(Message::Text(text.into())) {
            assert!(!m.message_id.as_str().is_empty());
        }
    }
    let _ = codec.decode(Message::Binary(data.to_vec().into()));
});
