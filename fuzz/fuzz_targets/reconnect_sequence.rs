//! Scripted connection outcomes and configurations through the real `ReconnectingStream` on a
//! paused-clock runtime: it always ends, stays ended, waits exactly the scheduled delays, never
//! retries past the cap, and loses or repeats no message or item. The checks live in
//! `../checks/reconnect_sequence.rs`, which `tests/fuzz_seeds.rs` replays over
//! `seeds/reconnect_sequence/` in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/reconnect_sequence.rs"]
mod reconnect_sequence;

fuzz_target!(|data: &[u8]| {
    reconnect_sequence::check(data);
});
