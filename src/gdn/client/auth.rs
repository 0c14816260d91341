//! Credentials, the JWT from an email login and when to renew it, and the tenant rules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;

use crate::Secret;

/// The longest time before a JWT's expiry at which it is renewed: 5 minutes (or 10 % of its
/// lifetime, if that is shorter).
pub(super) const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How the client authenticates its REST calls.
#[derive(Clone)]
pub(super) enum Credentials {
    /// `Authorization: apikey <key>`.
    ApiKey(Secret),
    /// `POST /_open/auth` with these, then `Authorization: bearer <jwt>`.
    Login { email: String, password: Secret },
}

impl Credentials {
    /// The kind without the secret, for `Debug`.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Credentials::ApiKey(_) => "apikey",
            Credentials::Login { .. } => "login",
        }
    }
}

/// A JWT from a login, with what the client needs to know about it.
pub(super) struct Token {
    /// `bearer <jwt>`.
    pub(super) header: Secret,
    /// The tenant from the login reply or the token's `tenant` claim.
    pub(super) tenant: Option<String>,
    /// When to log in again before using it; `None` if the token has no `exp`.
    pub(super) renew_at: Option<SystemTime>,
}

impl Token {
    /// Wraps a JWT from the login reply; `tenant` is the reply's `tenant` field.
    pub(super) fn new(jwt: &str, tenant: Option<String>, now: SystemTime) -> Token {
        let claims = Claims::decode(jwt).unwrap_or_default();
        Token {
            header: Secret::new(format!("bearer {jwt}")),
            tenant: tenant.filter(|t| !t.is_empty()).or(claims.tenant),
            renew_at: renew_at(claims.exp, claims.iat, now),
        }
    }

    /// True once the token is within its renewal margin (or past its expiry).
    pub(super) fn is_due(&self, now: SystemTime) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }
}

/// The JWT payload claims the client reads. The signature is not checked: the token is only
/// passed back to the server that issued it.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct Claims {
    /// Expiry, seconds since the epoch.
    pub(super) exp: Option<u64>,
    /// Issue time, seconds since the epoch.
    pub(super) iat: Option<u64>,
    /// GDN's tenant claim.
    pub(super) tenant: Option<String>,
}

impl Claims {
    /// The claims in the payload (second part, base64url) of `jwt`; `None` if it is not a JWT.
    pub(super) fn decode(jwt: &str) -> Option<Claims> {
        let mut parts = jwt.split('.');
        let (_header, payload) = (parts.next()?, parts.next()?);
        parts.next()?;
        let payload = payload.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// When to renew a token that expires at `exp`: [`RENEW_MARGIN`] before, or 10 % of its
/// lifetime before if that is shorter. The lifetime runs from `iat`, or from `now` (when the
/// token was obtained) without one.
pub(super) fn renew_at(exp: Option<u64>, iat: Option<u64>, now: SystemTime) -> Option<SystemTime> {
    let exp = UNIX_EPOCH + Duration::from_secs(exp?);
    let issued = iat.map_or(now, |s| UNIX_EPOCH + Duration::from_secs(s));
    let lifetime = exp.duration_since(issued).unwrap_or_default();
    let margin = RENEW_MARGIN.min(lifetime / 10);
    Some(exp.checked_sub(margin).unwrap_or(exp))
}

/// jsc8's tenant for an API key: the key without its last two dot-separated parts (tenants can
/// contain dots), or `_mm` for a key with fewer than three parts.
pub(super) fn tenant_from_api_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 3 {
        return "_mm".to_string();
    }
    parts[..parts.len() - 2].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(payload))
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let c = Claims::decode(&jwt(r#"{"exp":100,"iat":10,"tenant":"acme.com","x":1}"#));
        assert_eq!(
            c,
            Some(Claims {
                exp: Some(100),
                iat: Some(10),
                tenant: Some("acme.com".into())
            })
        );
        assert_eq!(Claims::decode("not-a-jwt"), None);
        assert_eq!(Claims::decode("a.b"), None);
        assert_eq!(Claims::decode("a.!!!.c"), None);
    }

    #[test]
    fn renewal_margin_is_five_minutes_or_a_tenth_of_the_lifetime() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let now = at(1_000_000);
        // 12 h token: 5 minutes before expiry.
        let exp = 1_000_000 + 12 * 3600;
        assert_eq!(renew_at(Some(exp), None, now), Some(at(exp - 300)));
        // 10 minute token issued now: one minute before expiry.
        assert_eq!(
            renew_at(Some(1_000_600), None, now),
            Some(at(1_000_600 - 60))
        );
        // The lifetime counts from iat when there is one.
        assert_eq!(
            renew_at(Some(1_000_060), Some(1_000_060 - 12 * 3600), now),
            Some(at(1_000_060 - 300))
        );
        // Already expired: renew now.
        assert_eq!(renew_at(Some(10), None, now), Some(at(10)));
        assert_eq!(renew_at(None, Some(5), now), None);
    }

    #[test]
    fn tokens_are_due_within_the_margin() {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let near = jwt(&format!(
            r#"{{"exp":{},"iat":{}}}"#,
            secs + 60,
            secs - 43_200
        ));
        assert!(Token::new(&near, None, now).is_due(now));
        let far = jwt(&format!(r#"{{"exp":{},"tenant":"t9"}}"#, secs + 43_200));
        let token = Token::new(&far, Some(String::new()), now);
        assert!(!token.is_due(now));
        assert_eq!(token.tenant.as_deref(), Some("t9"));
        assert!(!Token::new("opaque", None, now).is_due(now));
        assert_eq!(
            Token::new(&far, Some("t1".into()), now).tenant.as_deref(),
            Some("t1")
        );
    }

    #[test]
    fn api_key_tenants_follow_jsc8() {
        assert_eq!(
            tenant_from_api_key("demo_tenant.key1.secret"),
            "demo_tenant"
        );
        assert_eq!(tenant_from_api_key("acme.com.key1.secret"), "acme.com");
        assert_eq!(tenant_from_api_key("xxxxxx"), "_mm");
        assert_eq!(tenant_from_api_key("a.b"), "_mm");
    }
}
