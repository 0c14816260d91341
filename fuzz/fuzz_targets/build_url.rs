//! Arbitrary names, servers and option values through `Topic::{gdn,pulsar}` and
//! `Endpoint::{producer,consumer,reader}`: never a panic; a name or option breaking a documented
//! rule is refused and a valid one accepted; an accepted URL parses, starts with the server and
//! percent-decodes back to every name and option. The checks live in `../checks/build_url.rs`,
//! which `tests/fuzz_seeds.rs` replays over `seeds/build_url/` in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/build_url.rs"]
mod build_url;

fuzz_target!(|data: &[u8]| {
    build_url::check(data);
});
