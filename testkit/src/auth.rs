//! Who a request comes from: API keys, users (email and password → JWT), one-time passwords,
//! and the tenant each belongs to.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

/// The JWTs issued and not expired. `Debug` shows how many, never the tokens.
#[derive(Default)]
pub(crate) struct Sessions(HashMap<String, Session>);

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("jwts", &format_args!("{} REDACTED", self.0.len()))
            .finish()
    }
}

/// The one-time passwords issued and not used yet, each with the tenant it was fetched for
/// (`None`: issued by [`LocalServer::issue_otp`](crate::LocalServer::issue_otp), good for any
/// tenant). `Debug` shows how many, never the passwords.
#[derive(Default)]
pub(crate) struct Otps(HashMap<String, Option<String>>);

impl fmt::Debug for Otps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otps")
            .field("unused", &format_args!("{} REDACTED", self.0.len()))
            .finish()
    }
}

impl Otps {
    /// How many are unused.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds a password good for any tenant; false if it is already issued.
    pub(crate) fn insert(&mut self, otp: String) -> bool {
        if self.0.contains_key(&otp) {
            return false;
        }
        self.0.insert(otp, None);
        true
    }

    /// Binds an issued password to the tenant of the caller that fetched it.
    pub(crate) fn bind(&mut self, otp: &str, tenant: &str) {
        if let Some(t) = self.0.get_mut(otp) {
            *t = Some(tenant.to_string());
        }
    }

    /// Uses a password up: `Some(tenant)` if it was issued and unused (the tenant `None` if it
    /// is good for any).
    pub(crate) fn take(&mut self, otp: &str) -> Option<Option<String>> {
        self.0.remove(otp)
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
    /// Issues a JWT for `tenant`, valid for `lifetime`. The signature part is random, not a
    /// signature: this is a test server.
    pub(crate) fn issue(
        &mut self,
        tenant: &str,
        email: &str,
        lifetime: Duration,
        nonce: &str,
    ) -> String {
        let now = SystemTime::now();
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
        self.0.retain(|_, s| s.expires > now);
        self.0.insert(
            jwt.clone(),
            Session {
                tenant: tenant.to_string(),
                expires: now + lifetime,
            },
        );
        jwt
    }

    /// The tenant of a JWT this server issued and that has not expired.
    pub(crate) fn tenant(&self, jwt: &str) -> Option<&str> {
        self.0
            .get(jwt)
            .filter(|s| s.expires > SystemTime::now())
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
}
