//! Macrometa GDN streams and the Apache Pulsar WebSocket API: stream URLs and authentication,
//! a confirming [`Producer`] and an acknowledging [`Consumer`], built on
//! [`ReconnectingStream`](crate::ReconnectingStream).

mod consumer;
mod dedup;
mod producer;
mod url;

pub use consumer::{
    Consumer, ConsumerConfig, ConsumerStats, DEFAULT_DEDUP_BYTES, DEFAULT_DEDUP_KEYS,
    DEFAULT_REMEMBERED_IDS, DEFAULT_REMEMBERED_IDS_BYTES,
};
pub use dedup::{ENTRY_OVERHEAD, IDEMPOTENCY_KEY};
pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerStats, Receipt, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING,
};
pub use url::*;

#[cfg(feature = "rest")]
#[cfg_attr(docsrs, doc(cfg(feature = "rest")))]
pub mod client;
#[cfg(feature = "rest")]
#[cfg_attr(docsrs, doc(cfg(feature = "rest")))]
pub use client::{
    ApiError, Client, ClientBuilder, Datacenter, RestError, Scope, StreamInfo,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
