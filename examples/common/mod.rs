//! Command-line pieces shared by the `producer` and `consumer` examples (and, for its logging,
//! `gdn-local`).
//!
//! Two ways to reach a stream:
//!
//! * **Direct** (`--tenant` given, none of `--email`, `--create-stream`, `--ca-file`): the
//!   socket goes straight to `--server`, with `Authorization: apikey <--api-key>` if a key is
//!   given. No REST call. This is also the only way for plain Pulsar (`--namespace`).
//! * **Through GDN's REST API** (`gdn::Client`) otherwise: it logs in (`--email`/`--password`,
//!   or `--api-key`), discovers the tenant when `--tenant` is absent, creates the stream with
//!   `--create-stream` and trusts `--ca-file`. The REST base is `--server` with `http(s)` for
//!   `ws(s)` (GDN serves both on the `api-` host) unless `--rest-url` says otherwise; the
//!   sockets still go to `--server`. An email login authenticates every socket connection with
//!   a fresh one-time password (`POST /apid/otp`), so a reconnect never reuses a spent one; an
//!   API key stays in the `Authorization` header.
//!
//! No password, API key, JWT or one-time password is printed, at any `RUST_LOG` level.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use stream_websocket::gdn::{
    Auth, Client, ClientBuilder, ConsumerOptions, Endpoint, ProducerOptions, RestError, Scope,
    Topic, UrlError, DEFAULT_FABRIC,
};
use stream_websocket::{Error, Event, Listener, ReconnectConfig, Secret};

/// Where to connect and how to reconnect.
#[derive(Debug, Args)]
pub struct Common {
    /// Server: ws://host[:port] or wss://host[:port] (GDN: the api-<region> host).
    #[arg(long)]
    pub server: String,
    /// GDN REST base URL (default: --server with http:// for ws://, https:// for wss://).
    #[arg(long, value_name = "URL")]
    pub rest_url: Option<String>,
    /// Tenant (default: discovered over REST from the login or API key; required with
    /// --namespace).
    #[arg(long)]
    pub tenant: Option<String>,
    /// GDN fabric.
    #[arg(long, default_value = DEFAULT_FABRIC)]
    pub fabric: String,
    /// Stream (GDN) or topic (with --namespace) name.
    #[arg(long)]
    pub stream: String,
    /// A local stream (c8local) instead of a global one.
    #[arg(long)]
    pub local: bool,
    /// Plain Apache Pulsar: use this namespace and Pulsar's /ws/v2 paths instead of GDN naming.
    /// No REST: needs --tenant, refuses --email, --create-stream, --ca-file and --rest-url.
    #[arg(long)]
    pub namespace: Option<String>,
    /// API key, sent as `Authorization: apikey <key>` (REST calls and sockets).
    #[arg(long, env = "C8_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// Log in with this email (and --password) over REST; every socket connection then
    /// authenticates with a fresh one-time password.
    #[arg(
        long,
        env = "C8_EMAIL",
        hide_env_values = true,
        conflicts_with = "api_key",
        requires = "password"
    )]
    pub email: Option<String>,
    /// Password for --email.
    #[arg(long, env = "C8_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// Create the stream over REST if it does not exist yet, before connecting.
    #[arg(long)]
    pub create_stream: bool,
    /// Trust the certificates in this PEM file as roots too, for REST and wss (a local TLS
    /// server such as gdn-local --cert-out).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Minimum reconnect delay in milliseconds (default: drawn from 1000-2000).
    #[arg(long)]
    pub min_delay_ms: Option<u64>,
    /// Window of the first reconnect after a drop in milliseconds; 0 reconnects at once
    /// (default: 580, at most the minimum delay).
    #[arg(long)]
    pub first_reconnect_window_ms: Option<u64>,
    /// Maximum reconnect delay in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub max_delay_ms: u64,
    /// Give up after this many consecutive failed attempts (default: never).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Keepalive ping interval in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub ping_interval_ms: u64,
    /// Pong timeout in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub pong_timeout_ms: u64,
    /// Connect timeout in milliseconds (sockets and REST connections).
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
}

const NO_REST_URL: &str =
    "--server is not ws:// or wss://, so the REST URL cannot be derived from it: give --rest-url";

/// What a program connects as, with its options.
pub enum Role {
    Producer(ProducerOptions),
    Consumer(ConsumerOptions),
}

impl Common {
    /// The endpoint to connect to: directly, or prepared through GDN's REST API (see the
    /// module documentation for which).
    pub async fn endpoint(&self, role: Role) -> Result<Endpoint, Failure> {
        self.check_pulsar()?;
        let Some(reason) = self.rest_reason() else {
            let topic = self.topic()?;
            let endpoint = match role {
                Role::Producer(o) => Endpoint::producer(&self.server, &topic, o)?,
                Role::Consumer(o) => Endpoint::consumer(&self.server, &topic, o)?,
            };
            return Ok(endpoint.with_auth(self.auth()));
        };
        let client = self.client(reason)?;
        let scope = if self.local {
            Scope::Local
        } else {
            Scope::Global
        };
        let endpoint = match role {
            Role::Producer(o) => client.producer_endpoint(&self.stream, scope, o).await?,
            Role::Consumer(o) => client.consumer_endpoint(&self.stream, scope, o).await?,
        };
        // The client's endpoints use one-time passwords; an API key works on sockets as is.
        Ok(match &self.api_key {
            Some(key) => endpoint.with_auth(Auth::api_key(key.clone())),
            None => endpoint,
        })
    }

    /// Why the REST API is needed, naming the flag; `None` for a direct connection.
    fn rest_reason(&self) -> Option<&'static str> {
        if self.email.is_some() {
            Some("--email")
        } else if self.create_stream {
            Some("--create-stream")
        } else if self.ca_file.is_some() {
            Some("--ca-file")
        } else if self.tenant.is_none() {
            Some("discovering the tenant (no --tenant)")
        } else {
            None
        }
    }

    /// Plain Pulsar has no GDN REST API: refuses the flags that need it.
    fn check_pulsar(&self) -> Result<(), Failure> {
        if self.namespace.is_none() {
            return Ok(());
        }
        let rest_only = [
            ("--email (C8_EMAIL)", self.email.is_some()),
            ("--create-stream", self.create_stream),
            ("--ca-file", self.ca_file.is_some()),
            ("--rest-url", self.rest_url.is_some()),
        ];
        if let Some((flag, _)) = rest_only.iter().find(|(_, given)| *given) {
            return Err(Failure::Usage(format!(
                "{flag} needs GDN's REST API, which plain Pulsar (--namespace) does not have"
            )));
        }
        if self.tenant.is_none() {
            return Err(Failure::Usage(
                "--namespace needs --tenant (plain Pulsar has no REST API to discover it)".into(),
            ));
        }
        Ok(())
    }

    /// A GDN REST client for these flags; `reason` names what needs it.
    fn client(&self, reason: &str) -> Result<Client, Failure> {
        let builder = Client::builder(self.rest_url()?)
            .fabric(&self.fabric)
            .socket_server(&self.server)
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .create_missing_streams(self.create_stream);
        let mut builder = match (&self.email, &self.password, &self.api_key) {
            (Some(email), Some(password), _) => builder.login(email, password.clone()),
            (None, _, Some(key)) => builder.api_key(key.clone()),
            _ => {
                return Err(Failure::Usage(format!(
                    "{reason} goes through GDN's REST API, which needs --api-key, or --email \
                     and --password"
                )))
            }
        };
        if let Some(tenant) = &self.tenant {
            builder = builder.tenant(tenant);
        }
        if let Some(path) = &self.ca_file {
            builder = trust(builder, path)?;
        }
        Ok(builder.build()?)
    }

    /// `--rest-url`, or `--server` with `http(s)` for `ws(s)`.
    pub fn rest_url(&self) -> Result<String, Failure> {
        if let Some(url) = &self.rest_url {
            return Ok(url.clone());
        }
        let (scheme, rest) = self.server.split_once("://").unwrap_or_default();
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => "http",
            "wss" => "https",
            _ => return Err(Failure::Usage(NO_REST_URL.into())),
        };
        Ok(format!("{scheme}://{rest}"))
    }

    /// The topic of a direct connection (the tenant is given: see `check_pulsar` and
    /// `rest_reason`).
    pub fn topic(&self) -> Result<Topic, UrlError> {
        let tenant = self.tenant.as_deref().unwrap_or_default();
        match &self.namespace {
            Some(ns) => Topic::pulsar(tenant, ns, &self.stream),
            None => Topic::gdn(tenant, &self.fabric, &self.stream, self.local),
        }
    }

    pub fn auth(&self) -> Auth {
        match &self.api_key {
            Some(key) => Auth::api_key(key.clone()),
            None => Auth::None,
        }
    }

    pub fn reconnect_config(&self) -> Result<ReconnectConfig, Error> {
        let ms = Duration::from_millis;
        let mut b = ReconnectConfig::builder()
            .max_delay(ms(self.max_delay_ms))
            .ping_interval(ms(self.ping_interval_ms))
            .pong_timeout(ms(self.pong_timeout_ms))
            .connect_timeout(ms(self.connect_timeout_ms));
        if let Some(min) = self.min_delay_ms {
            b = b.min_delay(ms(min));
        }
        if let Some(window) = self.first_reconnect_window_ms {
            b = b.first_reconnect_window(ms(window));
        }
        if let Some(n) = self.max_retries {
            b = b.max_retries(n);
        }
        Ok(b.build()?)
    }
}

/// Trusts the PEM file at `path` for REST and sockets.
#[cfg(feature = "rustls")]
fn trust(builder: ClientBuilder, path: &std::path::Path) -> Result<ClientBuilder, Failure> {
    Ok(builder.ca_file(path))
}

#[cfg(not(feature = "rustls"))]
fn trust(_: ClientBuilder, _: &std::path::Path) -> Result<ClientBuilder, Failure> {
    Err(Failure::Usage("--ca-file needs the rustls feature".into()))
}

/// Sends the crate's tracing output to stderr, filtered by `RUST_LOG` (e.g.
/// `RUST_LOG=stream_websocket=debug`); nothing is logged when it is unset. The crate never logs
/// a key, password, JWT or one-time password, at any level.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

/// Prints every lifecycle event on stderr, one `event: ...` line each. The task ends once the
/// client is dropped and every event was printed: await it before printing a last line that must
/// come after them.
pub fn print_events(mut events: Listener<Event>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => eprintln!("event: {}", describe(&event)),
                Err(stream_websocket::ListenerError::Lagged(n)) => {
                    eprintln!("event: lagged missed={n}")
                }
                Err(_) => return,
            }
        }
    })
}

fn describe(event: &Event) -> String {
    match event {
        Event::Open(o) => format!("open connection={} attempt={}", o.connection, o.attempt),
        Event::Close(c) => format!(
            "close connection={} code={} reason={:?} progress={} reconnect={}",
            c.connection,
            c.code.map_or("none".to_string(), |c| c.to_string()),
            c.reason,
            c.progress,
            c.reconnect
        ),
        Event::Error(e) => format!("error {}", chain(e)),
        Event::Reconnecting(r) => format!(
            "reconnecting attempt={} delay_ms={}",
            r.attempt,
            r.delay.as_millis()
        ),
        Event::GaveUp(g) => format!(
            "gave-up attempts={} last={}",
            g.attempts,
            chain(&g.last_error)
        ),
        other => format!("{other:?}"),
    }
}

/// Exit status for a permanent failure or giving up.
pub const EXIT_FATAL: u8 = 2;

/// Why a run failed.
#[derive(Debug)]
pub enum Failure {
    /// The stream failed, or its settings were refused.
    Stream(Error),
    /// A GDN REST call (login, tenant, stream creation) failed.
    Rest(RestError),
    /// Flags that do not go together.
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Stream(e)
    }
}

impl From<RestError> for Failure {
    fn from(e: RestError) -> Self {
        Failure::Rest(e)
    }
}

impl From<UrlError> for Failure {
    fn from(e: UrlError) -> Self {
        Failure::Stream(e.into())
    }
}

/// The exit status of a run; a fatal error is printed as one line on stderr and exits with
/// [`EXIT_FATAL`].
pub fn exit_code(result: Result<std::process::ExitCode, Failure>) -> std::process::ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("{}", fatal(&e));
        std::process::ExitCode::from(EXIT_FATAL)
    })
}

/// One line naming the cause of a fatal error, with the HTTP status if there was one (of the
/// socket's handshake or of a REST call).
pub fn fatal(failure: &Failure) -> String {
    let (status, text) = match failure {
        Failure::Stream(e) => (e.http_status(), chain(e)),
        Failure::Rest(e) => (e.status(), chain(e)),
        Failure::Usage(message) => (None, message.clone()),
    };
    match status {
        Some(status) => format!("fatal: HTTP {status}: {text}"),
        None => format!("fatal: {text}"),
    }
}

/// An error and every cause below it, joined by ": ". Each error's message names only its own
/// layer (the cause is its `source()`), so printing just `{error}` would drop the cause.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
