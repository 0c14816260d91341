//! Macrometa GDN streams and the Apache Pulsar WebSocket API: stream URLs and authentication,
//! a confirming [`Producer`] and an acknowledging [`Consumer`], built on
//! [`ReconnectingStream`](crate::ReconnectingStream).

mod consumer;
mod producer;
mod url;

pub use consumer::{Consumer, ConsumerStats, DEFAULT_REMEMBERED_IDS};
pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerStats, Receipt, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_PENDING,
};
pub use url::*;
