//! One REST request: headers, the reply's status and body (read up to a limit), retries with
//! backoff as far as the call allows, and the one new login after a refused token.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;

use super::auth::{Credentials, Token};
use super::error::{redirect_location, ApiError, RestError};
use super::secrets::KnownSecrets;
use super::MAX_ERROR_REPLY_BYTES;
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
    /// Safe to send again after a failure that may have been carried out
    /// ([`RestError::may_have_been_processed`]: 500, 502, 504, a timeout or reset after the
    /// request went out). Everything but a publish and a stream creation is.
    idempotent: bool,
    /// Retry transient failures here. Off where a caller retries on its own (the one-time
    /// passwords of a reconnecting stream).
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

    /// Whether to try again after `error`: 429 and 503 always, other transient failures only if
    /// the request cannot have been carried out or may be repeated.
    fn retries(&self, error: &RestError) -> bool {
        self.retry && error.is_retryable() && (self.idempotent || !error.may_have_been_processed())
    }
}

/// What came of a call.
pub(super) struct Outcome {
    /// The reply body of a 2xx, or the error of the last try.
    pub(super) result: Result<Bytes, RestError>,
    /// True if a try before the last one failed in a way that the server may have carried out
    /// anyway (a 5xx, or a transport error after the request went out): the last try's "exists
    /// already" or "not found" may then be the first one's doing.
    pub(super) repeated_after_possible_success: bool,
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
    /// The longest successful reply body read, in bytes.
    pub(super) max_reply: usize,
    /// The client's own secrets, replaced wherever a server's text echoes them.
    pub(super) known: KnownSecrets,
}

impl Transport {
    /// Sends `call` with the client's credentials. A 401 on a token from an email login makes one
    /// new login and one more try; the second 401 is returned.
    pub(super) async fn execute(&self, call: &Call) -> Result<Bytes, RestError> {
        self.run(call).await.result
    }

    /// [`execute`](Self::execute), also saying whether an earlier try may have been carried out.
    pub(super) async fn run(&self, call: &Call) -> Outcome {
        let mut renewed = false;
        let mut repeated_after_possible_success = false;
        loop {
            let auth = match self.authorization().await {
                Ok(auth) => auth,
                Err(e) => {
                    return Outcome {
                        result: Err(e),
                        repeated_after_possible_success,
                    }
                }
            };
            let outcome = self.retrying(call, Some(&auth.header)).await;
            repeated_after_possible_success |= outcome.repeated_after_possible_success;
            match outcome.result {
                Err(RestError::Unauthorized(_)) if !renewed && auth.login.is_some() => {
                    tracing::debug!(request = %call.label(), "token refused; logging in again");
                    renewed = true;
                    if let Err(e) = self.renew(auth.login.unwrap_or_default()).await {
                        return Outcome {
                            result: Err(e),
                            repeated_after_possible_success,
                        };
                    }
                }
                result => {
                    return Outcome {
                        result,
                        repeated_after_possible_success,
                    }
                }
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
        let reply = self.retrying(&call, None).await.result?;
        // Field by field, so that a decode error never quotes the token.
        let reply: Value = serde_json::from_slice(&reply)
            .map_err(|_| RestError::decode(&call.label(), "the reply is not JSON"))?;
        let jwt = reply
            .get("jwt")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or_else(|| RestError::decode(&call.label(), "no `jwt` string in the reply"))?;
        self.known.add_jwt(jwt);
        let tenant = reply
            .get("tenant")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Token::new(jwt, tenant, SystemTime::now()))
    }

    /// Sends `call`, retrying with the backoff policy what [`Call::retries`] allows.
    async fn retrying(&self, call: &Call, auth: Option<&Secret>) -> Outcome {
        let mut backoff: Option<Backoff> = None;
        let mut repeated_after_possible_success = false;
        let mut possible_success = false;
        loop {
            repeated_after_possible_success |= possible_success;
            let error = match self.send(call, auth).await {
                Ok(body) => {
                    return Outcome {
                        result: Ok(body),
                        repeated_after_possible_success,
                    }
                }
                Err(e) => e,
            };
            let give_up = move |error| Outcome {
                result: Err(error),
                repeated_after_possible_success,
            };
            if !call.retries(&error) {
                return give_up(error);
            }
            possible_success =
                matches!(error, RestError::Server(_)) || error.may_have_been_processed();
            let backoff = backoff
                .get_or_insert_with(|| Backoff::new(*self.retry.backoff(), Rng::entropy_seed()));
            let Some(delay) = backoff.next_delay() else {
                return give_up(error);
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
        // The client follows no redirect (see `ClientBuilder::build`): a 3xx arrives here.
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        tracing::debug!(request = %label, status, "GDN REST reply");
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get(LOCATION)
                .map(|l| redirect_location(l.as_bytes(), &self.known));
            return Err(RestError::Redirect {
                request: label,
                status,
                location,
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry_after::parse(v, SystemTime::now()));
        let success = (200..300).contains(&status);
        let limit = if success {
            self.max_reply
        } else {
            MAX_ERROR_REPLY_BYTES
        };
        let (body, complete) = read_body(&mut response, limit, success)
            .await
            .map_err(transport)?;
        if !success {
            return Err(RestError::from_status(ApiError::from_reply(
                label,
                status,
                &body,
                !complete,
                retry_after,
                &self.known,
            )));
        }
        if !complete {
            return Err(RestError::ReplyTooLarge {
                request: label,
                limit,
            });
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
                        false,
                        retry_after,
                        &self.known,
                    )));
                }
            }
        }
        Ok(Bytes::from(body))
    }
}

/// Reads at most `limit` bytes of the reply body, chunk by chunk as they arrive (never holding
/// more than the limit); `false` if the body is longer. If only the `whole` body will do, one
/// announced longer by its `Content-Length` is not read at all.
async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
    whole: bool,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let announced = response.content_length();
    if whole && announced.is_some_and(|n| n > limit as u64) {
        return Ok((Vec::new(), false));
    }
    let capacity = announced.map_or(0, |n| n.min(limit as u64) as usize);
    let mut body = Vec::with_capacity(capacity.min(64 * 1024));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}
