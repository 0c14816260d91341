//! An auto-reconnecting WebSocket `Stream` + `Sink` that loses nothing, never hammers a server
//! and never hangs, with clients for Macrometa GDN streams and the Apache Pulsar WebSocket API.
//!
//! [`ReconnectingStream`] wraps a *connection factory*, a closure called on every attempt, so each
//! reconnect gets a fresh URL, one-time password or header. It applies exponential backoff (with
//! the original `StreamWebsocket` wrapper's defaults), bounds every connect, pings to find dead
//! connections, queues outgoing items while disconnected, and tells listeners about every open,
//! close, error, reconnect and give-up.
//!
//! ```no_run
//! use futures::{SinkExt, StreamExt};
//! use stream_websocket::prelude::*;
//! use stream_websocket::{connect, Incoming, Outgoing, Publish, ReconnectConfig, ReconnectingStream};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), stream_websocket::Error> {
//! let url = "ws://127.0.0.1:8080/ws/v2/producer/persistent/public/default/orders".to_string();
//! let config = ReconnectConfig::builder()
//!     .min_delay(Duration::from_millis(500))
//!     .max_retries(20)
//!     .build()?;
//! let mut stream = ReconnectingStream::with_config(move || connect(url.clone()), config);
//!
//! let mut errors = stream.on_error();
//! tokio::spawn(async move {
//!     while let Ok(e) = errors.recv().await {
//!         // Each message names its own layer; the cause is its `source()`.
//!         let mut line = e.to_string();
//!         let mut cause = std::error::Error::source(&e);
//!         while let Some(c) = cause {
//!             line = format!("{line}: {c}");
//!             cause = c.source();
//!         }
//!         eprintln!("error: {line}");
//!     }
//! });
//!
//! stream.send(Outgoing::Publish(Publish::new("hello").context("1"))).await?;
//! while let Some(frame) = stream.next().await {
//!     if let Incoming::Ack(ack) = frame? {
//!         println!("stored: {:?}", ack.result);
//!         break;
//!     }
//! }
//! stream.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! Settings are values with chained setters, each starting from its documented defaults:
//! `ServerConfig::default().api_key(…)`, `ProducerConfig::default().reconnect(rc).max_pending(…)`,
//! `ConsumerConfig::default().reconnect(rc).dedup_window(…)`. The one exception is
//! [`ReconnectConfig`], whose settings constrain each other (the minimum delay below the maximum,
//! …): [`ReconnectConfig::builder`] collects them and `build()` checks them, returning a
//! [`ConfigError`] that names the setting. `Producer::with_config` and `Consumer::with_config`
//! take their own config or a plain `ReconnectConfig`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod codec;
pub mod config;
mod connect;
pub mod error;
pub mod event;
pub mod gdn;
mod redact;
mod retry_after;
mod stream;

pub use backoff::{Backoff, Jitter, MinDelay};
pub use codec::{
    AckResult, Codec, ConsumerMessage, Incoming, MessageId, Outgoing, ProducerAck, Publish,
    PulsarCodec, RawCodec,
};
pub use config::{ConfigError, ReconnectConfig, ReconnectConfigBuilder, UnsentPolicy};
pub use connect::{
    connect, connect_with, connect_with_config, ConnectOptions, Connector, WsStream,
};
pub use error::{DecodeError, Disposition, Error};
pub use event::{
    CloseEvent, Event, GaveUpEvent, Listen, Listener, ListenerError, Listeners, OpenEvent,
    ReconnectingEvent,
};
pub use redact::{redact_header, redact_json, redact_url, Secret, SECRET_QUERY_KEYS};
pub use stream::{boxed, BoxConnect, Connect, ReconnectingStream, StreamStats, Transport};
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The traits a user of the crate needs in scope: `use stream_websocket::prelude::*;`.
pub mod prelude {
    pub use crate::event::Listen;
    pub use futures::{SinkExt as _, StreamExt as _};
}

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Re-exported so users can name message types without depending on `tokio-tungstenite`.
pub use tokio_tungstenite::tungstenite;
