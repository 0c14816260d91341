//! [`Client`]: the GDN REST calls that come before a stream socket (log in, find the tenant and
//! the socket host, create the stream, fetch one-time passwords), and producers and consumers
//! built from them.
//!
//! ```no_run
//! use stream_websocket::gdn::{Client, ConsumerOptions, ProducerOptions, Scope};
//! use stream_websocket::Publish;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The REST base is used as given: on GDN it is `https://api-<host>`.
//! let client = Client::builder("https://api-play.paas.macrometa.io")
//!     .login("me@example.com", "my password") // or .api_key("tenant.key.secret")
//!     .build()?;
//! client.create_stream_if_missing("orders", Scope::Global).await?;
//!
//! // Every (re)connection fetches a fresh one-time password from `POST /apid/otp`.
//! let producer = client
//!     .producer("orders", Scope::Global, ProducerOptions::default())
//!     .await?;
//! let id = producer.send(Publish::new("hello")).await?;
//! println!("stored as {id:?}");
//! producer.close().await?;
//!
//! let consumer = client
//!     .consumer("orders", Scope::Global, ConsumerOptions::new("billing"))
//!     .await?;
//! # drop(consumer);
//! # Ok(())
//! # }
//! ```
//!
//! # What the client does for you
//!
//! * **Credentials.** An API key is sent as `Authorization: apikey <key>`. An email and password
//!   are exchanged for a JWT (`POST /_open/auth`), sent as `Authorization: bearer <jwt>`; the
//!   JWT is renewed before it expires (5 minutes before its `exp`, or 10 % of its lifetime if
//!   that is shorter) and once after a 401, after which the request is tried once more. A
//!   second 401 is returned as [`RestError::Unauthorized`]. Concurrent callers share one login.
//! * **Tenant.** From the login reply (`tenant`, else the JWT's `tenant` claim); for an API key
//!   from `GET /_api/user` (`result[0].tenant`), falling back to jsc8's rule if that call is
//!   refused (the key without its last two dot-separated parts; `_mm` for a key with fewer than
//!   three). [`ClientBuilder::tenant`] sets it instead. Looked up once.
//! * **Socket server.** `wss://api-<tags.url>` where `tags.url` comes from
//!   `GET /datacenter/local` (the local region, as pyC8 does, for global and local streams
//!   alike), with any user-info part dropped (a local stand-in answers `gdn@127.0.0.1:<port>`,
//!   which gives `wss://127.0.0.1:<port>`); `ws://` when the REST base is `http://`.
//!   [`ClientBuilder::socket_server`] sets it instead. Looked up once.
//! * **Retries.** Transient failures are retried with the crate's backoff (default: 3 retries
//!   after about 0.5 s, 0.5 s and 1 s; see [`ClientBuilder::retry`]) as far as the call allows;
//!   see [below](#retries). Other statuses are returned at once as a typed [`RestError`].
//!
//! # Retries
//!
//! What a call does again after a failure depends on whether repeating it is safe:
//!
//! | call | request | retried after |
//! |---|---|---|
//! | [`Client::tenant`], [`Client::local_datacenter`], [`Client::socket_server`], [`Client::list_streams`], [`Client::stream_exists`] | `GET` | 429, 5xx, any transport error |
//! | the login (`POST /_open/auth`), [`Client::fetch_otp`] (`POST /apid/otp`) | `POST`, idempotent: a repeat only issues another token or password | 429, 5xx, any transport error |
//! | [`Client::delete_stream`] | `DELETE` | 429, 5xx, any transport error |
//! | [`Client::create_stream`], [`Client::create_stream_if_missing`], [`Client::publish`] | `POST`, **not** idempotent | 429, 503, and transport errors before the request was sent (the connection could not be made) |
//! | [`Client::otp_auth`] (a stream's connection attempts) | `POST /apid/otp` | nothing: the stream retries a failed attempt ([`Error::Rest`]) with its own backoff |
//!
//! A call that is not idempotent is never sent again after a failure that the server may have
//! carried out ([`RestError::may_have_been_processed`]: 500, 502, 504 and other 5xx but 503, a
//! timeout or a reset connection after the request went out): a publish could be stored twice.
//! A refused TLS certificate is never retried. A 401 on a JWT from an email login makes one new
//! login and one more try, for every call.
//!
//! A repeat can find the work of the try before it done: a [`Client::delete_stream`] repeated
//! after a 5xx or a timeout that then gets 404, or a [`Client::create_stream`] repeated after a
//! 503 that then gets 409 (errorNum 581), counts as success.
//!
//! # What the client refuses
//!
//! * **Redirects.** GDN needs none, and following one could send the credentials, a login or a
//!   message to another server, or over `http` from an `https` base, or turn a publish into a
//!   body-less `GET`. A 3xx reply fails the call with [`RestError::Redirect`] (status and the
//!   redacted `Location`).
//! * **Long replies.** A successful reply's body is read up to
//!   [`ClientBuilder::max_reply_bytes`] (default [`DEFAULT_MAX_REPLY_BYTES`], 4 MiB), checked
//!   while it arrives; a longer one fails the call with [`RestError::ReplyTooLarge`]. Of an error
//!   reply only the first [`MAX_ERROR_REPLY_BYTES`] (64 KiB) are read, and of its message at most
//!   1 KiB is redacted and 256 bytes kept.
//!
//! # Secrets
//!
//! The API key, password, JWT and one-time passwords are kept as [`Secret`]s: they appear in no
//! `Debug` output, error or log line. A server's text (an error message, a redirect's
//! `Location`) has them replaced by `REDACTED` wherever it echoes them (the API key or
//! password, the last 4 JWTs and the last 32 one-time passwords the client received, each as
//! written, JSON-escaped or percent-encoded; values shorter than 4 bytes are not looked for),
//! and then goes through [`redact_json`](crate::redact_json) or [`redact_url`] for secrets of
//! other kinds.

mod auth;
mod error;
mod http;
mod secrets;
#[cfg(feature = "rustls")]
mod tls;

pub use error::{ApiError, RestError};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use self::auth::{tenant_from_api_key, Credentials};
use self::http::{Call, Transport};
use self::secrets::KnownSecrets;
use crate::backoff::Jitter;
use crate::config::ReconnectConfig;
use crate::error::Error;
use crate::gdn::encode::encoded;
use crate::gdn::{
    Auth, Consumer, ConsumerConfig, ConsumerOptions, Endpoint, Producer, ProducerConfig,
    ProducerOptions, Topic, DEFAULT_FABRIC,
};
use crate::{boxed, redact_url, BoxConnect, ConnectOptions, Secret};

/// How long one REST request may take, reply body included, by default: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening the TCP (and TLS) connection of a REST request may take by default: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest successful REST reply body read by default: 4 MiB. See
/// [`ClientBuilder::max_reply_bytes`].
pub const DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// How much of an error reply's body is read: 64 KiB. The rest is not read; the error keeps at
/// most 256 bytes of the message.
pub const MAX_ERROR_REPLY_BYTES: usize = 64 * 1024;

/// Whether a GDN stream is global (replicated to every region of the fabric) or local (kept in
/// one region).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// A global stream, `c8globals.<name>` (`?global=true`). The default.
    #[default]
    Global,
    /// A local stream, `c8locals.<name>` (`?global=false`).
    Local,
}

impl Scope {
    /// The prefix GDN gives the stream's name: `"c8globals."` or `"c8locals."`.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Global => "c8globals.",
            Scope::Local => "c8locals.",
        }
    }

    /// The stream's full name, prefix included: `c8globals.orders`.
    pub fn stream_id(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// True for [`Scope::Local`].
    pub fn is_local(self) -> bool {
        self == Scope::Local
    }

    fn query(self) -> &'static str {
        match self {
            Scope::Global => "global=true",
            Scope::Local => "global=false",
        }
    }
}

/// One entry of [`Client::list_streams`]. Fields missing from the reply are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The full name, prefix included: `c8globals.orders`.
    #[serde(default)]
    pub topic: String,
    /// True for a local stream.
    #[serde(default)]
    pub local: bool,
    /// The fabric.
    #[serde(default)]
    pub db: String,
    /// The tenant.
    #[serde(default)]
    pub tenant: String,
    /// GDN's stream type (4 for a plain stream).
    #[serde(default, rename = "type")]
    pub kind: i64,
}

impl StreamInfo {
    /// The name without the `c8globals.` / `c8locals.` prefix.
    pub fn name(&self) -> &str {
        self.topic
            .strip_prefix(Scope::Global.prefix())
            .or_else(|| self.topic.strip_prefix(Scope::Local.prefix()))
            .unwrap_or(&self.topic)
    }
}

/// The region [`Client::local_datacenter`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datacenter {
    /// The region's name (`_key` or `name`), empty if the reply has neither.
    pub name: String,
    /// `tags.url`: the region's host, from which the socket server is derived.
    pub url: String,
    /// `tags.api`: the `api-` form of the host, if the reply has it.
    pub api: Option<String>,
}

/// Settings of a [`Client`]; [`build`](Self::build) checks them. Start with
/// [`Client::builder`].
pub struct ClientBuilder {
    base_url: String,
    credentials: Option<Credentials>,
    fabric: String,
    tenant: Option<String>,
    socket_server: Option<String>,
    retry: Option<ReconnectConfig>,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_reply: usize,
    connect: ConnectOptions,
    create_missing: bool,
    #[cfg(feature = "rustls")]
    rustls: Option<Arc<rustls::ClientConfig>>,
    #[cfg(feature = "rustls")]
    extra_roots: Vec<tls::ExtraRoot>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            // Not checked yet: it might hold a password, which `build` refuses.
            .field("base_url", &redact_url(&self.base_url))
            .field(
                "credentials",
                &self.credentials.as_ref().map(Credentials::kind),
            )
            .field("fabric", &self.fabric)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Authenticates with an API key: `Authorization: apikey <key>`.
    pub fn api_key(mut self, key: impl Into<Secret>) -> Self {
        self.credentials = Some(Credentials::ApiKey(key.into()));
        self
    }

    /// Authenticates with an email and password, exchanged for a JWT (`POST /_open/auth`) on
    /// first use and again before it expires.
    pub fn login(mut self, email: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.credentials = Some(Credentials::Login {
            email: email.into(),
            password: password.into(),
        });
        self
    }

    /// The fabric (GDN's database) of the streams. Default: [`DEFAULT_FABRIC`] (`_system`).
    pub fn fabric(mut self, fabric: impl Into<String>) -> Self {
        self.fabric = fabric.into();
        self
    }

    /// The tenant, instead of discovering it (see the [module documentation](self)).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The WebSocket server of the streams, `ws[s]://host[:port]`, instead of the one derived
    /// from `GET /datacenter/local` (see the [module documentation](self)).
    pub fn socket_server(mut self, server: impl Into<String>) -> Self {
        self.socket_server = Some(server.into());
        self
    }

    /// The backoff for retrying transient failures (429, 5xx, transport errors): the policy's
    /// minimum and maximum delay, growth factor, retry cap and jitter are used (its other
    /// settings are for streams). The first retry waits the minimum delay (where a stream's
    /// first reconnect is drawn from its short first-reconnect window); a `Retry-After` header
    /// (delay-seconds or an HTTP date) lengthens a wait, up to the maximum delay.
    /// Default: at most 3 retries, a 500 ms minimum, growth 2, a 5 s maximum and ±20 % jitter
    /// (waits of about 0.5 s, 0.5 s and 1 s).
    ///
    /// Which failures each call retries is in the [module documentation](self#retries): a call
    /// that is not idempotent ([`Client::publish`], [`Client::create_stream`]) is repeated only
    /// after 429, 503 or a connection that could not be made.
    pub fn retry(mut self, config: ReconnectConfig) -> Self {
        self.retry = Some(config);
        self
    }

    /// How long one REST request may take, reply included. Default: [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long opening a REST connection may take. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest body of a successful reply the client reads, in bytes; a longer one fails the
    /// call with [`RestError::ReplyTooLarge`], checked while the body arrives (and before, from
    /// its `Content-Length`), so no more than this is ever held. Error replies are read up to
    /// [`MAX_ERROR_REPLY_BYTES`] whatever this says. Must be at least 1 ([`build`](Self::build)
    /// checks). Default: [`DEFAULT_MAX_REPLY_BYTES`] (4 MiB), far above what GDN sends
    /// ([`Client::list_streams`] of a busy fabric is the longest).
    pub fn max_reply_bytes(mut self, bytes: usize) -> Self {
        self.max_reply = bytes;
        self
    }

    /// How the client's producers and consumers open their sockets (tungstenite limits, a TLS
    /// connector). Default: [`ConnectOptions::new`]. A rustls configuration set with
    /// [`rustls`](Self::rustls) or [`add_root_certificate_pem`](Self::add_root_certificate_pem)
    /// replaces the connector given here.
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect = options;
        self
    }

    /// Whether [`Client::producer`] and [`Client::consumer`] create the stream when it does not
    /// exist yet ([`Client::create_stream_if_missing`]). Default: `false`.
    pub fn create_missing_streams(mut self, create: bool) -> Self {
        self.create_missing = create;
        self
    }

    /// rustls with this configuration for the REST calls and the sockets alike (a private root
    /// store, client certificates). Its ALPN protocols must not offer `h2`: both speak
    /// HTTP/1.1. Default: the ring provider and the webpki roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn rustls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.rustls = Some(config);
        self
    }

    /// Trusts the certificates in this PEM text as roots, besides the webpki roots, for the REST
    /// calls and the sockets: for a server with a self-signed or private certificate. Checked
    /// by [`build`](Self::build). Not combinable with [`rustls`](Self::rustls).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.extra_roots.push(tls::ExtraRoot::Pem(pem.to_vec()));
        self
    }

    /// [`add_root_certificate_pem`](Self::add_root_certificate_pem) with the PEM file at
    /// `path`, read by [`build`](Self::build).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.extra_roots.push(tls::ExtraRoot::File(path.into()));
        self
    }

    /// Checks the settings and makes the client. Makes no request: the first call logs in.
    ///
    /// # Errors
    ///
    /// [`RestError::Config`] for a base URL that is not `http[s]://host[:port][/path]` (or has
    /// credentials, a query or a fragment), `https` without a TLS feature, no credentials, a
    /// zero [`max_reply_bytes`](Self::max_reply_bytes), or a root certificate that cannot be
    /// read; [`RestError::Url`] for an invalid fabric.
    pub fn build(self) -> Result<Client, RestError> {
        let base = parse_base(&self.base_url)?;
        let credentials = self.credentials.ok_or_else(|| {
            RestError::Config("no credentials: set api_key(...) or login(...)".into())
        })?;
        if self.max_reply == 0 {
            return Err(RestError::Config(
                "max_reply_bytes must be at least 1".into(),
            ));
        }
        let known = KnownSecrets::default();
        match &credentials {
            Credentials::ApiKey(key) => known.add_fixed(key.expose()),
            Credentials::Login { password, .. } => known.add_fixed(password.expose()),
        }
        // Checks the fabric as a stream URL will need it.
        Topic::gdn("tenant", &self.fabric, "stream", false)?;
        let retry = match self.retry {
            Some(r) => r,
            None => default_retry(),
        };
        #[cfg_attr(not(feature = "rustls"), allow(unused_mut))]
        let mut connect = self.connect;
        #[cfg_attr(not(feature = "rustls"), allow(unused_mut))]
        let mut http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            // GDN needs no redirect: a 3xx is returned as `RestError::Redirect`.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stream-websocket/", env!("CARGO_PKG_VERSION")));
        #[cfg(feature = "rustls")]
        {
            let tls = tls::configure(self.rustls, &self.extra_roots)?;
            http = http.use_preconfigured_tls((*tls.config).clone());
            if tls.for_sockets {
                connect = connect.rustls(tls.config);
            }
        }
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        if base.starts_with("https://") {
            return Err(RestError::Config(
                "https needs the `rustls` or `native-tls` feature".into(),
            ));
        }
        let http = http
            .build()
            .map_err(|e| RestError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport {
                    http,
                    base,
                    credentials,
                    retry,
                    token: Mutex::default(),
                    max_reply: self.max_reply,
                    known,
                },
                fabric: self.fabric,
                tenant: OnceCell::new_with(self.tenant),
                socket_server: OnceCell::new_with(self.socket_server),
                connect,
                create_missing: self.create_missing,
            }),
        })
    }
}

/// True for "the stream exists already": 409, or GDN's errorNum 581 with another status.
fn exists_already(e: &RestError) -> bool {
    matches!(e, RestError::Conflict(_)) || e.error_num() == Some(581)
}

/// The REST retry policy used unless [`ClientBuilder::retry`] sets one.
fn default_retry() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(500))
        .max_delay(Duration::from_secs(5))
        .grow_factor(2.0)
        .max_retries(3)
        .jitter(Jitter::Proportional(0.2))
        .build()
        .expect("the default REST retry policy is valid")
}

/// `http[s]://authority[/path]` without a trailing `/`; no credentials, query or fragment.
fn parse_base(base: &str) -> Result<String, RestError> {
    let invalid = |why: &str| {
        RestError::Config(format!(
            "invalid REST base URL ({why}); expected http[s]://host[:port]"
        ))
    };
    let url = reqwest::Url::parse(base).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The socket server for a REST base and a region's `tags.url`: `ws[s]://api-<tags.url>` with any
/// user-info part dropped, `ws` for an `http` base.
fn socket_server_for(base: &str, tags_url: &str) -> Option<String> {
    let scheme = if base.starts_with("http://") {
        "ws"
    } else {
        "wss"
    };
    let host = tags_url.trim().trim_end_matches('/');
    let host = host.split_once("://").map_or(host, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    let prefixed = if host.starts_with("api-") {
        host.to_string()
    } else {
        format!("api-{host}")
    };
    // `api-gdn@127.0.0.1:8080`: the SDKs make `api-gdn` user-info; the host is after the `@`.
    let authority = prefixed
        .rsplit_once('@')
        .map_or(prefixed.as_str(), |(_, h)| h);
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// A GDN REST client: logs in, discovers the tenant and the socket server, manages streams and
/// hands out producers and consumers authenticated with one-time passwords. Cheap to clone
/// (clones share the connection pool, the login and what was discovered).
///
/// See the [module documentation](self) for what it does and an example. `Debug` shows the base
/// URL, the fabric and the kind of credentials, never a secret.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    fabric: String,
    tenant: OnceCell<String>,
    socket_server: OnceCell<String>,
    connect: ConnectOptions,
    create_missing: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.transport.base)
            .field("fabric", &self.inner.fabric)
            .field("credentials", &self.inner.transport.credentials.kind())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the settings of a client for the REST base `base_url`, used as given (no `api-`
    /// is added): on GDN `https://api-<host>`, e.g. `https://api-play.paas.macrometa.io`; a
    /// local server `http://127.0.0.1:<port>`. A trailing `/` is dropped; a path is kept as a
    /// prefix of every request path.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            credentials: None,
            fabric: DEFAULT_FABRIC.to_string(),
            tenant: None,
            socket_server: None,
            retry: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_reply: DEFAULT_MAX_REPLY_BYTES,
            connect: ConnectOptions::new(),
            create_missing: false,
            #[cfg(feature = "rustls")]
            rustls: None,
            #[cfg(feature = "rustls")]
            extra_roots: Vec::new(),
        }
    }

    /// The REST base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.transport.base
    }

    /// The fabric of the streams.
    pub fn fabric(&self) -> &str {
        &self.inner.fabric
    }

    /// The tenant: as set, or discovered on first use (see the [module documentation](self)).
    ///
    /// # Errors
    ///
    /// The login's error; for an API key, [`RestError::Unauthorized`], a redirect, a reply too
    /// long or a transient error from `GET /_api/user` (other refusals fall back to jsc8's
    /// rule); [`RestError::Decode`] if a login names no tenant.
    ///
    /// Retries: the login and `GET /_api/user` after 429, 5xx and transport errors (see the
    /// [module documentation](self#retries)).
    pub async fn tenant(&self) -> Result<String, RestError> {
        self.inner
            .tenant
            .get_or_try_init(|| self.discover_tenant())
            .await
            .cloned()
    }

    async fn discover_tenant(&self) -> Result<String, RestError> {
        let transport = &self.inner.transport;
        let key = match &transport.credentials {
            Credentials::Login { .. } => {
                return transport.login_tenant().await?.ok_or_else(|| {
                    RestError::decode("POST /_open/auth", "no tenant in the reply or in the token")
                })
            }
            Credentials::ApiKey(key) => key,
        };
        let call = Call::get("/_api/user");
        let reply = match transport.execute(&call).await {
            Ok(reply) => reply,
            Err(e)
                if e.is_retryable()
                    || matches!(
                        e,
                        RestError::Unauthorized(_)
                            | RestError::Redirect { .. }
                            | RestError::ReplyTooLarge { .. }
                    ) =>
            {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!(error = %e, "no tenant from /_api/user; using the API key's prefix");
                return Ok(tenant_from_api_key(key.expose()));
            }
        };
        let tenant = serde_json::from_slice::<Value>(&reply).ok().and_then(|v| {
            v.pointer("/result/0/tenant")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        });
        Ok(tenant.unwrap_or_else(|| {
            tracing::debug!("no tenant in the /_api/user reply; using the API key's prefix");
            tenant_from_api_key(key.expose())
        }))
    }

    /// `GET /datacenter/local`: the region this REST base serves.
    ///
    /// Retries: after 429, 5xx and transport errors.
    ///
    /// # Errors
    ///
    /// The request's [`RestError`]; [`RestError::Decode`] for a reply without `tags.url`.
    pub async fn local_datacenter(&self) -> Result<Datacenter, RestError> {
        let call = Call::get("/datacenter/local");
        let reply = self.json(&call).await?;
        let text = |pointer: &str| reply.pointer(pointer).and_then(Value::as_str);
        let url = text("/tags/url")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RestError::decode(&call.label(), "no `tags.url` string"))?;
        Ok(Datacenter {
            name: text("/_key")
                .or_else(|| text("/name"))
                .unwrap_or_default()
                .to_string(),
            url: url.to_string(),
            api: text("/tags/api").map(str::to_string),
        })
    }

    /// The WebSocket server of the streams, `ws[s]://host[:port]`: as set, or derived from
    /// [`local_datacenter`](Self::local_datacenter) on first use (see the
    /// [module documentation](self)).
    ///
    /// # Errors
    ///
    /// As [`local_datacenter`](Self::local_datacenter).
    pub async fn socket_server(&self) -> Result<String, RestError> {
        self.inner
            .socket_server
            .get_or_try_init(|| async {
                let dc = self.local_datacenter().await?;
                socket_server_for(&self.inner.transport.base, &dc.url).ok_or_else(|| {
                    RestError::decode("GET /datacenter/local", "`tags.url` names no host")
                })
            })
            .await
            .cloned()
    }

    /// Fetches a one-time password for one socket connection: `POST /apid/otp` (empty body,
    /// `content-type: text/plain`) → `{"otp": "..."}`.
    ///
    /// Retries: after 429, 5xx and transport errors (a repeat only issues another password; the
    /// one lost goes unused).
    ///
    /// # Errors
    ///
    /// The request's [`RestError`]; [`RestError::Decode`] for a reply without `otp`.
    pub async fn fetch_otp(&self) -> Result<Secret, RestError> {
        self.otp(Call::post("/apid/otp")).await
    }

    async fn otp(&self, call: Call) -> Result<Secret, RestError> {
        let call = call.body(Some("text/plain"), Vec::new());
        let reply = self.inner.transport.execute(&call).await?;
        // Field by field, so that a decode error never quotes the password.
        let otp = serde_json::from_slice::<Value>(&reply)
            .ok()
            .and_then(|v| v.get("otp").and_then(Value::as_str).map(Secret::new))
            .filter(|otp| !otp.expose().is_empty())
            .ok_or_else(|| RestError::decode(&call.label(), "no `otp` string in the reply"))?;
        self.inner.transport.known.add_otp(otp.expose());
        Ok(otp)
    }

    /// Socket authentication by one-time password: every connection attempt fetches a fresh one
    /// ([`fetch_otp`](Self::fetch_otp), without its own retries: the stream's backoff retries a
    /// failed fetch). A failed fetch fails the attempt with an [`Error::Rest`], which the stream
    /// retries if [`RestError::is_retryable`] says so (429, 5xx, a transport error) and which
    /// ends it otherwise (401 after one new login, 403, a redirect, a reply without `otp`, …);
    /// a refused TLS certificate fails it with an [`Error::Tls`], which ends the stream as a
    /// refused certificate on the socket does.
    pub fn otp_auth(&self) -> Auth {
        let client = self.clone();
        Auth::otp(move || {
            let client = client.clone();
            async move {
                client
                    .otp(Call::post("/apid/otp").without_retries())
                    .await
                    .map_err(Error::from)
            }
        })
    }

    /// Lists the streams of the fabric: `GET /_fabric/{fabric}/_api/streams?global=…`.
    ///
    /// Retries: after 429, 5xx and transport errors.
    ///
    /// # Errors
    ///
    /// The request's [`RestError`] ([`RestError::NotFound`] if the fabric does not exist);
    /// [`RestError::Decode`] for a reply without a `result` list.
    pub async fn list_streams(&self, scope: Scope) -> Result<Vec<StreamInfo>, RestError> {
        #[derive(Deserialize)]
        struct Reply {
            result: Vec<StreamInfo>,
        }
        let call = Call::get(self.streams_path()).query(scope.query());
        let reply = self.inner.transport.execute(&call).await?;
        serde_json::from_slice::<Reply>(&reply)
            .map(|r| r.result)
            .map_err(|e| RestError::from_serde(&call.label(), &e))
    }

    /// True if the stream exists: [`list_streams`](Self::list_streams) names it.
    ///
    /// # Errors
    ///
    /// As [`list_streams`](Self::list_streams); [`RestError::Url`] for an invalid name.
    pub async fn stream_exists(&self, name: &str, scope: Scope) -> Result<bool, RestError> {
        self.check_name(name, scope)?;
        let id = scope.stream_id(name);
        Ok(self
            .list_streams(scope)
            .await?
            .iter()
            .any(|s| s.topic == id))
    }

    /// Creates a stream: `POST /_fabric/{fabric}/_api/streams/{name}?global=…` with no body.
    /// Returns its full name (`stream-id`, e.g. `c8globals.orders`).
    ///
    /// Not idempotent: retried only after 429, 503 and a connection that could not be made,
    /// never after 500, 502, 504 or a timeout once the request went out. If a repeat (after a
    /// 503) is answered "exists already" (409 or errorNum 581), the first try may have created
    /// the stream: that counts as success.
    ///
    /// # Errors
    ///
    /// The request's [`RestError`]: [`RestError::Conflict`] (errorNum 581) if it exists;
    /// [`RestError::Url`] for an invalid name.
    pub async fn create_stream(&self, name: &str, scope: Scope) -> Result<String, RestError> {
        self.check_name(name, scope)?;
        let call = Call::post(format!("{}/{}", self.streams_path(), encoded(name)))
            .query(scope.query())
            .not_idempotent();
        let outcome = self.inner.transport.run(&call).await;
        let reply = match outcome.result {
            Ok(reply) => reply,
            Err(e) if outcome.repeated_after_possible_success && exists_already(&e) => {
                tracing::debug!(
                    stream = name,
                    "a repeated create found the stream: counted as created"
                );
                return Ok(scope.stream_id(name));
            }
            Err(e) => return Err(e),
        };
        let reply: Value =
            serde_json::from_slice(&reply).map_err(|e| RestError::from_serde(&call.label(), &e))?;
        Ok(reply
            .pointer("/result/stream-id")
            .and_then(Value::as_str)
            .map_or_else(|| scope.stream_id(name), str::to_string))
    }

    /// [`create_stream`](Self::create_stream), treating "exists already" (409 or errorNum 581)
    /// as success. Returns `true` if it created the stream (or a repeated request found it
    /// after a try the server may have carried out, see [`create_stream`](Self::create_stream)),
    /// `false` if it existed.
    ///
    /// Retries: as [`create_stream`](Self::create_stream).
    ///
    /// # Errors
    ///
    /// As [`create_stream`](Self::create_stream), except for an existing stream.
    pub async fn create_stream_if_missing(
        &self,
        name: &str,
        scope: Scope,
    ) -> Result<bool, RestError> {
        match self.create_stream(name, scope).await {
            Ok(_) => Ok(true),
            Err(e) if exists_already(&e) => {
                tracing::debug!(stream = name, "the stream exists already");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a stream: `DELETE /_fabric/{fabric}/_api/streams/{c8globals.name}`.
    ///
    /// Retries: after 429, 5xx and transport errors (deleting twice deletes once). If a repeat
    /// after a 5xx or a timeout is answered 404, the first try may have deleted the stream:
    /// that counts as success.
    ///
    /// # Errors
    ///
    /// The request's [`RestError`]: [`RestError::NotFound`] if it does not exist,
    /// [`RestError::Status`] with 412 while clients are connected; [`RestError::Url`] for an
    /// invalid name.
    pub async fn delete_stream(&self, name: &str, scope: Scope) -> Result<(), RestError> {
        self.check_name(name, scope)?;
        let path = format!(
            "{}/{}",
            self.streams_path(),
            encoded(&scope.stream_id(name))
        );
        let outcome = self.inner.transport.run(&Call::delete(path)).await;
        match outcome.result {
            Ok(_) => Ok(()),
            Err(RestError::NotFound(_)) if outcome.repeated_after_possible_success => {
                tracing::debug!(
                    stream = name,
                    "a repeated delete found no stream: counted as deleted"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes one message over REST:
    /// `POST /_fabric/{fabric}/_api/streams/{c8globals.name}/publish?global=…` with the message
    /// as the body, without a content type (as pyC8 sends it). Consumers receive exactly these
    /// bytes. No properties, key or context: use a [`Producer`] for those.
    ///
    /// Not idempotent: retried only after 429, 503 and a connection that could not be made.
    /// After 500, 502, 504 or a timeout or reset once the request went out the message may have
    /// been stored: the error is returned
    /// ([`may_have_been_processed`](RestError::may_have_been_processed) says so) and repeating
    /// it is the caller's choice.
    ///
    /// # Errors
    ///
    /// The request's [`RestError`]; [`RestError::Url`] for an invalid name.
    pub async fn publish(
        &self,
        name: &str,
        scope: Scope,
        message: impl Into<Vec<u8>>,
    ) -> Result<(), RestError> {
        self.check_name(name, scope)?;
        let path = format!(
            "{}/{}/publish",
            self.streams_path(),
            encoded(&scope.stream_id(name))
        );
        let call = Call::post(path)
            .query(scope.query())
            .body(None, message.into())
            .not_idempotent();
        self.inner.transport.execute(&call).await?;
        Ok(())
    }

    /// The stream's [`Topic`], with the (discovered) tenant and the client's fabric.
    ///
    /// # Errors
    ///
    /// As [`tenant`](Self::tenant); [`RestError::Url`] for an invalid name.
    pub async fn topic(&self, name: &str, scope: Scope) -> Result<Topic, RestError> {
        let tenant = self.tenant().await?;
        Ok(Topic::gdn(
            &tenant,
            &self.inner.fabric,
            name,
            scope.is_local(),
        )?)
    }

    /// A producer [`Endpoint`] for the stream on the [socket server](Self::socket_server),
    /// authenticated by [`otp_auth`](Self::otp_auth), with the client's
    /// [`ConnectOptions`](ClientBuilder::connect_options). Creates the stream first if the
    /// client was built with [`create_missing_streams`](ClientBuilder::create_missing_streams).
    ///
    /// # Errors
    ///
    /// As [`topic`](Self::topic), [`socket_server`](Self::socket_server) and
    /// [`create_stream_if_missing`](Self::create_stream_if_missing); [`RestError::Url`] for
    /// options or a socket server the endpoint refuses.
    pub async fn producer_endpoint(
        &self,
        name: &str,
        scope: Scope,
        options: ProducerOptions,
    ) -> Result<Endpoint, RestError> {
        let (topic, server) = self.prepare(name, scope).await?;
        Ok(self.finish(Endpoint::producer(&server, &topic, options)?))
    }

    /// A consumer [`Endpoint`], as [`producer_endpoint`](Self::producer_endpoint).
    ///
    /// # Errors
    ///
    /// As [`producer_endpoint`](Self::producer_endpoint).
    pub async fn consumer_endpoint(
        &self,
        name: &str,
        scope: Scope,
        options: ConsumerOptions,
    ) -> Result<Endpoint, RestError> {
        let (topic, server) = self.prepare(name, scope).await?;
        Ok(self.finish(Endpoint::consumer(&server, &topic, options)?))
    }

    /// A [`Producer`] on [`producer_endpoint`](Self::producer_endpoint) with default settings
    /// ([`Producer::for_endpoint`]). It connects on first use. Must be called within a Tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// As [`producer_endpoint`](Self::producer_endpoint).
    pub async fn producer(
        &self,
        name: &str,
        scope: Scope,
        options: ProducerOptions,
    ) -> Result<Producer, RestError> {
        self.producer_with_config(name, scope, options, ProducerConfig::default())
            .await
    }

    /// [`producer`](Self::producer) with these settings (a [`ProducerConfig`] or a
    /// [`ReconnectConfig`]).
    ///
    /// # Errors
    ///
    /// As [`producer_endpoint`](Self::producer_endpoint).
    pub async fn producer_with_config(
        &self,
        name: &str,
        scope: Scope,
        options: ProducerOptions,
        config: impl Into<ProducerConfig>,
    ) -> Result<Producer, RestError> {
        let endpoint = self.producer_endpoint(name, scope, options).await?;
        Ok(Producer::for_endpoint(endpoint, config))
    }

    /// A [`Consumer`] on [`consumer_endpoint`](Self::consumer_endpoint) with default settings.
    /// It connects when first polled.
    ///
    /// # Errors
    ///
    /// As [`producer_endpoint`](Self::producer_endpoint).
    pub async fn consumer(
        &self,
        name: &str,
        scope: Scope,
        options: ConsumerOptions,
    ) -> Result<Consumer<BoxConnect>, RestError> {
        self.consumer_with_config(name, scope, options, ReconnectConfig::default())
            .await
    }

    /// [`consumer`](Self::consumer) with these settings (a [`ConsumerConfig`] or a
    /// [`ReconnectConfig`]).
    ///
    /// # Errors
    ///
    /// As [`producer_endpoint`](Self::producer_endpoint).
    pub async fn consumer_with_config(
        &self,
        name: &str,
        scope: Scope,
        options: ConsumerOptions,
        config: impl Into<ConsumerConfig>,
    ) -> Result<Consumer<BoxConnect>, RestError> {
        let endpoint = self.consumer_endpoint(name, scope, options).await?;
        Ok(Consumer::with_config(
            boxed(move || endpoint.connect()),
            config,
        ))
    }

    /// The topic and the socket server for a stream, created first if the client says so.
    async fn prepare(&self, name: &str, scope: Scope) -> Result<(Topic, String), RestError> {
        let topic = self.topic(name, scope).await?;
        if self.inner.create_missing {
            self.create_stream_if_missing(name, scope).await?;
        }
        Ok((topic, self.socket_server().await?))
    }

    fn finish(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .with_auth(self.otp_auth())
            .with_connect_options(self.inner.connect.clone())
    }

    /// Checks a stream name (and the fabric) as a stream URL will need them, before any
    /// request. The tenant is not known yet and does not matter here.
    fn check_name(&self, name: &str, scope: Scope) -> Result<(), RestError> {
        Topic::gdn("tenant", &self.inner.fabric, name, scope.is_local())?;
        Ok(())
    }

    fn streams_path(&self) -> String {
        format!("/_fabric/{}/_api/streams", encoded(&self.inner.fabric))
    }

    /// Sends `call` and reads the reply as JSON.
    async fn json(&self, call: &Call) -> Result<Value, RestError> {
        let reply = self.inner.transport.execute(call).await?;
        serde_json::from_slice(&reply).map_err(|e| RestError::from_serde(&call.label(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_servers_come_from_tags_url() {
        let https = "https://api-play.paas.macrometa.io";
        assert_eq!(
            socket_server_for(https, "gdn-us-west.paas.macrometa.io").as_deref(),
            Some("wss://api-gdn-us-west.paas.macrometa.io")
        );
        assert_eq!(
            socket_server_for(https, "api-gdn-us-west.paas.macrometa.io/").as_deref(),
            Some("wss://api-gdn-us-west.paas.macrometa.io")
        );
        assert_eq!(
            socket_server_for("http://127.0.0.1:9000", "gdn@127.0.0.1:9001").as_deref(),
            Some("ws://127.0.0.1:9001")
        );
        assert_eq!(
            socket_server_for(https, "https://gdn@127.0.0.1:9001").as_deref(),
            Some("wss://127.0.0.1:9001")
        );
        assert_eq!(socket_server_for(https, " "), None);
        assert_eq!(socket_server_for(https, "gdn@"), None);
    }

    #[test]
    fn base_urls_are_taken_verbatim() {
        assert_eq!(
            parse_base("https://api-play.paas.macrometa.io/").unwrap(),
            "https://api-play.paas.macrometa.io"
        );
        assert_eq!(
            parse_base("HTTP://127.0.0.1:8080/prefix/").unwrap(),
            "http://127.0.0.1:8080/prefix"
        );
        for bad in [
            "play.paas.macrometa.io",
            "ws://h",
            "https://user:pw@h",
            "https://h/?x=1",
            "https://h/#f",
            "",
        ] {
            let e = parse_base(bad).unwrap_err();
            assert!(matches!(e, RestError::Config(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn names_are_encoded_and_scoped() {
        assert_eq!(encoded("c8globals.a b/é"), "c8globals.a%20b%2F%C3%A9");
        assert_eq!(Scope::Global.stream_id("x"), "c8globals.x");
        assert_eq!(Scope::Local.stream_id("x"), "c8locals.x");
        assert_eq!(Scope::default(), Scope::Global);
        let info = StreamInfo {
            topic: "c8locals.orders".into(),
            ..StreamInfo::default()
        };
        assert_eq!(info.name(), "orders");
    }

    #[test]
    fn builder_needs_credentials_and_a_valid_fabric() {
        let e = Client::builder("http://127.0.0.1:1").build().unwrap_err();
        assert!(matches!(e, RestError::Config(_)), "{e:?}");
        let e = Client::builder("http://127.0.0.1:1")
            .api_key("k")
            .fabric("a/b")
            .build()
            .unwrap_err();
        assert!(matches!(e, RestError::Url(_)), "{e:?}");
        let client = Client::builder("http://127.0.0.1:1/")
            .api_key("t.k.SECRET-KEY")
            .build()
            .unwrap();
        let builder = Client::builder("https://user:hunter2@h").api_key("k");
        assert!(!format!("{builder:?}").contains("hunter2"), "{builder:?}");
        let debug = format!("{client:?}");
        assert!(!debug.contains("SECRET-KEY"), "{debug}");
        assert!(
            debug.contains("apikey") && debug.contains("http://127.0.0.1:1"),
            "{debug}"
        );
    }
}
