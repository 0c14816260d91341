//! Who a request comes from: API keys, users (email and password → JWT), one-time passwords,
//! and the tenant each belongs to.

use std::collections::HashMap;
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

/// The JWTs issued and not expired.
#[derive(Debug, Default)]
pub(crate) struct Sessions(HashMap<String, Session>);

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
        self.api_keys.iter().any(|k| k.expose() == key)
    }

    /// The tenant of a login, or `None` for wrong credentials.
    pub(crate) fn login(&self, email: &str, password: &str) -> Option<String> {
        let known = self
            .users
            .iter()
            .any(|u| u.email == email && u.password.expose() == password);
        (known || self.is_open()).then(|| tenant_of_email(email))
    }

    /// The tenant of an `Authorization` header value (`apikey K` or `bearer J`, scheme
    /// case-insensitive; `bearer <API key>` is accepted too), or `None` if it does not
    /// authenticate. Open servers take any key and any bearer token.
    pub(crate) fn tenant_of_header(&self, value: &str, sessions: &Sessions) -> Option<String> {
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        if scheme.eq_ignore_ascii_case("apikey") {
            return (self.is_open() || self.knows_key(token)).then(|| tenant_of_key(token));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        if let Some(tenant) = sessions.tenant(token) {
            return Some(tenant.to_string());
        }
        if self.knows_key(token) {
            return Some(tenant_of_key(token));
        }
        self.is_open()
            .then(|| jwt_tenant(token).unwrap_or_else(|| DEFAULT_TENANT.to_string()))
    }
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
}
