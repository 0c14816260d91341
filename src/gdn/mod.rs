//! Macrometa GDN streams and the Apache Pulsar WebSocket API: stream URLs and authentication,
//! a confirming [`Producer`] and an acknowledging [`Consumer`], built on
//! [`ReconnectingStream`](crate::ReconnectingStream).

mod url;

pub use url::*;
