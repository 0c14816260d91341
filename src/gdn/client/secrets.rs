//! The client's own secret values (API key, password, JWTs, recent one-time passwords), kept so
//! that a server echoing one back never gets it into an error or a log line; and the bounded,
//! redacted text that errors store of what a server said.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many one-time passwords the client remembers for scrubbing: the most recent.
const RECENT_OTPS: usize = 32;

/// How many JWTs the client remembers for scrubbing: the current one and those before it.
const RECENT_JWTS: usize = 4;

/// Secrets shorter than this (in bytes) are not looked for in text: they are too likely to be
/// ordinary words, and the redaction rules still catch them by context (`password=…`).
const MIN_SCRUBBED: usize = 4;

/// The most of a server's text that is scrubbed: longer text is cut to this first.
const SCRUB_WINDOW: usize = 64 * 1024;

/// The most of a server's text that is redacted (after scrubbing); the rest is cut before.
const REDACT_WINDOW: usize = 1024;

/// Longest text from a server (an error message, a redirect's location) kept in an error, in
/// bytes.
pub(super) const MAX_MESSAGE: usize = 256;

const MASK: &str = "REDACTED";

/// The client's secret values, in every form a server might echo them in.
#[derive(Default)]
pub(super) struct KnownSecrets {
    inner: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// The credentials: for the client's lifetime.
    fixed: Vec<String>,
    /// JWTs, newest last; each entry with its forms.
    jwts: VecDeque<Vec<String>>,
    /// One-time passwords, newest last; each entry with its forms.
    otps: VecDeque<Vec<String>>,
    /// The length of the longest form of all.
    longest: usize,
}

/// Remembers `secret` in `list`, keeping at most `keep` entries (the newest); returns the
/// length of its longest form.
fn remember(list: &mut VecDeque<Vec<String>>, keep: usize, secret: &str) -> usize {
    if list.iter().any(|f| f[0] == secret) {
        return 0;
    }
    if list.len() == keep {
        list.pop_front();
    }
    let forms = forms(secret);
    let longest = forms.iter().map(String::len).max().unwrap_or(0);
    list.push_back(forms);
    longest
}

/// `secret` as written raw, inside a JSON string and percent-encoded, without repeats.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    let percent: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    for form in [json.to_string(), percent] {
        if !form.is_empty() && !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

impl KnownSecrets {
    /// Remembers a credential for the client's lifetime.
    pub(super) fn add_fixed(&self, secret: &str) {
        if secret.len() < MIN_SCRUBBED {
            return;
        }
        let mut known = self.lock();
        let forms = forms(secret);
        known.longest = known
            .longest
            .max(forms.iter().map(String::len).max().unwrap_or(0));
        known.fixed.extend(forms);
    }

    /// Remembers a JWT, forgetting the oldest beyond [`RECENT_JWTS`].
    pub(super) fn add_jwt(&self, jwt: &str) {
        if jwt.len() >= MIN_SCRUBBED {
            let mut known = self.lock();
            let longest = remember(&mut known.jwts, RECENT_JWTS, jwt);
            known.longest = known.longest.max(longest);
        }
    }

    /// Remembers a one-time password, forgetting the oldest beyond [`RECENT_OTPS`].
    pub(super) fn add_otp(&self, otp: &str) {
        if otp.len() >= MIN_SCRUBBED {
            let mut known = self.lock();
            let longest = remember(&mut known.otps, RECENT_OTPS, otp);
            known.longest = known.longest.max(longest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // Scrubbing must work even if a panic poisoned the lock: the data is only strings.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Text from a server made fit for an error or a log: at most [`SCRUB_WINDOW`] bytes are
    /// looked at; the client's own secrets are replaced by `REDACTED` in them; the result is cut
    /// to [`REDACT_WINDOW`] bytes, passed through `redact` and cut to [`MAX_MESSAGE`] bytes.
    /// `truncated` says the text is the start of something longer (a body read only in part):
    /// then the end, which may hold the start of a secret, is dropped too. Linear in the text.
    pub(super) fn clean(
        &self,
        text: &str,
        truncated: bool,
        redact: impl Fn(&str) -> Cow<'_, str>,
    ) -> String {
        let known = self.lock();
        let mut text = text;
        let mut truncated = truncated;
        if text.len() > SCRUB_WINDOW {
            text = cut(text, SCRUB_WINDOW);
            truncated = true;
        }
        if truncated {
            // A secret cut short at the end would not be recognised: drop as much as the
            // longest could hold.
            text = cut(text, text.len().saturating_sub(known.longest));
        }
        let mut scrubbed = Cow::Borrowed(text);
        let recent = known.jwts.iter().chain(&known.otps).flatten();
        for form in known.fixed.iter().chain(recent) {
            if scrubbed.contains(form.as_str()) {
                scrubbed = Cow::Owned(scrubbed.replace(form.as_str(), MASK));
            }
        }
        drop(known);
        let redacted = redact(cut(&scrubbed, REDACT_WINDOW)).into_owned();
        cut(&redacted, MAX_MESSAGE).trim().to_string()
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(super) fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact_json;

    #[test]
    fn own_secrets_are_scrubbed_in_every_form() {
        let known = KnownSecrets::default();
        known.add_fixed("t1.k.SUPER/SECRET+\"1\"");
        known.add_otp("OTP-0001");
        known.add_jwt("eyJ.JWT-SECRET.sig");
        known.add_fixed("abc");
        let text = r#"invalid API key t1.k.SUPER/SECRET+"1", as JSON "t1.k.SUPER/SECRET+\"1\"", as a query t1.k.SUPER%2FSECRET%2B%221%22; otp OTP-0001; jwt eyJ.JWT-SECRET.sig; abc"#;
        let out = known.clean(text, false, redact_json);
        for secret in ["SUPER", "OTP-0001", "JWT-SECRET"] {
            assert!(!out.contains(secret), "{out}");
        }
        // Too short to look for.
        assert!(out.ends_with("; abc"), "{out}");
        // Many one-time passwords later, the oldest is forgotten, the JWT is not.
        for n in 0..RECENT_OTPS {
            known.add_otp(&format!("OTP-{n:04}-x"));
        }
        let out = known.clean("OTP-0001 OTP-0031-x JWT-SECRET", false, |t| t.into());
        assert_eq!(out, "OTP-0001 REDACTED JWT-SECRET");
        let out = known.clean("eyJ.JWT-SECRET.sig", false, |t| t.into());
        assert_eq!(out, "REDACTED");
    }

    #[test]
    fn a_secret_cut_short_at_the_end_is_dropped() {
        let known = KnownSecrets::default();
        known.add_fixed("SUPERSECRETKEY");
        // Repeats shrink the scrubbed text, so that the cut-off start of the key would land
        // within the kept part.
        let text = format!("{}SUPERSEC", "SUPERSECRETKEY".repeat(100));
        let out = known.clean(&text, true, redact_json);
        assert!(!out.contains("SUPERSEC"), "{out}");
        let long = format!("{}SUPERSECRETKEY", "x".repeat(SCRUB_WINDOW - 8));
        let out = known.clean(&long, false, redact_json);
        assert!(
            !out.contains("SUPERSEC") && out.len() <= MAX_MESSAGE,
            "{out}"
        );
    }

    #[test]
    fn only_a_bounded_start_is_redacted() {
        let known = KnownSecrets::default();
        let body = "a=".repeat(100_000);
        crate::redact::work::take();
        let out = known.clean(&body, true, redact_json);
        let work = crate::redact::work::take();
        assert!(out.len() <= MAX_MESSAGE);
        crate::redact::work::take();
        known.clean(&body[..2 * REDACT_WINDOW], true, redact_json);
        assert_eq!(
            crate::redact::work::take(),
            work,
            "the same 1 KiB is redacted"
        );
        assert!(work < 100 * REDACT_WINDOW as u64, "{work}");
    }

    #[test]
    fn cuts_keep_characters_whole() {
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("", 3), "");
    }
}
