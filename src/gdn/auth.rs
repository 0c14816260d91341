//! [`Auth`]: how the WebSocket upgrade is authenticated, and [`OtpSource`], the callback that
//! fetches one-time passwords.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::error::Error;
use crate::redact::Secret;

type OtpFn = dyn Fn() -> BoxFuture<'static, Result<Secret, Error>> + Send + Sync;

/// An async callback that fetches a one-time password (on GDN: `POST /apid/otp`). Cheap to
/// clone; its `Debug` prints `OtpSource(..)`.
#[derive(Clone)]
pub struct OtpSource(Arc<OtpFn>);

impl OtpSource {
    /// Wraps the callback.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, Error>> + Send + 'static,
    {
        OtpSource(Arc::new(move || f().boxed()))
    }

    /// Calls the callback once.
    pub fn fetch(&self) -> BoxFuture<'static, Result<Secret, Error>> {
        (self.0)()
    }
}

impl fmt::Debug for OtpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpSource(..)")
    }
}

/// How the WebSocket upgrade is authenticated. `Debug` never shows the secret.
///
/// The API key and JWT go into the `Authorization` header and never into the URL.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No authentication. The default.
    #[default]
    None,
    /// `Authorization: apikey <key>`.
    ApiKey(Secret),
    /// `Authorization: bearer <jwt>`.
    Bearer(Secret),
    /// A one-time password fetched by this async callback on every connection attempt and
    /// appended to the URL as `?otp=<otp>`.
    Otp(OtpSource),
}

impl Auth {
    /// [`Auth::ApiKey`]: `Authorization: apikey <key>`.
    pub fn api_key(key: impl Into<Secret>) -> Auth {
        Auth::ApiKey(key.into())
    }

    /// [`Auth::Bearer`]: `Authorization: bearer <jwt>`.
    pub fn bearer(token: impl Into<Secret>) -> Auth {
        Auth::Bearer(token.into())
    }

    /// [`Auth::Otp`]: `f` is called on every connection attempt (a one-time password is good for
    /// one connection). If it fails, that attempt fails with its error; return
    /// [`Error::factory`] for a failure that should be retried with backoff.
    ///
    /// ```
    /// use stream_websocket::gdn::Auth;
    /// use stream_websocket::Secret;
    ///
    /// let auth = Auth::otp(|| async {
    ///     // POST /apid/otp with the API key here.
    ///     Ok(Secret::new("one-time-password"))
    /// });
    /// assert_eq!(auth.kind(), "otp");
    /// ```
    pub fn otp<F, Fut>(f: F) -> Auth
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, Error>> + Send + 'static,
    {
        Auth::Otp(OtpSource::new(f))
    }

    /// The method's name without its secret: `"none"`, `"apikey"`, `"bearer"` or `"otp"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::ApiKey(_) => "apikey",
            Auth::Bearer(_) => "bearer",
            Auth::Otp(_) => "otp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_kind_never_the_secret() {
        let key = Auth::api_key("KEY-s3cr3t");
        let jwt = Auth::bearer(String::from("JWT-s3cr3t"));
        let otp = Auth::otp(|| async { Ok(Secret::new("OTP-s3cr3t")) });
        let text = format!("{:?} {key:?} {jwt:?} {otp:?}", Auth::None);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("OtpSource(..)"), "{text}");
        let kinds = [&Auth::None, &key, &jwt, &otp].map(Auth::kind);
        assert_eq!(kinds, ["none", "apikey", "bearer", "otp"]);
        assert!(matches!(Auth::default(), Auth::None));
    }

    #[tokio::test]
    async fn otp_source_calls_the_callback_on_every_fetch() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = calls.clone();
        let source = OtpSource::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok(Secret::new(format!("otp{n}"))) }
        });
        let copy = source.clone();
        assert_eq!(source.fetch().await.unwrap().expose(), "otp1");
        assert_eq!(copy.fetch().await.unwrap().expose(), "otp2");
    }
}
