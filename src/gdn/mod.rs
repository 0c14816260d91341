//! Macrometa GDN streams and the Apache Pulsar WebSocket API: stream URLs and authentication,
//! a confirming [`Producer`] and an acknowledging [`Consumer`], built on
//! [`ReconnectingStream`](crate::ReconnectingStream).
//!
//! A [`Topic`] names a stream, an [`Endpoint`] combines a server, a topic, the options of one role
//! (producer, consumer or reader) and an [`Auth`] method. [`Endpoint::connect`] makes one
//! connection attempt and is meant to be used as the connection factory of a
//! [`ReconnectingStream`](crate::ReconnectingStream).

mod auth;
mod consumer;
mod dedup;
mod encode;
mod endpoint;
mod error;
mod options;
mod producer;
mod topic;

pub use auth::{Auth, OtpSource};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerStats, DEFAULT_DEDUP_BYTES, DEFAULT_DEDUP_KEYS,
    DEFAULT_REMEMBERED_IDS, DEFAULT_REMEMBERED_IDS_BYTES,
};
pub use dedup::{ENTRY_OVERHEAD, IDEMPOTENCY_KEY};
pub use endpoint::{Endpoint, EndpointRole};
pub use error::UrlError;
pub use options::{
    ConsumerOptions, InitialPosition, ProducerOptions, ReaderOptions, ReaderStart, SubscriptionType,
};
pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerStats, Receipt, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING,
};
pub use topic::{Topic, DEFAULT_FABRIC, MAX_STREAM_NAME_CHARS};

#[cfg(feature = "rest")]
#[cfg_attr(docsrs, doc(cfg(feature = "rest")))]
pub mod client;
#[cfg(feature = "rest")]
#[cfg_attr(docsrs, doc(cfg(feature = "rest")))]
pub use client::{
    ApiError, Client, ClientBuilder, Datacenter, RestError, Scope, StreamInfo,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
