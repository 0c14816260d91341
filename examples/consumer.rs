//! Subscribes to a GDN stream (or Pulsar topic), prints and acknowledges every message,
//! surviving reconnects.
//!
//! ```text
//! cargo run --example consumer -- --server ws://127.0.0.1:8080 --tenant acme --stream orders \
//!     --subscription audit --type shared --count 100
//! ```
//!
//! Prints each payload on its own line on stdout; with `--count N` it exits 0 after N distinct
//! messages. The summary `{"received":N,"redelivered":D,"reconnects":R}` goes to stderr, also on
//! Ctrl-C (which writes the pending acknowledgements first).

mod common;

use std::collections::HashSet;
use std::process::ExitCode;
use stream_websocket::Listen;

use clap::Parser;
use futures::StreamExt;
use stream_websocket::gdn::{Consumer, ConsumerOptions, Endpoint, SubscriptionType};

/// Receive and acknowledge messages.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: common::Common,
    /// Subscription name.
    #[arg(long)]
    subscription: String,
    /// Subscription type: exclusive, shared, failover or key_shared.
    #[arg(long = "type", default_value = "exclusive")]
    kind: SubscriptionType,
    /// Exit after this many distinct messages.
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<ExitCode, stream_websocket::Error> {
    let options = ConsumerOptions::new(&cli.subscription).subscription_type(cli.kind);
    let endpoint = Endpoint::consumer(&cli.common.server, &cli.common.topic()?, options)?
        .with_auth(cli.common.auth());
    let mut consumer =
        Consumer::with_config(move || endpoint.connect(), cli.common.reconnect_config()?);
    common::print_events(consumer.events());

    let mut distinct = HashSet::new();
    let mut failure = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while cli.count.is_none_or(|n| distinct.len() < n) {
        let next = tokio::select! {
            next = consumer.next() => next,
            _ = &mut ctrl_c => break,
        };
        match next {
            Some(Ok(message)) => {
                println!("{}", String::from_utf8_lossy(&message.payload));
                distinct.insert(message.message_id.clone());
                if let Err(e) = consumer.ack(&message).await {
                    failure = Some(e);
                    break;
                }
            }
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            None => break,
        }
    }
    let _ = consumer.close().await;
    let stats = consumer.stats();
    eprintln!(
        r#"{{"received":{},"redelivered":{},"reconnects":{}}}"#,
        distinct.len(),
        stats.redelivered,
        stats.reconnects
    );
    match failure {
        Some(e) => Err(e),
        None if cli.count.is_none_or(|n| distinct.len() >= n) => Ok(ExitCode::SUCCESS),
        None => Ok(ExitCode::FAILURE),
    }
}
