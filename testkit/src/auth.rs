//! Who a request comes from: API keys, users (email and password → JWT), one-time passwords,
//! and the tenant each belongs to.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use stream_websocket::Secret;

/// The tenant of a client the server knows nothing about (jsc8's fallback too).
pub(crate) const DEFAULT_TENANT: &str = "_mm";

/// The tenant of an API key, by jsc8's rule, which the server also answers on `/_api/user` so
/// that pyC8 agrees: the key's text without its last two dot-separated parts
/// (`demo_tenant.key1.secret` → `demo_tenant`); `_mm` for a key with fewer than three parts.
pub(crate) fn tenant_of_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 3 {
        return DEFAULT_TENANT.to_string();
    }
    parts[..parts.len() - 2].join(".")
}

/// The tenant of a user: the email with `@` replaced by `_` (`demo@acme.com` →
/// `demo_acme.com`), the shape of GDN's tenant names.
pub(crate) fn tenant_of_email(email: &str) -> String {
    email.replace('@', "_")
}

/// A configured user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) email: String,
    pub(crate) password: Secret,
}

/// An issued JWT's tenant and expiry.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) tenant: String,
    pub(crate) expires: SystemTime,
    /// Its key in [`Sessions::by_expiry`] with `expires`.
    seq: u64,
}

/// The JWTs issued and not expired, indexed by expiry so that pruning the expired ones costs
/// only what it removes (no scan of the live ones per login). `Debug` shows how many, never
/// the tokens.
#[derive(Default)]
pub(crate) struct Sessions {
    by_jwt: HashMap<String, Session>,
    by_expiry: BTreeMap<(SystemTime, u64), String>,
    next_seq: u64,
    /// How many index entries pruning has looked at, for the tests.
    #[cfg(test)]
    examined: usize,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("jwts", &format_args!("{} REDACTED", self.by_jwt.len()))
            .finish()
    }
}

/// How long a one-time password from `/apid/otp` or `issue_otp` stays usable by default.
pub(crate) const DEFAULT_OTP_LIFETIME: Duration = Duration::from_secs(60);
/// How many unused one-time passwords are kept by default; issuing one more drops the oldest.
pub(crate) const DEFAULT_MAX_OTPS: usize = 10_000;

/// An unused one-time password: the tenant it was fetched for, when it was issued, and its key
/// in [`Otps::by_age`].
#[derive(Debug)]
struct Otp {
    tenant: Option<String>,
    issued: Instant,
    seq: u64,
}

/// The one-time passwords issued and not used yet, each with the tenant it was fetched for
/// (`None`: issued by [`LocalServer::issue_otp`](crate::LocalServer::issue_otp), good for any
/// tenant). A password expires after `lifetime`; at most `max` are kept, the oldest dropped
/// first. `Debug` shows how many, never the passwords.
pub(crate) struct Otps {
    by_otp: HashMap<String, Otp>,
    /// Issue order (a counter) → password.
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
    lifetime: Duration,
    max: usize,
}

impl Default for Otps {
    fn default() -> Self {
        Otps::new(DEFAULT_OTP_LIFETIME, DEFAULT_MAX_OTPS)
    }
}

impl fmt::Debug for Otps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otps")
            .field("unused", &format_args!("{} REDACTED", self.by_otp.len()))
            .field("lifetime", &self.lifetime)
            .field("max", &self.max)
            .finish()
    }
}

impl Otps {
    /// No passwords; each will live `lifetime`, at most `max` (at least 1) kept.
    pub(crate) fn new(lifetime: Duration, max: usize) -> Otps {
        Otps {
            by_otp: HashMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
            lifetime,
            max: max.max(1),
        }
    }

    /// How many are unused (expired ones may still be counted until the next issue).
    pub(crate) fn len(&self) -> usize {
        self.by_otp.len()
    }

    /// Adds a password good for any tenant, issued now; false if it is already issued.
    pub(crate) fn insert(&mut self, otp: String) -> bool {
        self.insert_at(otp, Instant::now())
    }

    /// Adds a password issued at `now`, first dropping the expired ones and, if `max` are
    /// outstanding, the oldest; false if it is already issued.
    pub(crate) fn insert_at(&mut self, otp: String, now: Instant) -> bool {
        if self.by_otp.contains_key(&otp) {
            return false;
        }
        while let Some(entry) = self.by_age.first_entry() {
            let issued = self.by_otp.get(entry.get()).map(|o| o.issued);
            let expired = issued.is_none_or(|t| now.saturating_duration_since(t) >= self.lifetime);
            if !expired && self.by_otp.len() < self.max {
                break;
            }
            let old = entry.remove();
            self.by_otp.remove(&old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, otp.clone());
        self.by_otp.insert(
            otp,
            Otp {
                tenant: None,
                issued: now,
                seq,
            },
        );
        true
    }

    /// Binds an issued password to the tenant of the caller that fetched it.
    pub(crate) fn bind(&mut self, otp: &str, tenant: &str) {
        if let Some(o) = self.by_otp.get_mut(otp) {
            o.tenant = Some(tenant.to_string());
        }
    }

    /// Uses a password up now; see [`take_at`](Self::take_at).
    pub(crate) fn take(&mut self, otp: &str) -> Option<Option<String>> {
        self.take_at(otp, Instant::now())
    }

    /// Uses a password up: `Some(tenant)` if it was issued, is unused and has not expired at
    /// `now` (the tenant `None` if it is good for any).
    pub(crate) fn take_at(&mut self, otp: &str, now: Instant) -> Option<Option<String>> {
        let o = self.by_otp.remove(otp)?;
        self.by_age.remove(&o.seq);
        (now.saturating_duration_since(o.issued) < self.lifetime).then_some(o.tenant)
    }
}

/// Compares two secrets in time that depends only on their lengths, not on where they first
/// differ.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Checks that the tenant segment of `topic` (`persistent://tenant/namespace/topic`) is the
/// caller's; `None` (an open server, or a one-time password good for any tenant) allows any.
pub(crate) fn may_use_topic(caller: Option<&str>, topic: &str) -> bool {
    let Some(caller) = caller else {
        return true;
    };
    topic
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .is_some_and(|tenant| tenant == caller)
}

impl Sessions {
    /// Issues a JWT for `tenant`, valid for `lifetime` from now; see [`issue_at`](Self::issue_at).
    pub(crate) fn issue(
        &mut self,
        tenant: &str,
        email: &str,
        lifetime: Duration,
        nonce: &str,
    ) -> String {
        self.issue_at(tenant, email, lifetime, nonce, SystemTime::now())
    }

    /// Issues a JWT for `tenant` at `now`, valid for `lifetime`, after removing the sessions
    /// expired by then (only those are looked at). The signature part is random, not a
    /// signature: this is a test server.
    pub(crate) fn issue_at(
        &mut self,
        tenant: &str,
        email: &str,
        lifetime: Duration,
        nonce: &str,
        now: SystemTime,
    ) -> String {
        self.prune(now);
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat.saturating_add(lifetime.as_secs().max(1));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "tenant": tenant,
                "username": "root",
                "email": email,
                "iat": iat,
                "exp": exp,
                "iss": "stream-websocket-testkit",
            })
            .to_string(),
        );
        let jwt = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(nonce));
        let expires = now
            .checked_add(lifetime)
            .unwrap_or(now + Duration::from_secs(u32::MAX.into()));
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.by_jwt.insert(
            jwt.clone(),
            Session {
                tenant: tenant.to_string(),
                expires,
                seq,
            },
        ) {
            self.by_expiry.remove(&(old.expires, old.seq));
        }
        self.by_expiry.insert((expires, seq), jwt.clone());
        jwt
    }

    /// Removes the sessions expired at `now`, oldest expiry first, stopping at the first live
    /// one.
    fn prune(&mut self, now: SystemTime) {
        while let Some(entry) = self.by_expiry.first_entry() {
            #[cfg(test)]
            {
                self.examined += 1;
            }
            if entry.key().0 > now {
                break;
            }
            let jwt = entry.remove();
            self.by_jwt.remove(&jwt);
        }
    }

    /// How many sessions are kept (expired ones until the next login).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_jwt.len()
    }

    /// The tenant of a JWT this server issued and that has not expired.
    pub(crate) fn tenant(&self, jwt: &str) -> Option<&str> {
        self.tenant_at(jwt, SystemTime::now())
    }

    /// The tenant of a JWT this server issued, if it has not expired at `now`.
    pub(crate) fn tenant_at(&self, jwt: &str, now: SystemTime) -> Option<&str> {
        self.by_jwt
            .get(jwt)
            .filter(|s| s.expires > now)
            .map(|s| s.tenant.as_str())
    }
}

/// The credentials a server accepts. With none configured the server is *open*: every request
/// passes, an API key's tenant follows [`tenant_of_key`] and any email logs in.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    pub(crate) api_keys: Vec<Secret>,
    pub(crate) users: Vec<User>,
}

impl Credentials {
    pub(crate) fn is_open(&self) -> bool {
        self.api_keys.is_empty() && self.users.is_empty()
    }

    fn knows_key(&self, key: &str) -> bool {
        // Every key is compared, each in constant time.
        self.api_keys
            .iter()
            .fold(false, |found, k| secret_eq(k.expose(), key) | found)
    }

    /// The tenant of a login, or `None` for wrong credentials.
    pub(crate) fn login(&self, email: &str, password: &str) -> Option<String> {
        let known = self.users.iter().fold(false, |found, u| {
            (secret_eq(&u.email, email) & secret_eq(u.password.expose(), password)) | found
        });
        (known || self.is_open()).then(|| tenant_of_email(email))
    }

    /// The tenant of an `Authorization` header value (`apikey K` or `bearer J`, scheme
    /// case-insensitive; `bearer <API key>` is accepted too), or `None` if it does not
    /// authenticate. Open servers take any key and any bearer token.
    pub(crate) fn tenant_of_header(&self, value: &str, sessions: &Sessions) -> Option<String> {
        self.caller_of_header(value, sessions).map(|c| c.tenant)
    }

    /// Who an `Authorization` header value authenticates, as [`tenant_of_header`], with whether
    /// its sockets are confined to that tenant: a JWT's always are, an API key's if the key
    /// names its tenant (three or more dot-separated parts; a shorter key's `_mm` is only
    /// jsc8's fallback, so such a key may use any tenant's topics).
    ///
    /// [`tenant_of_header`]: Self::tenant_of_header
    pub(crate) fn caller_of_header(&self, value: &str, sessions: &Sessions) -> Option<Caller> {
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        let by_key = |token: &str| Caller {
            tenant: tenant_of_key(token),
            confined: token.split('.').count() >= 3,
        };
        if scheme.eq_ignore_ascii_case("apikey") {
            return (self.is_open() || self.knows_key(token)).then(|| by_key(token));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        if let Some(tenant) = sessions.tenant(token) {
            return Some(Caller {
                tenant: tenant.to_string(),
                confined: true,
            });
        }
        if self.knows_key(token) {
            return Some(by_key(token));
        }
        self.is_open().then(|| Caller {
            tenant: jwt_tenant(token).unwrap_or_else(|| DEFAULT_TENANT.to_string()),
            confined: true,
        })
    }

    /// Authenticates a WebSocket upgrade: `None` if it does not (HTTP 401), else the tenant
    /// whose topics it may use (`Some(None)`: any, on an open server, for an API key that
    /// names no tenant, or with a one-time password from
    /// [`LocalServer::issue_otp`](crate::LocalServer::issue_otp)). An accepted `Authorization`
    /// header (the first, if several) decides; otherwise an unused `otp` does. A presented
    /// `otp` is used up either way.
    pub(crate) fn upgrade_caller<'a>(
        &self,
        authorization: impl IntoIterator<Item = &'a str>,
        otp: Option<&str>,
        sessions: &Sessions,
        otps: &mut Otps,
    ) -> Option<Option<String>> {
        if self.is_open() {
            return Some(None);
        }
        let by_header = authorization
            .into_iter()
            .find_map(|v| self.caller_of_header(v, sessions));
        let by_otp = otp.and_then(|otp| otps.take(otp));
        match (by_header, by_otp) {
            (Some(caller), _) => Some(caller.confined.then_some(caller.tenant)),
            (None, by_otp) => by_otp,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) tenant: String,
    /// Whether its sockets may only name `tenant`'s topics.
    pub(crate) confined: bool,
}

/// The `tenant` claim of a JWT's payload, unchecked.
fn jwt_tenant(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("tenant")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rules() {
        assert_eq!(tenant_of_key("demo_tenant.key1.secret"), "demo_tenant");
        assert_eq!(tenant_of_key("acme.com.key.secret"), "acme.com");
        assert_eq!(tenant_of_key("xxxxxx"), "_mm");
        assert_eq!(tenant_of_key("a.b"), "_mm");
        assert_eq!(tenant_of_email("demo@acme.com"), "demo_acme.com");
    }

    #[test]
    fn configured_credentials_are_checked() {
        let creds = Credentials {
            api_keys: vec![Secret::new("t1.k.s")],
            users: vec![User {
                email: "a@b.c".into(),
                password: Secret::new("pw"),
            }],
        };
        let mut sessions = Sessions::default();
        assert_eq!(
            creds
                .tenant_of_header("apikey t1.k.s", &sessions)
                .as_deref(),
            Some("t1")
        );
        assert_eq!(
            creds
                .tenant_of_header("APIKEY t1.k.s", &sessions)
                .as_deref(),
            Some("t1")
        );
        assert_eq!(creds.tenant_of_header("apikey other", &sessions), None);
        assert_eq!(creds.tenant_of_header("Basic YWJj", &sessions), None);
        assert_eq!(creds.login("a@b.c", "wrong"), None);
        let tenant = creds.login("a@b.c", "pw").unwrap();
        let jwt = sessions.issue(&tenant, "a@b.c", Duration::from_secs(60), "n");
        assert_eq!(jwt.split('.').count(), 3);
        assert_eq!(jwt_tenant(&jwt).as_deref(), Some("a_b.c"));
        let header = format!("bearer {jwt}");
        assert_eq!(
            creds.tenant_of_header(&header, &sessions).as_deref(),
            Some("a_b.c")
        );
        assert_eq!(
            creds.tenant_of_header("bearer forged.jwt.x", &sessions),
            None
        );
    }

    #[test]
    fn expired_jwts_are_refused() {
        let mut sessions = Sessions::default();
        let jwt = sessions.issue("t", "e", Duration::ZERO, "n");
        // A zero lifetime expires at once.
        assert_eq!(sessions.tenant(&jwt), None);
    }

    #[test]
    fn open_servers_take_anything_but_an_empty_token() {
        let creds = Credentials::default();
        let sessions = Sessions::default();
        assert_eq!(
            creds.tenant_of_header("apikey x.y.z", &sessions).as_deref(),
            Some("x")
        );
        assert_eq!(creds.tenant_of_header("apikey ", &sessions), None);
        assert_eq!(creds.login("u@h", "any").as_deref(), Some("u_h"));
    }

    #[test]
    fn secrets_compare_by_content_not_prefix() {
        assert!(secret_eq("t1.k.s", "t1.k.s"));
        assert!(secret_eq("", ""));
        assert!(!secret_eq("t1.k.s", "t1.k.t"));
        assert!(!secret_eq("t1.k.s", "t1.k.s2"));
        assert!(!secret_eq("t1.k.s", "t1.k."));
        assert!(!secret_eq("a", ""));
        // A shorter value padded with zero bytes is still different.
        assert!(!secret_eq("ab", "ab\0"));
    }

    #[test]
    fn debug_never_shows_jwts_or_one_time_passwords() {
        let mut sessions = Sessions::default();
        let jwt = sessions.issue("t", "e", Duration::from_secs(60), "n");
        let mut otps = Otps::default();
        assert!(otps.insert("otp-secret-1".into()));
        otps.bind("otp-secret-1", "t");
        let shown = format!("{sessions:?} {otps:?} {sessions:#?} {otps:#?}");
        assert!(
            !shown.contains(&jwt) && !shown.contains("otp-secret-1"),
            "{shown}"
        );
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn upgrades_carry_the_callers_tenant() {
        let creds = Credentials {
            api_keys: vec![Secret::new("t1.k.s")],
            users: Vec::new(),
        };
        let sessions = Sessions::default();
        let mut otps = Otps::default();
        otps.insert("o1".into());
        otps.bind("o1", "t1");
        otps.insert("o2".into());
        let caller = |otps: &mut Otps, h: &[&str], otp: Option<&str>| {
            creds.upgrade_caller(h.iter().copied(), otp, &sessions, otps)
        };
        assert_eq!(
            caller(&mut otps, &["apikey t1.k.s"], None),
            Some(Some("t1".into()))
        );
        assert_eq!(caller(&mut otps, &["apikey t2.k.s"], None), None);
        assert_eq!(caller(&mut otps, &[], Some("o1")), Some(Some("t1".into())));
        assert_eq!(caller(&mut otps, &[], Some("o1")), None, "single use");
        assert_eq!(caller(&mut otps, &[], Some("o2")), Some(None));
        let open = Credentials::default();
        assert_eq!(
            open.upgrade_caller(["apikey t1.k.s"], None, &sessions, &mut otps),
            Some(None)
        );
        // A key that names no tenant is not confined (its `_mm` is jsc8's fallback).
        let short = Credentials {
            api_keys: vec![Secret::new("s3cret")],
            users: Vec::new(),
        };
        assert_eq!(
            short.upgrade_caller(["apikey s3cret"], None, &sessions, &mut otps),
            Some(None)
        );
        assert!(may_use_topic(Some("t1"), "persistent://t1/ns/x"));
        assert!(!may_use_topic(Some("t1"), "persistent://t2/ns/x"));
        assert!(!may_use_topic(Some("t1"), "persistent://t1x/ns/x"));
        assert!(may_use_topic(None, "persistent://t2/ns/x"));
    }

    #[test]
    fn one_time_passwords_expire_after_their_lifetime() {
        let t0 = Instant::now();
        let mut otps = Otps::new(Duration::from_secs(60), 100);
        assert!(otps.insert_at("early".into(), t0));
        assert!(otps.insert_at("late".into(), t0));
        assert_eq!(
            otps.take_at("early", t0 + Duration::from_secs(59)),
            Some(None)
        );
        assert_eq!(otps.take_at("late", t0 + Duration::from_secs(60)), None);
        assert_eq!(otps.len(), 0, "an expired password is dropped when tried");
        // Expired ones nobody tries are dropped when the next one is issued.
        for i in 0..50 {
            assert!(otps.insert_at(format!("unused-{i}"), t0));
        }
        assert!(otps.insert_at("fresh".into(), t0 + Duration::from_secs(61)));
        assert_eq!(otps.len(), 1);
        assert_eq!(
            otps.take_at("fresh", t0 + Duration::from_secs(62)),
            Some(None)
        );
    }

    #[test]
    fn at_most_max_one_time_passwords_are_kept_oldest_dropped_first() {
        let t0 = Instant::now();
        let mut otps = Otps::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            assert!(otps.insert_at(format!("o{i}"), t0));
        }
        assert_eq!(otps.len(), 3);
        assert_eq!(otps.take_at("o0", t0), None);
        assert_eq!(otps.take_at("o1", t0), None);
        for i in 2..5 {
            assert_eq!(otps.take_at(&format!("o{i}"), t0), Some(None), "o{i}");
        }
        // Using one frees its place: nothing older is dropped for the next.
        assert!(otps.insert_at("a".into(), t0));
        assert!(otps.insert_at("b".into(), t0));
        assert_eq!(otps.take_at("a", t0), Some(None));
        assert!(otps.insert_at("c".into(), t0));
        assert!(otps.insert_at("d".into(), t0));
        assert_eq!(otps.len(), 3);
        assert_eq!(otps.take_at("b", t0), Some(None));
    }

    #[test]
    fn expired_sessions_are_pruned_without_scanning_live_ones() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut sessions = Sessions::default();
        let short = Duration::from_secs(10);
        let long = Duration::from_secs(3600);
        let expiring: Vec<String> = (0..100)
            .map(|i| sessions.issue_at("t", "e", short, &format!("s{i}"), t0))
            .collect();
        for i in 0..1000 {
            sessions.issue_at("t", "e", long, &format!("l{i}"), t0);
        }
        assert_eq!(sessions.len(), 1100);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(sessions.tenant_at(&expiring[0], later), None);
        sessions.examined = 0;
        let jwt = sessions.issue_at("t", "e", long, "new", later);
        assert_eq!(sessions.len(), 1001, "the 100 expired sessions are removed");
        // The 100 expired ones and the first live one: not the 1,000 live sessions.
        assert_eq!(sessions.examined, 101);
        sessions.examined = 0;
        for i in 0..100 {
            sessions.issue_at("t", "e", long, &format!("m{i}"), later);
        }
        assert!(sessions.examined <= 100, "{}", sessions.examined);
        assert_eq!(sessions.tenant_at(&jwt, later), Some("t"));
    }
}
