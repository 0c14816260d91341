//! Replays the checked-in fuzz seeds (`fuzz/seeds/<target>/`) on stable as part of `cargo test`.
//!
//! Each target's checks live in `fuzz/checks/<target>.rs`, included here with `#[path]`, so a seed
//! runs exactly the code the fuzzer runs. Reproducers of fixed crashes (`crash-*`) are replayed like
//! any seed, so a fixed crash stays fixed.

#[path = "../fuzz/checks/build_url.rs"]
mod build_url;
#[path = "../fuzz/checks/decode_frame.rs"]
mod decode_frame;
#[path = "../fuzz/checks/reconnect_sequence.rs"]
mod reconnect_sequence;

use std::path::PathBuf;

use stream_websocket::{AckResult, DecodeError, Incoming, PulsarCodec};

fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("seeds")
        .join(target)
}

/// Every seed of `target` (name, bytes), sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seed_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// A target's checks: panics on a violated invariant.
type Check = fn(&[u8]);

/// Runs `check` over every seed of `target`, naming the seed that fails.
fn replay(target: &str, check: Check) {
    let seeds = seeds(target);
    assert!(seeds.len() >= 3, "{target} has only {} seeds", seeds.len());
    for (name, data) in seeds {
        let outcome = std::panic::catch_unwind(|| check(&data));
        if let Err(panic) = outcome {
            eprintln!("seed {target}/{name} failed");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn decode_frame_seeds_pass_the_target_checks() {
    replay("decode_frame", decode_frame::check);
}

#[test]
fn build_url_seeds_pass_the_target_checks() {
    replay("build_url", build_url::check);
}

#[test]
fn reconnect_sequence_seeds_pass_the_target_checks() {
    replay("reconnect_sequence", reconnect_sequence::check);
}

/// What a known seed decodes to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Message,
    AckOk,
    AckFailed,
    EndOfTopic,
    Json,
    ErrJson,
    ErrShape,
    ErrBase64,
}

fn kind(result: &Result<Incoming, DecodeError>) -> Option<Want> {
    Some(match result {
        Ok(Incoming::Message(_)) => Want::Message,
        Ok(Incoming::Ack(a)) => match a.result {
            AckResult::Ok(_) => Want::AckOk,
            AckResult::Failed { .. } => Want::AckFailed,
            _ => return None,
        },
        Ok(Incoming::EndOfTopic(_)) => Want::EndOfTopic,
        Ok(Incoming::Json(_)) => Want::Json,
        Err(DecodeError::Json(_)) => Want::ErrJson,
        Err(DecodeError::Shape(_)) => Want::ErrShape,
        Err(DecodeError::Base64 { .. }) => Want::ErrBase64,
        _ => return None,
    })
}

const KNOWN_FRAMES: &[(&str, Want)] = &[
    ("ack_error", Want::AckFailed),
    ("ack_ok", Want::AckOk),
    ("ack_ok_without_id", Want::ErrShape),
    ("array_shaped_like_message", Want::ErrShape),
    ("bad_base64", Want::ErrBase64),
    ("consumer_message", Want::Message),
    ("empty_message_id", Want::ErrShape),
    ("end_of_topic", Want::EndOfTopic),
    ("json_array", Want::ErrShape),
    ("json_number", Want::ErrShape),
    ("json_other", Want::Json),
    ("json_string", Want::ErrShape),
    ("message_without_payload", Want::ErrShape),
    ("not_json", Want::ErrJson),
    ("truncated", Want::ErrJson),
    ("unknown_fields", Want::Message),
    ("unpadded_base64", Want::ErrBase64),
    ("wrong_type_message_id", Want::ErrShape),
    ("wrong_type_properties", Want::ErrShape),
];

fn decode_seed(name: &str) -> Result<Incoming, DecodeError> {
    let data = std::fs::read(seed_dir("decode_frame").join(name))
        .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    let text = std::str::from_utf8(&data).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    PulsarCodec::decode_text(text)
}

#[test]
fn known_decode_frame_seeds_decode_to_the_expected_variant() {
    for (name, want) in KNOWN_FRAMES {
        let got = decode_seed(name);
        assert_eq!(kind(&got), Some(*want), "seed {name}: {got:?}");
    }
    // The message with unknown fields keeps what it knows.
    let Ok(Incoming::Message(m)) = decode_seed("unknown_fields") else {
        unreachable!()
    };
    assert_eq!(m.message_id.as_str(), "CAAQAw==");
    assert_eq!(&m.payload[..], b"hi");
}
