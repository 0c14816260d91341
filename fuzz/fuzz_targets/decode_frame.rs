//! Arbitrary server frames: decoding must never panic, only JSON objects decode, whatever decodes
//! as a consumer message must carry a non-empty id, and binary frames are always refused. The checks live in
//! `../checks/decode_frame.rs`, which `tests/fuzz_seeds.rs` replays over `seeds/decode_frame/` in
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/decode_frame.rs"]
mod decode_frame;

fuzz_target!(|data: &[u8]| {
    decode_frame::check(data);
});
