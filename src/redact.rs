//! Keeping secrets out of logs, errors and `Debug` output.
//!
//! One notion of "secret" serves URLs, JSON bodies, free text and HTTP headers: a parameter,
//! member or header is secret if its name ends with one of [`SECRET_QUERY_KEYS`], ignoring ASCII
//! case, `-` and `_` (so `otp`, `TOTP`, `apiKey`, `x-api-key`, `refreshToken`, `client_secret`
//! and `Authorization` all are); a name ending in brackets is judged by its last word (`otp[]`,
//! `otp[0]`, `auth[password]`). A secret value is replaced by `REDACTED`; what is not secret is
//! left as it was.
//!
//! Every function here takes time linear in the length of its input, whatever the input (they
//! run on what servers send back).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde_json::Value;
use url::Url;

/// The names whose values are secret: in URL query strings and fragments (after
/// percent-decoding), in JSON members, in `name: value` text and in HTTP headers. A name is
/// secret if it ends with one of these, ignoring ASCII case, `-` and `_`.
pub const SECRET_QUERY_KEYS: &[&str] = &[
    "otp",
    "token",
    "apikey",
    "api_key",
    "jwt",
    "password",
    "passwd",
    "pwd",
    "access_token",
    "refresh_token",
    "secret",
    "authorization",
    "credential",
    "credentials",
    "private_key",
];

/// The words after which free text carries a credential (`bearer <jwt>`, `apikey <key>`,
/// `basic <base64>`), compared ignoring ASCII case. `api key` (two words) counts as `apikey`.
const SCHEME_WORDS: &[&str] = &["bearer", "basic", "apikey"];

const MASK: &str = "REDACTED";

/// A count of the bytes the redaction passes examine, for the tests that check they are linear.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local!(static WORK: Cell<u64> = const { Cell::new(0) });

    pub(crate) fn add(n: usize) {
        WORK.with(|w| w.set(w.get().saturating_add(n as u64)));
    }

    /// The count since the last call, on this thread.
    pub(crate) fn take() -> u64 {
        WORK.with(|w| w.replace(0))
    }
}

#[cfg(not(test))]
mod work {
    #[inline(always)]
    pub(super) fn add(_: usize) {}
}

/// Returns `url` with its credentials replaced by `REDACTED`; borrowed if nothing had to change.
///
/// What is replaced:
///
/// - the value of every query and fragment parameter whose name is secret (see
///   [`SECRET_QUERY_KEYS`]; the name is compared after percent-decoding, and parameters are
///   separated by `&` or `;`). An empty value stays empty;
/// - the whole user-info (`user:password@` and also a lone `user@`, which may be an API key).
///
/// Only the secret parts change: the rest keeps its text as given. The text is also parsed as a
/// URL (WHATWG rules, as browsers do); if the parser still finds a secret in the result (a name
/// it decodes differently, a tab inside a name, a form of URL that only a parser recognises), the
/// parser's serialisation of the redacted URL is returned instead, normalised as the parser does
/// (lower-case scheme and host, `/` for an empty path, …).
///
/// Text that is not a URL (an error message, a log line) is treated conservatively: every
/// `name=value` pair with a secret name is redacted wherever it appears, and so is everything
/// before an `@` after `://`; so are the word after `bearer`, `basic`, `apikey` or `api key`
/// (`Authorization: bearer REDACTED`), the value after a secret name and a colon
/// (`bad token: REDACTED`, `password: 'REDACTED'`) and anything shaped like a JWT
/// (`eyJ….….…`).
///
/// ```
/// use stream_websocket::redact_url;
/// assert_eq!(
///     redact_url("wss://h/_ws/ws/v2/consumer/t?otp=abc&subscriptionType=Shared"),
///     "wss://h/_ws/ws/v2/consumer/t?otp=REDACTED&subscriptionType=Shared"
/// );
/// assert_eq!(
///     redact_url("wss://key@h/p?a=1;api%5Fkey=k#access_token=t"),
///     "wss://REDACTED@h/p?a=1;api%5Fkey=REDACTED#access_token=REDACTED"
/// );
/// assert_eq!(
///     redact_url("refused: Authorization: apikey t1.k.s3cr3t"),
///     "refused: Authorization: apikey REDACTED"
/// );
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let shaped = mask_text(url);
    if let Some(mut parsed) = parse_url(&shaped) {
        return match redact_parsed(&mut parsed) {
            // The text pass again, for what the parser's encoding turned into a user-info or a
            // pair elsewhere (in a path, say), so that redacting the result changes nothing.
            Some(redacted) => Cow::Owned(mask_text(&redacted).into_owned()),
            None => shaped,
        };
    }
    // The text pass only replaces text by `REDACTED`, so it should not make a URL unparsable;
    // if it ever does, the parser redacts the original.
    if let Some(mut parsed) = parse_url(url) {
        let redacted = redact_parsed(&mut parsed).unwrap_or_else(|| parsed.into());
        return Cow::Owned(mask_text(&redacted).into_owned());
    }
    shaped
}

fn parse_url(text: &str) -> Option<Url> {
    work::add(text.len());
    Url::parse(text).ok()
}

/// The text pass: user-info after `://`, secret `name=value` pairs, and credentials in free
/// text, wherever they are.
fn mask_text(text: &str) -> Cow<'_, str> {
    then(then(mask_userinfo(text), mask_pairs), mask_words)
}

/// The user-info, query and fragment of a parsed URL, redacted: `None` if none held a secret.
fn redact_parsed(url: &mut Url) -> Option<String> {
    work::add(url.as_str().len());
    let mut changed = false;
    let has_userinfo = !url.username().is_empty() || url.password().is_some();
    if has_userinfo && (url.username() != MASK || url.password().is_some()) {
        if url.set_password(None).is_err() || url.set_username(MASK).is_err() {
            // A URL with user-info has a host and accepts both; should one not, show nothing.
            return Some(MASK.to_string());
        }
        changed = true;
    }
    if let Some(query) = url.query().map(mask_pairs).and_then(owned) {
        url.set_query(Some(&query));
        changed = true;
    }
    if let Some(fragment) = url.fragment().map(mask_pairs).and_then(owned) {
        url.set_fragment(Some(&fragment));
        changed = true;
    }
    changed.then(|| url.as_str().to_string())
}

/// The first index at or after `from` whose character matches `pred`, or the end of the text.
/// `from` must be a character boundary.
fn find_from(text: &str, from: usize, pred: impl FnMut(char) -> bool) -> usize {
    let end = text[from..].find(pred).map_or(text.len(), |n| from + n);
    work::add(end - from + 1);
    end
}

/// Replaces, after each `://`, everything before the last `@` of the authority.
fn mask_userinfo(text: &str) -> Cow<'_, str> {
    let ends_authority = |c: char| {
        matches!(c, '/' | '\\' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
    };
    work::add(text.len());
    // Each authority ends before the next `://` (which holds a `/`), so the scans do not overlap.
    let ranges = text.match_indices("://").filter_map(|(i, _)| {
        let start = i + 3;
        let end = find_from(text, start, ends_authority);
        work::add(end - start);
        let at = text[start..end].rfind('@')?;
        (at > 0 && &text[start..start + at] != MASK).then_some(start..start + at)
    });
    mask_ranges(text, ranges)
}

/// Replaces the value of every `name=value` pair whose percent-decoded name is secret. A name
/// is the run of name characters before `=`; a value runs to `&`, `;`, `#`, white space, a quote
/// or an angle bracket. Names are also looked for inside the values of other pairs, so
/// `a=b?otp=c` loses `c`.
fn mask_pairs(text: &str) -> Cow<'_, str> {
    let is_name_char = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '%' | '-' | '_' | '.' | '~' | '+' | '[' | ']')
            || !c.is_ascii()
    };
    let ends_value =
        |c: char| matches!(c, '&' | ';' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace();
    let mut ranges = Vec::new();
    let mut from = 0;
    // The first value terminator at or after some position not after the current `=`: as the
    // `=`s come in order, every value ending there ends at it too, so each byte is searched once
    // (`a=a=a=…` would otherwise search to the end for every `=`).
    let mut value_end = 0;
    while let Some(n) = text[from..].find('=') {
        work::add(n + 1);
        let eq = from + n;
        // Separators are ASCII, so the name starts one byte after the last of them.
        work::add(eq - from);
        let name_start = text[from..eq]
            .rfind(|c| !is_name_char(c))
            .map_or(from, |i| from + i + 1);
        if value_end <= eq {
            value_end = find_from(text, eq + 1, ends_value);
        }
        let value = eq + 1..value_end;
        let secret = is_secret_name(&decode_name(&text[name_start..eq]));
        if secret && !value.is_empty() && &text[value.clone()] != MASK {
            from = value.end;
            ranges.push(value);
        } else {
            from = value.start;
        }
    }
    work::add(text.len() - from);
    mask_ranges(text, ranges)
}

/// A query parameter name, percent-decoded (`+` is a space, as in forms).
fn decode_name(name: &str) -> Cow<'_, str> {
    work::add(name.len());
    url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map_or(Cow::Borrowed(""), |(name, _)| name)
}

/// True if `name` ends with one of [`SECRET_QUERY_KEYS`], ignoring ASCII case, `-` and `_`. A
/// name with brackets is judged by its last word that is not a number: `otp[]`, `otp[0]` and
/// `auth[password]` are secret, `password[hint]` is not.
fn is_secret_name(name: &str) -> bool {
    work::add(name.len());
    let last = name
        .split(['[', ']'])
        .rfind(|part| !part.is_empty() && !part.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_default();
    let folded = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| !matches!(b, b'-' | b'_'))
            .map(|b| b.to_ascii_lowercase())
            .collect()
    };
    let name = folded(last);
    SECRET_QUERY_KEYS
        .iter()
        .any(|key| name.ends_with(&folded(key)))
}

/// Replaces credentials in free text: the word after a scheme word (`bearer`, `basic`,
/// `apikey`, `api key`) and white space; the value after a secret name and a colon
/// (`token: abc`, `password: "a b"`), unless that value is a scheme word followed by its own
/// credential; and every JWT-shaped word (`eyJ` + base64url, with a `.`).
fn mask_words(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let is_jwt = |b: u8| is_word(b) || b == b'.';
    let is_blank = |b: u8| matches!(b, b' ' | b'\t');
    // Where a credential after a scheme word or a colon ends.
    let ends_token = |b: u8| {
        b.is_ascii_whitespace()
            || matches!(
                b,
                b'"' | b'\'' | b'`' | b'<' | b'>' | b',' | b';' | b'\\' | b')' | b'}' | b'&'
            )
    };
    let skip = |mut i: usize, pred: &dyn Fn(u8) -> bool| {
        while i < bytes.len() && pred(bytes[i]) {
            i += 1;
        }
        i
    };
    let is_scheme = |word: &str| SCHEME_WORDS.iter().any(|s| word.eq_ignore_ascii_case(s));
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut push = |range: Range<usize>| {
        if !range.is_empty() && &text[range.clone()] != MASK {
            ranges.push(range);
        }
    };
    // The previous word, for `api key`.
    let mut previous: Range<usize> = 0..0;
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        if text[start..].starts_with("eyJ") {
            let end = skip(start, &is_jwt);
            work::add(end - start);
            let jwt = &text[start..end];
            if jwt.trim_end_matches('.').contains('.') {
                push(start..end);
                previous = 0..0;
                i = end;
                continue;
            }
        }
        i = skip(start, &is_word);
        work::add(i - start);
        let word = &text[start..i];
        let api_key = word.eq_ignore_ascii_case("key")
            && previous.end + 1 == start
            && bytes[previous.end] == b' '
            && text[previous.clone()].eq_ignore_ascii_case("api");
        previous = start..i;
        // A scheme word, white space, a credential.
        if is_scheme(word) || api_key {
            let token = skip(i, &is_blank);
            if token > i {
                let end = skip(token, &|b| !ends_token(b));
                work::add(end - i);
                push(token..end);
                i = end;
            }
            continue;
        }
        // A secret name, a colon, a value.
        let colon = skip(i, &is_blank);
        if bytes.get(colon) != Some(&b':')
            || text[colon..].starts_with("://")
            || !is_secret_name(word)
        {
            continue;
        }
        let value = skip(colon + 1, &is_blank);
        work::add(value - i);
        match bytes.get(value) {
            Some(&quote @ (b'"' | b'\'')) => {
                let end = skip(value + 1, &|b| b != quote);
                work::add(end - value);
                push(value + 1..end);
                i = end;
            }
            Some(_) => {
                let end = skip(value, &|b| !ends_token(b));
                work::add(end - value);
                let scheme_follows =
                    is_scheme(&text[value..end]) && bytes.get(end).is_some_and(|&b| is_blank(b));
                if scheme_follows {
                    // `Authorization: bearer <jwt>`: the scheme word's rule takes the jwt.
                    i = value;
                } else {
                    push(value..end);
                    i = end;
                }
            }
            None => {}
        }
    }
    mask_ranges(text, ranges)
}

/// `text` with each range (ascending, not overlapping) replaced by `REDACTED`.
fn mask_ranges(text: &str, ranges: impl IntoIterator<Item = Range<usize>>) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for range in ranges {
        out.push_str(&text[copied..range.start]);
        out.push_str(MASK);
        copied = range.end;
    }
    if out.is_empty() {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    work::add(out.len());
    Cow::Owned(out)
}

/// Applies `pass` to `text`, staying borrowed if neither changed anything.
fn then<'a>(text: Cow<'a, str>, pass: impl Fn(&str) -> Cow<'_, str>) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(t) => pass(t),
        Cow::Owned(t) => Cow::Owned(pass(&t).into_owned()),
    }
}

fn owned(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}

/// Redacts a JSON document in place, as [`redact_json`] describes; true if something changed.
fn redact_json_value(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(members) => {
            for (name, value) in members {
                if !is_secret_name(name) {
                    changed |= redact_json_value(value);
                } else if !matches!(value, Value::Null)
                    && !matches!(value.as_str(), Some("" | MASK))
                {
                    *value = Value::String(MASK.to_string());
                    changed = true;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= redact_json_value(item);
            }
        }
        Value::String(text) => {
            if let Some(redacted) = owned(redact_text(text)) {
                *text = redacted;
                changed = true;
            }
        }
        _ => {}
    }
    changed
}

/// Returns a JSON body (of a request or response, for a log or an error) with its secrets
/// replaced by `"REDACTED"`; borrowed if nothing had to change.
///
/// At any depth, the value of a member with a secret name (`password`, `passwd`, `jwt`, `otp`,
/// `apiKey`, `api_key`, `token`, `access_token`, `refresh_token`, `secret`, `Authorization`,
/// `credentials`, `private_key`, …; see [`SECRET_QUERY_KEYS`]) is replaced unless it is `null`
/// or `""`. Every other string is treated as text, as below (so JSON quoted inside a string,
/// `"{\"jwt\":\"…\"}"`, loses its secrets too). A body that holds a secret is written out again,
/// compact.
///
/// A body that is not JSON (cut short, or plain text) is treated as text: the value after
/// `"<secret name>":` is replaced up to its end (or the end of the text), then the body goes
/// through [`redact_url`] (`name=value` pairs, user-info, `bearer <token>`, `token: <value>`,
/// JWTs).
///
/// ```
/// use stream_websocket::redact_json;
/// assert_eq!(
///     redact_json(r#"{"user":"me","auth":{"apiKey":"k"}}"#),
///     r#"{"auth":{"apiKey":"REDACTED"},"user":"me"}"#
/// );
/// assert_eq!(redact_json(r#"{"jwt":"eyJhbGciOi"#), r#"{"jwt":"REDACTED"#);
/// assert_eq!(
///     redact_json(r#"{"errorMessage":"bad {\"Authorization\":\"bearer abc\"}"}"#),
///     r#"{"errorMessage":"bad {\"Authorization\":\"REDACTED\"}"}"#
/// );
/// ```
pub fn redact_json(body: &str) -> Cow<'_, str> {
    work::add(body.len());
    if let Ok(mut value) = serde_json::from_str::<Value>(body) {
        return if redact_json_value(&mut value) {
            Cow::Owned(value.to_string())
        } else {
            Cow::Borrowed(body)
        };
    }
    redact_text(body)
}

/// Text that may hold JSON members, URLs or credentials in prose.
fn redact_text(text: &str) -> Cow<'_, str> {
    then(mask_json_members(text), redact_url)
}

/// Replaces the values of members with a secret name in JSON text that may be cut short: the
/// content of a string value, or a whole number, literal, object or array.
fn mask_json_members(text: &str) -> Cow<'_, str> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut from = 0;
    while let Some(n) = text[from..].find('"') {
        work::add(n + 1);
        let start = from + n;
        let Some(end) = string_end(text, start) else {
            break;
        };
        from = end + 1;
        let rest = text[from..].trim_start();
        work::add(text.len() - from - rest.len());
        let Some(after_colon) = rest.strip_prefix(':') else {
            continue;
        };
        work::add(end - start);
        let name = serde_json::from_str::<String>(&text[start..=end])
            .unwrap_or_else(|_| text[start + 1..end].to_string());
        if !is_secret_name(&name) {
            continue;
        }
        let value_start = text.len() - after_colon.trim_start().len();
        let value = json_value_range(text, value_start);
        // Past a string value's closing quote, so that the next quote found opens a string.
        from = value.end + usize::from(text[value.end..].starts_with('"'));
        let shown = &text[value.clone()];
        if !value.is_empty() && shown != MASK && shown != "null" {
            ranges.push(value);
        }
    }
    mask_ranges(text, ranges)
}

/// The index of the quote that closes the JSON string opening at `start`, if the text has it.
fn string_end(text: &str, start: usize) -> Option<usize> {
    let mut escaped = false;
    let bytes = &text.as_bytes()[start + 1..];
    let end = bytes.iter().position(|&b| {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return true,
            _ => {}
        }
        false
    });
    work::add(end.map_or(bytes.len(), |n| n + 1));
    end.map(|n| start + 1 + n)
}

/// What to mask of the JSON value starting at `start`: a string's content, an object or array
/// up to its closing bracket, anything else up to `,`, `}`, `]` or white space; each at most to
/// the end of the text.
fn json_value_range(text: &str, start: usize) -> Range<usize> {
    let bytes = text.as_bytes();
    match bytes.get(start) {
        Some(b'"') => start + 1..string_end(text, start).unwrap_or(text.len()),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                work::add(1);
                match bytes[i] {
                    b'"' => i = string_end(text, i).unwrap_or(text.len()),
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return start..i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            start..text.len()
        }
        _ => {
            let end = find_from(text, start, |c: char| {
                matches!(c, ',' | '}' | ']') || c.is_whitespace()
            });
            start..end
        }
    }
}

/// Returns an HTTP header's value with its credentials replaced by `REDACTED`; borrowed if the
/// header carries none.
///
/// - `Authorization` and `Proxy-Authorization`: the credentials after the scheme word are
///   replaced (`bearer REDACTED`, `apikey REDACTED`); a value of one word is replaced whole.
/// - `Cookie`: every cookie's value; `Set-Cookie`: the cookie's value (its attributes stay).
/// - any other header with a secret name (`x-api-key`, `x-auth-token`, …; see
///   [`SECRET_QUERY_KEYS`]): the whole value.
///
/// ```
/// use stream_websocket::redact_header;
/// assert_eq!(redact_header("Authorization", "bearer eyJhbGciOi"), "bearer REDACTED");
/// assert_eq!(redact_header("x-api-key", "k"), "REDACTED");
/// assert_eq!(redact_header("Content-Type", "application/json"), "application/json");
/// ```
pub fn redact_header<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    let name = name.trim();
    let cookies = |segments: usize| {
        let mut offset = 0;
        let ranges = value.split(';').take(segments).filter_map(move |segment| {
            let start = offset;
            offset += segment.len() + 1;
            let raw = &segment[segment.find('=')? + 1..];
            let cookie = raw.trim();
            let begin = start + segment.len() - raw.trim_start().len();
            (!cookie.is_empty() && cookie != MASK).then_some(begin..begin + cookie.len())
        });
        mask_ranges(value, ranges)
    };
    if name.eq_ignore_ascii_case("cookie") {
        return cookies(usize::MAX);
    }
    if name.eq_ignore_ascii_case("set-cookie") {
        return cookies(1);
    }
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed == MASK {
        return Cow::Borrowed(value);
    }
    let authorization = name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization");
    if authorization {
        if let Some((scheme, credentials)) = trimmed.split_once(char::is_whitespace) {
            let credentials = credentials.trim();
            return if credentials == MASK {
                Cow::Borrowed(value)
            } else {
                Cow::Owned(format!("{scheme} {MASK}"))
            };
        }
    }
    if authorization || is_secret_name(name) {
        Cow::Owned(MASK.to_string())
    } else {
        Cow::Borrowed(value)
    }
}

/// A string that must not leak: its `Debug` and `Display` print `REDACTED`. Use
/// [`expose`](Secret::expose) where the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `redact_url(input)`, checked to be borrowed exactly when nothing changed and to be stable
    /// when redacted again.
    fn redacted(input: &str) -> String {
        let out = redact_url(input);
        assert_eq!(matches!(out, Cow::Borrowed(_)), out == input, "{input}");
        assert_eq!(redact_url(&out), out, "redacting {out:?} again");
        out.into_owned()
    }

    #[test]
    fn redacts_secret_query_values_and_user_info() {
        assert_eq!(
            redacted("wss://user:pw@h:8080/p?Token=a.b.c&x=1&otp=&apikey=k1"),
            "wss://REDACTED@h:8080/p?Token=REDACTED&x=1&otp=&apikey=REDACTED"
        );
        assert_eq!(
            redacted("wss://h/p?otp=ab%2B%2F%3D=="),
            "wss://h/p?otp=REDACTED"
        );
        assert!(matches!(redact_url("ws://h/p?x=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn names_are_compared_percent_decoded() {
        assert_eq!(
            redacted("wss://h/p?o%74p=s1&x=1&%4F%54%50=s2&api%5fkey=s3"),
            "wss://h/p?o%74p=REDACTED&x=1&%4F%54%50=REDACTED&api%5fkey=REDACTED"
        );
    }

    #[test]
    fn names_are_compared_ignoring_case_dashes_and_underscores_as_suffixes() {
        assert_eq!(
            redacted("wss://h/?TOTP=1&client_secret=2&x-api-key=3&refreshToken=4&tokens=5"),
            "wss://h/?TOTP=REDACTED&client_secret=REDACTED&x-api-key=REDACTED\
             &refreshToken=REDACTED&tokens=5"
        );
    }

    #[test]
    fn semicolons_separate_parameters() {
        assert_eq!(
            redacted("wss://h/p?a=1;otp=s1;b=2"),
            "wss://h/p?a=1;otp=REDACTED;b=2"
        );
    }

    #[test]
    fn fragment_parameters_are_redacted() {
        assert_eq!(redacted("wss://h/p#otp=s1"), "wss://h/p#otp=REDACTED");
        assert_eq!(
            redacted("https://h/cb?x=1#access_token=t1&state=ok"),
            "https://h/cb?x=1#access_token=REDACTED&state=ok"
        );
    }

    #[test]
    fn the_whole_user_info_is_redacted() {
        assert_eq!(redacted("wss://user:pw@h/p"), "wss://REDACTED@h/p");
        assert_eq!(redacted("wss://user@h"), "wss://REDACTED@h");
        // A user name alone may be an API key.
        assert_eq!(
            redacted("wss://APIKEY-d41d8cd98f00b204@h:443/x?y=1"),
            "wss://REDACTED@h:443/x?y=1"
        );
        assert_eq!(redacted("wss://a@b:c@h/"), "wss://REDACTED@h/");
        assert_eq!(redacted("wss://@h/"), "wss://@h/");
    }

    #[test]
    fn ipv6_hosts() {
        assert_eq!(
            redacted("wss://[::1]:8443/p?token=t1"),
            "wss://[::1]:8443/p?token=REDACTED"
        );
        assert_eq!(
            redacted("wss://key:pw@[fe80::1]/p"),
            "wss://REDACTED@[fe80::1]/p"
        );
        assert_eq!(redacted("ws://[fe80::1]"), "ws://[fe80::1]");
    }

    #[test]
    fn urls_without_secrets_are_borrowed_unchanged() {
        for url in [
            "wss://h",
            "WSS://Host.Example:443",
            "wss://h/_ws/ws/v2/producer/persistent/t/c8global._system/c8globals.o",
            "ws://h/p?subscriptionType=Shared&messageId=CAEQAw%2B%2F%3D#frag",
            "wss://h/p?otp=",
        ] {
            assert!(
                matches!(redact_url(url), Cow::Borrowed(u) if u == url),
                "{url}"
            );
        }
    }

    #[test]
    fn text_that_is_not_a_url_is_redacted_conservatively() {
        assert_eq!(redacted("not a url ?otp=1"), "not a url ?otp=REDACTED");
        assert_eq!(
            redacted("connect to ws://key@host:99999/?otp=o1 failed; token=t1 (x=1)"),
            "connect to ws://REDACTED@host:99999/?otp=REDACTED failed; token=REDACTED (x=1)"
        );
        assert_eq!(
            redacted("\"otp=s1\" 'jwt=s2'"),
            "\"otp=REDACTED\" 'jwt=REDACTED'"
        );
        // A secret name inside another parameter's value.
        assert_eq!(redacted("see a=b?otp=s1"), "see a=b?otp=REDACTED");
        assert_eq!(redacted("Failed to authenticate"), "Failed to authenticate");
    }

    #[test]
    fn the_parser_catches_what_the_text_hides() {
        // The parser drops tabs and newlines, and reads user-info without the slashes.
        assert_eq!(redacted("wss://h/?o\ttp=s1"), "wss://h/?otp=REDACTED");
        assert_eq!(redacted("wss:user:pw@h/x"), "wss://REDACTED@h/x");
        assert_eq!(redacted("wss://h/?otp=s1 s2"), "wss://h/?otp=REDACTED");
        // The text pass broke this URL (`<` ends the value, and a host may not hold it): the
        // parser redacts the original.
        assert_eq!(redacted("wss://otp=s1://<"), "wss://otp=REDACTED");
    }

    #[test]
    fn json_secrets_are_redacted_at_any_depth() {
        let body = r#"{"user":"me","auth":{"list":[{"password":"p1"},{"apiKey":"k1"}]},
            "api_key":"k2","jwt":"j1","otp":null,"token":"","refresh_token":5,
            "secret":{"a":"s1"},"url":"wss://h/?otp=o1","n":1}"#;
        let out = redact_json(body);
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "user": "me",
                "auth": {"list": [{"password": "REDACTED"}, {"apiKey": "REDACTED"}]},
                "api_key": "REDACTED", "jwt": "REDACTED", "otp": null, "token": "",
                "refresh_token": "REDACTED", "secret": "REDACTED",
                "url": "wss://h/?otp=REDACTED", "n": 1
            })
        );
        let plain = r#"{"user": "me", "tokens_used": [1, 2]}"#;
        assert!(matches!(redact_json(plain), Cow::Borrowed(b) if b == plain));
        let escaped = r#"{"p\u0061ssword":"p1"}"#;
        assert_eq!(redact_json(escaped), r#"{"password":"REDACTED"}"#);
    }

    #[test]
    fn json_cut_short_or_not_json_is_redacted_as_text() {
        assert_eq!(
            redact_json(r#"{"user":"u","password":"hun"#),
            r#"{"user":"u","password":"REDACTED"#
        );
        assert_eq!(
            redact_json(r#"{"secret": {"a":"}","b":[1]}, "jwt" : 12, "x":"#),
            r#"{"secret": REDACTED, "jwt" : REDACTED, "x":"#
        );
        assert_eq!(
            redact_json(r#"{"otp":"o1","password":"p1","n":"#),
            r#"{"otp":"REDACTED","password":"REDACTED","n":"#
        );
        assert_eq!(
            redact_json(r#"[{"p\u0061ssword":"p1\"x","otp":null,"#),
            r#"[{"p\u0061ssword":"REDACTED","otp":null,"#
        );
        assert_eq!(
            redact_json("invalid otp=o1 for ws://k@h"),
            "invalid otp=REDACTED for ws://REDACTED@h"
        );
        assert!(matches!(
            redact_json("Bad Request"),
            Cow::Borrowed("Bad Request")
        ));
    }

    #[test]
    fn headers_keep_the_scheme_word() {
        assert_eq!(
            redact_header("Authorization", "bearer eyJ.x.y"),
            "bearer REDACTED"
        );
        assert_eq!(
            redact_header("authorization", "apikey K1"),
            "apikey REDACTED"
        );
        assert_eq!(
            redact_header("Proxy-Authorization", "Basic dXNlcjpwdw=="),
            "Basic REDACTED"
        );
        assert_eq!(redact_header("Authorization", "K1"), "REDACTED");
        assert_eq!(redact_header("x-api-key", "K1"), "REDACTED");
        assert_eq!(redact_header("X-Auth-Token", "t1 t2"), "REDACTED");
        assert_eq!(
            redact_header("Cookie", "a=1; session=s1;empty=; b=REDACTED"),
            "a=REDACTED; session=REDACTED;empty=; b=REDACTED"
        );
        assert_eq!(
            redact_header("Set-Cookie", "sid=s1; Path=/; HttpOnly"),
            "sid=REDACTED; Path=/; HttpOnly"
        );
        for (name, value) in [
            ("Content-Type", "application/json"),
            ("Authorization", ""),
            ("Authorization", "bearer REDACTED"),
            ("Cookie", "a=REDACTED"),
        ] {
            assert!(
                matches!(redact_header(name, value), Cow::Borrowed(_)),
                "{name}: {value}"
            );
        }
    }

    /// A secret parameter name as it may be written: any case, one letter percent-encoded.
    fn secret_name() -> impl Strategy<Value = String> {
        (
            proptest::sample::select(SECRET_QUERY_KEYS),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(name, bits, encode)| {
                let mut out = String::new();
                for (i, c) in name.chars().enumerate() {
                    let c = if bits >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    };
                    if encode && i == 1 {
                        out.push_str(&format!("%{:02X}", u32::from(c)));
                    } else {
                        out.push(c);
                    }
                }
                out
            })
    }

    /// `(name, value, secret)`: secret values are marked `S3CR3T`.
    fn param() -> impl Strategy<Value = (String, String, bool)> {
        prop_oneof![
            (secret_name(), "[A-Za-z0-9._~+/=%-]{1,12}").prop_map(|(n, v)| (
                n,
                format!("S3CR3T{v}"),
                true
            )),
            ("[a-z]{1,6}", "[a-z0-9]{0,6}")
                .prop_filter("not a secret name", |(n, _)| !is_secret_name(n))
                .prop_map(|(n, v)| (n, v, false)),
        ]
    }

    proptest! {
        #[test]
        fn generated_urls_lose_every_secret_and_keep_the_rest(
            scheme in proptest::sample::select(&["ws", "wss", "https"][..]),
            user in proptest::option::of("S3CR3T[a-z0-9]{0,8}(:S3CR3T[a-z0-9]{0,8})?"),
            host in proptest::sample::select(&["h", "api.example.com", "[::1]", "10.0.0.1:8080"][..]),
            path in "(/[a-z]{0,5}){0,2}",
            query in proptest::collection::vec((param(), any::<bool>()), 0..5),
            fragment in proptest::collection::vec((param(), any::<bool>()), 0..3),
        ) {
            let pairs = |params: &[((String, String, bool), bool)]| {
                let mut out = String::new();
                for (i, ((name, value, _), semicolon)) in params.iter().enumerate() {
                    if i > 0 {
                        out.push(if *semicolon { ';' } else { '&' });
                    }
                    out.push_str(&format!("{name}={value}"));
                }
                out
            };
            let mut url = format!("{scheme}://");
            if let Some(user) = &user {
                url.push_str(&format!("{user}@"));
            }
            url.push_str(&format!("{host}{path}"));
            if !query.is_empty() {
                url.push_str(&format!("?{}", pairs(&query)));
            }
            if !fragment.is_empty() {
                url.push_str(&format!("#{}", pairs(&fragment)));
            }
            let out = redact_url(&url);
            prop_assert!(!out.contains("S3CR3T"), "{} -> {}", url, out);
            prop_assert_eq!(redact_url(&out), out.clone());
            for ((name, value, secret), _) in query.iter().chain(&fragment) {
                if !secret {
                    let kept = format!("{name}={value}");
                    prop_assert!(out.contains(&kept), "{} lost {} -> {}", url, kept, out);
                }
            }
            if user.is_none() && query.iter().chain(&fragment).all(|((_, _, s), _)| !s) {
                prop_assert!(matches!(out, Cow::Borrowed(_)), "{}", url);
            }
        }

        #[test]
        fn json_loses_every_secret_even_cut_short(
            members in proptest::collection::vec(
                (param(), any::<bool>(), any::<bool>()),
                0..6,
            ),
        ) {
            // Secret members hold strings, numbers or objects; some are nested one level down.
            let mut doc = serde_json::Map::new();
            for ((name, value, secret), nest, number) in &members {
                let name = url::form_urlencoded::parse(name.as_bytes())
                    .next()
                    .map_or(String::new(), |(n, _)| n.into_owned());
                let value = match (secret, number) {
                    (true, true) => serde_json::json!({ "v": value, "n": 3 }),
                    _ => Value::String(value.clone()),
                };
                let member = serde_json::json!({ name.clone(): value });
                if *nest {
                    doc.insert(format!("m{}", doc.len()), member);
                } else if let Value::Object(m) = member {
                    doc.extend(m);
                }
            }
            let text = Value::Object(doc).to_string();
            for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let out = redact_json(&text[..end]);
                prop_assert!(!out.contains("S3CR3T"), "{} -> {}", &text[..end], out);
            }
        }

        /// Doubling the input at most doubles the work (plus a little for where the copies
        /// meet), and the work per input byte is bounded: every function is linear.
        #[test]
        fn redaction_work_is_linear(parts in proptest::collection::vec(
            proptest::sample::select(&[
                "wss://", "://", "@", "=", "&", ";", "#", "?", "/", "\\", "\"", "'", "{", "}",
                "[", "]", ":", ",", " ", "\t", "%", "%7", "otp", "Token", "\"jwt\"", "null",
                "REDACTED", "a", "1", "bearer", "api", "key", "eyJ", ".", "password: ",
                "Authorization", "é",
            ][..]),
            1..12,
        )) {
            let unit = parts.concat();
            let small = work_of(&unit.repeat(64));
            let big = work_of(&unit.repeat(128));
            prop_assert!(big <= 2 * small + 4 * 1024, "{:?}: {} -> {}", unit, small, big);
            prop_assert!(
                big <= 200 * 128 * unit.len() as u64 + 4096,
                "{:?}: {} for {} bytes", unit, big, 128 * unit.len()
            );
        }

        #[test]
        fn any_text_is_redacted_without_panicking(text in prop_oneof![
            "\\PC{0,60}",
            proptest::collection::vec(
                proptest::sample::select(&[
                    "wss://", "://", "@", "=", "&", ";", "#", "?", "/", "\\", "\"", "'", "{",
                    "}", "[", "]", ":", ",", " ", "\t", "\n", "%", "%7", "%74", "é", "otp",
                    "Token", "\"jwt\"", "null", "REDACTED", "a", "1", "bearer", "Basic",
                    "api", "key", "eyJ", ".", "pwd", "otp[]", "Authorization",
                ][..]),
                0..24,
            )
            .prop_map(|parts| parts.concat()),
        ]) {
            let once = redact_url(&text);
            prop_assert_eq!(redact_url(&once), once.clone(), "{:?}", text);
            let _ = redact_json(&text);
            for name in ["authorization", "cookie", "set-cookie", "x-api-key", "accept"] {
                let _ = redact_header(name, &text);
            }
        }
    }

    #[test]
    fn wider_names_brackets_and_free_text_credentials() {
        for (input, expected) in [
            (
                "?Authorization=a1&passwd=p1&pwd=p2",
                "?Authorization=REDACTED&passwd=REDACTED&pwd=REDACTED",
            ),
            (
                "?credential=c1&credentials=c2&private_key=k1",
                "?credential=REDACTED&credentials=REDACTED&private_key=REDACTED",
            ),
            (
                "?otp[]=o1&otp[0]=o2&auth[password]=p1&password[hint]=h",
                "?otp[]=REDACTED&otp[0]=REDACTED&auth[password]=REDACTED&password[hint]=h",
            ),
            ("?otp%5B%5D=o1", "?otp%5B%5D=REDACTED"),
            (
                "refused: Authorization: apikey t1.k.S1 (x)",
                "refused: Authorization: apikey REDACTED (x)",
            ),
            (
                "header was Bearer eyJh.eyJp.sig, sorry",
                "header was Bearer REDACTED, sorry",
            ),
            ("BASIC dXNlcjpwdw==", "BASIC REDACTED"),
            ("invalid API key t1.k.S1", "invalid API key REDACTED"),
            ("bad token: abc.def", "bad token: REDACTED"),
            ("password: 'a b c' end", "password: 'REDACTED' end"),
            ("Authorization:bearer", "Authorization:REDACTED"),
            (
                "see eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln here",
                "see REDACTED here",
            ),
            ("token expired; bearer", "token expired; bearer"),
            ("wss://h/token:abc@x/", "wss://h/token:REDACTED"),
            (
                "the key is fine, api keys too",
                "the key is fine, api keys too",
            ),
            ("eyJ alone and eyJx. too", "eyJ alone and eyJx. too"),
        ] {
            assert_eq!(redacted(input), expected, "{input}");
        }
        assert_eq!(
            redact_json(
                r#"{"passwd":"p1","x":{"pwd":1,"Authorization":"bearer b1"},"m":"{\"credentials\":{\"k\":\"c1\"}}"}"#
            ),
            r#"{"m":"{\"credentials\":REDACTED}","passwd":"REDACTED","x":{"Authorization":"REDACTED","pwd":"REDACTED"}}"#
        );
        assert_eq!(
            redact_json(
                r#"{"errorMessage":"invalid: Authorization: apikey K1","private_key":"k"}"#
            ),
            r#"{"errorMessage":"invalid: Authorization: apikey REDACTED","private_key":"REDACTED"}"#
        );
        assert_eq!(
            redact_json(r#"{"errorMessage":"rejected {\"Authorization\":\"bearer j1\"}","#),
            r#"{"errorMessage":"rejected {\"Authorization\":\"bearer REDACTED\"}","#
        );
    }

    /// Work (bytes examined) of each redaction function on `text`.
    fn work_of(text: &str) -> u64 {
        work::take();
        let _ = redact_url(text);
        let _ = redact_json(text);
        for name in ["authorization", "cookie", "set-cookie", "x-api-key"] {
            let _ = redact_header(name, text);
        }
        work::take()
    }

    #[test]
    fn work_counts_are_linear_on_known_worst_cases() {
        for piece in [
            "a=", "a=a", "=", "otp=", "x=1&", "\"a\":", "\"otp\":", "\"", "{\"a\":[", "://a@",
            "bearer ", "token: ", "eyJ.", "api key ", "%", "[", "a=b?", " ", "\\\"",
        ] {
            let small = work_of(&piece.repeat(1000));
            let big = work_of(&piece.repeat(2000));
            assert!(small > 0, "{piece:?}");
            assert!(big <= 2 * small + 2 * 1024, "{piece:?}: {small} -> {big}");
            assert!(big <= 200 * 2000 * piece.len() as u64, "{piece:?}: {big}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(REDACTED) REDACTED");
        assert_eq!(s.expose(), "hunter2");
    }
}
