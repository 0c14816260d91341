//! Macrometa GDN streams and the Apache Pulsar WebSocket API: stream URLs and authentication,
//! a confirming [`Producer`] and an acknowledging consumer, built on
//! [`ReconnectingStream`](crate::ReconnectingStream).

mod producer;

pub use producer::{
    Producer, ProducerConfig, ProducerError, ProducerStats, Receipt, DEFAULT_MAX_PENDING,
};
