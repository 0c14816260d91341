//! Command-line pieces shared by the `producer` and `consumer` examples.
#![allow(dead_code)]

use std::time::Duration;

use clap::Args;
use stream_websocket::gdn::{Auth, Topic, UrlError, DEFAULT_FABRIC};
use stream_websocket::{Error, Event, Listener, ReconnectConfig};

/// Where to connect and how to reconnect.
#[derive(Debug, Args)]
pub struct Common {
    /// Server: ws://host[:port] or wss://host[:port] (GDN: the api-<region> host).
    #[arg(long)]
    pub server: String,
    /// Tenant.
    #[arg(long)]
    pub tenant: String,
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
    #[arg(long)]
    pub namespace: Option<String>,
    /// API key, sent as `Authorization: apikey <key>`.
    #[arg(long, env = "C8_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Minimum reconnect delay in milliseconds (default: drawn from 1000-5000).
    #[arg(long)]
    pub min_delay_ms: Option<u64>,
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
    /// Connect timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
}

impl Common {
    pub fn topic(&self) -> Result<Topic, UrlError> {
        match &self.namespace {
            Some(ns) => Topic::pulsar(&self.tenant, ns, &self.stream),
            None => Topic::gdn(&self.tenant, &self.fabric, &self.stream, self.local),
        }
    }

    pub fn auth(&self) -> Auth {
        match &self.api_key {
            Some(key) => Auth::api_key(key.as_str()),
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
        if let Some(n) = self.max_retries {
            b = b.max_retries(n);
        }
        Ok(b.build()?)
    }
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
            "close connection={} code={} reason={:?} reconnect={}",
            c.connection,
            c.code.map_or("none".to_string(), |c| c.to_string()),
            c.reason,
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

/// The exit status of a run; a fatal error is printed as one line on stderr and exits with
/// [`EXIT_FATAL`].
pub fn exit_code(result: Result<std::process::ExitCode, Error>) -> std::process::ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("{}", fatal(&e));
        std::process::ExitCode::from(EXIT_FATAL)
    })
}

/// One line naming the cause of a fatal error, with the HTTP status if there was one.
pub fn fatal(error: &Error) -> String {
    match error.http_status() {
        Some(status) => format!("fatal: HTTP {status}: {}", chain(error)),
        None => format!("fatal: {}", chain(error)),
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
