//! One REST request: headers, the reply's status and body, retries with backoff, and the one new
//! login after a refused token.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;

use super::auth::{Credentials, Token};
use super::error::{ApiError, RestError};
use crate::backoff::{Backoff, Rng};
use crate::config::ReconnectConfig;
use crate::Secret;

/// A request to make: method, path (already percent-encoded), query and body, and whether it
/// may be repeated.
pub(super) struct Call {
    method: Method,
    path: String,
    query: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// Safe to send again after a failure that may have reached the server (a timeout, a reset
    /// connection). Everything but a publish is.
    idempotent: bool,
    /// Retry 429, 5xx and transport errors here. Off where a caller retries on its own (the
    /// one-time passwords of a reconnecting stream).
    retry: bool,
}

impl Call {
    fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            query: None,
            content_type: None,
            body: Vec::new(),
            idempotent: true,
            retry: true,
        }
    }

    pub(super) fn get(path: impl Into<String>) -> Call {
        Call::new(Method::GET, path)
    }

    pub(super) fn post(path: impl Into<String>) -> Call {
        Call::new(Method::POST, path)
    }

    pub(super) fn delete(path: impl Into<String>) -> Call {
        Call::new(Method::DELETE, path)
    }

    pub(super) fn query(mut self, query: impl Into<String>) -> Call {
        self.query = Some(query.into());
        self
    }

    pub(super) fn body(mut self, content_type: Option<&'static str>, body: Vec<u8>) -> Call {
        self.content_type = content_type;
        self.body = body;
        self
    }

    pub(super) fn not_idempotent(mut self) -> Call {
        self.idempotent = false;
        self
    }

    pub(super) fn without_retries(mut self) -> Call {
        self.retry = false;
        self
    }

    /// `"POST /_fabric/_system/_api/streams/x"`: for errors and logs (never holds a secret).
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The login state: the current token and how many logins made it (so that callers who saw the
/// same token refused renew it once between them).
#[derive(Default)]
pub(super) struct TokenState {
    token: Option<Token>,
    logins: u64,
}

/// The `Authorization` header for one request, and which login it came from (`None` for an API
/// key, which no new login can fix).
struct Authorization {
    header: Secret,
    login: Option<u64>,
}

/// What every request needs: the HTTP client, where to send, how to authenticate and retry.
pub(super) struct Transport {
    pub(super) http: reqwest::Client,
    /// The REST base URL without a trailing `/`.
    pub(super) base: String,
    pub(super) credentials: Credentials,
    pub(super) retry: ReconnectConfig,
    pub(super) token: Mutex<TokenState>,
}

impl Transport {
    /// Sends `call` with the client's credentials. A 401 on a token from an email login makes one
    /// new login and one more try; the second 401 is returned.
    pub(super) async fn execute(&self, call: &Call) -> Result<Bytes, RestError> {
        let mut renewed = false;
        loop {
            let auth = self.authorization().await?;
            match self.retrying(call, Some(&auth.header)).await {
                Err(RestError::Unauthorized(_)) if !renewed && auth.login.is_some() => {
                    tracing::debug!(request = %call.label(), "token refused; logging in again");
                    renewed = true;
                    self.renew(auth.login.unwrap_or_default()).await?;
                }
                other => return other,
            }
        }
    }

    /// The tenant named by the current login (logging in first if there is no valid token).
    pub(super) async fn login_tenant(&self) -> Result<Option<String>, RestError> {
        self.authorization().await?;
        let state = self.token.lock().await;
        Ok(state.token.as_ref().and_then(|t| t.tenant.clone()))
    }

    async fn authorization(&self) -> Result<Authorization, RestError> {
        let (email, password) = match &self.credentials {
            Credentials::ApiKey(key) => {
                return Ok(Authorization {
                    header: Secret::new(format!("apikey {}", key.expose())),
                    login: None,
                })
            }
            Credentials::Login { email, password } => (email, password),
        };
        // Held across the login, so that concurrent callers wait for one login.
        let mut state = self.token.lock().await;
        let now = SystemTime::now();
        if state.token.as_ref().is_none_or(|t| t.is_due(now)) {
            state.token = Some(self.login(email, password).await?);
            state.logins += 1;
        }
        let token = state.token.as_ref().expect("set above");
        Ok(Authorization {
            header: token.header.clone(),
            login: Some(state.logins),
        })
    }

    /// Logs in again after the token of login number `login` was refused, unless another caller
    /// has done so already.
    async fn renew(&self, login: u64) -> Result<(), RestError> {
        let Credentials::Login { email, password } = &self.credentials else {
            return Ok(());
        };
        let mut state = self.token.lock().await;
        if state.logins == login {
            state.token = Some(self.login(email, password).await?);
            state.logins += 1;
        }
        Ok(())
    }

    /// `POST /_open/auth` `{"email","password"}` → `{"jwt","tenant",…}`.
    async fn login(&self, email: &str, password: &Secret) -> Result<Token, RestError> {
        let body = serde_json::json!({ "email": email, "password": password.expose() });
        let call =
            Call::post("/_open/auth").body(Some("application/json"), body.to_string().into());
        tracing::debug!("logging in to GDN");
        let reply = self.retrying(&call, None).await?;
        // Field by field, so that a decode error never quotes the token.
        let reply: Value = serde_json::from_slice(&reply)
            .map_err(|_| RestError::decode(&call.label(), "the reply is not JSON"))?;
        let jwt = reply
            .get("jwt")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or_else(|| RestError::decode(&call.label(), "no `jwt` string in the reply"))?;
        let tenant = reply
            .get("tenant")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Token::new(jwt, tenant, SystemTime::now()))
    }

    /// Sends `call`, retrying 429, 5xx and transport errors with the backoff policy.
    async fn retrying(&self, call: &Call, auth: Option<&Secret>) -> Result<Bytes, RestError> {
        let mut backoff: Option<Backoff> = None;
        loop {
            let error = match self.send(call, auth).await {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            if !call.retry
                || !error.is_retryable()
                || (!call.idempotent && error.may_have_reached_server())
            {
                return Err(error);
            }
            let backoff = backoff
                .get_or_insert_with(|| Backoff::new(*self.retry.backoff(), Rng::entropy_seed()));
            let Some(delay) = backoff.next_delay() else {
                return Err(error);
            };
            // The crate's schedule starts with a quick first reconnect, which suits a dropped
            // socket but not a server that just said it is busy: the first retry waits the
            // minimum.
            let mut delay = if backoff.retries() == 1 {
                backoff.min_delay()
            } else {
                delay
            };
            if let Some(after) = error.api_error().and_then(|a| a.retry_after) {
                delay = delay.max(after.min(self.retry.backoff().max_delay()));
            }
            tracing::debug!(
                request = %call.label(),
                error = %error,
                retry = backoff.retries(),
                ?delay,
                "retrying GDN REST request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One try: the reply body of a 2xx, or the error.
    async fn send(&self, call: &Call, auth: Option<&Secret>) -> Result<Bytes, RestError> {
        let label = call.label();
        let mut url = format!("{}{}", self.base, call.path);
        if let Some(q) = &call.query {
            url.push('?');
            url.push_str(q);
        }
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(ACCEPT, "application/json");
        if let Some(secret) = auth {
            let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                RestError::Config(
                    "the credentials contain characters not allowed in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(ct) = call.content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        if call.method == Method::POST {
            // An empty body still says `content-length: 0` (hyper leaves it out), which some
            // proxies require of a POST.
            request = request
                .header(CONTENT_LENGTH, call.body.len())
                .body(call.body.clone());
        }
        let transport = |e: reqwest::Error| RestError::Transport {
            request: label.clone(),
            source: Arc::new(e.without_url()),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry_after::parse(v, SystemTime::now()));
        let body = response.bytes().await.map_err(transport)?;
        tracing::debug!(request = %label, status, "GDN REST reply");
        if !(200..300).contains(&status) {
            return Err(RestError::from_status(ApiError::from_reply(
                label,
                status,
                &body,
                retry_after,
            )));
        }
        // jsc8 treats a 2xx whose body says `"error": true` as a failure too.
        if body.first() == Some(&b'{') {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                if v.get("error").and_then(Value::as_bool) == Some(true) {
                    let code = v
                        .get("code")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(status);
                    return Err(RestError::from_status(ApiError::from_reply(
                        label,
                        code,
                        &body,
                        retry_after,
                    )));
                }
            }
        }
        Ok(body)
    }
}
