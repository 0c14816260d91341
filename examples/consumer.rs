//! Subscribes to a GDN stream (or Pulsar topic), prints and acknowledges every message,
//! surviving reconnects.
//!
//! ```text
//! cargo run --example consumer -- --server ws://127.0.0.1:8080 --tenant acme --stream orders \
//!     --subscription audit --type shared --count 100
//! ```
//!
//! Prints each payload on its own line on stdout, each message once; with `--count N` it exits 0
//! after N distinct messages. The summary
//! `{"received":N,"redelivered":R,"duplicates":D,"reconnects":C}` goes to stderr, also on Ctrl-C
//! (which writes the pending acknowledgements first).
//!
//! A message is one logical message however many copies the server stored: the consumer drops a
//! copy whose idempotency key it already handed over, and this program keeps its own set of the
//! keys (or, for messages without one, the message ids) it printed, so that it never counts a
//! message twice even with `--no-dedup`. `duplicates` counts the copies dropped by either.
//!
//! Through GDN's REST API, as the producer (see its documentation for every flag): log in by
//! email (each connection, reconnects included, then authenticates with a fresh one-time
//! password), discover the tenant (no `--tenant`), create the stream if missing and trust a
//! local server's certificate:
//!
//! ```text
//! C8_EMAIL=me@example.com C8_PASSWORD=... cargo run --example consumer -- \
//!     --server wss://127.0.0.1:8080 --ca-file cert.pem --create-stream --stream orders \
//!     --subscription audit --initial-position earliest --count 100
//! ```
//!
//! `--email`/`--password` (env `C8_EMAIL`/`C8_PASSWORD`), `--create-stream`, `--ca-file PEM`
//! and a missing `--tenant` use REST at `--rest-url` (default: `--server` with `http(s)` for
//! `ws(s)`); otherwise nothing changes: a direct socket with the `--api-key` header.

mod common;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;
use stream_websocket::Listen;

use clap::{Parser, ValueEnum};
use common::{Failure, Role};
use futures::StreamExt;
use stream_websocket::gdn::{
    Consumer, ConsumerConfig, ConsumerOptions, InitialPosition, SubscriptionType, IDEMPOTENCY_KEY,
};
use stream_websocket::{ConsumerMessage, MessageId};

/// Receive and acknowledge messages, each once.
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
    /// Where a new subscription starts: latest (only messages published from now on) or
    /// earliest (every message still stored). Default: the server's, latest.
    #[arg(long, value_enum)]
    initial_position: Option<Position>,
    /// Exit after this many distinct messages (the copies of one message, by idempotency key,
    /// count once).
    #[arg(long)]
    count: Option<usize>,
    /// Turn off the consumer's de-duplication by idempotency key (it then hands over every copy
    /// the server stored). This program still prints and counts each key once and reports the
    /// repeats in "duplicates".
    #[arg(long)]
    no_dedup: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Position {
    Latest,
    Earliest,
}

impl From<Position> for InitialPosition {
    fn from(p: Position) -> Self {
        match p {
            Position::Latest => InitialPosition::Latest,
            Position::Earliest => InitialPosition::Earliest,
        }
    }
}

/// What makes two copies the same logical message: the idempotency key when there is one, the
/// message id otherwise.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Identity {
    Key(String),
    Id(MessageId),
}

impl Identity {
    fn of(message: &ConsumerMessage) -> Self {
        match message.properties.get(IDEMPOTENCY_KEY) {
            Some(key) => Identity::Key(key.clone()),
            None => Identity::Id(message.message_id.clone()),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let mut options = ConsumerOptions::new(&cli.subscription).subscription_type(cli.kind);
    if let Some(position) = cli.initial_position {
        options = options.initial_position(position.into());
    }
    let endpoint = cli.common.endpoint(Role::Consumer(options)).await?;
    let config = ConsumerConfig::new(cli.common.reconnect_config()?).dedup(!cli.no_dedup);
    let mut consumer = Consumer::with_config(move || endpoint.connect(), config);
    let printer = common::print_events(consumer.events());

    let mut distinct = HashSet::new();
    // Copies handed over whose message this program had already printed.
    let mut repeats = 0u64;
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
                if distinct.insert(Identity::of(&message)) {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                } else {
                    repeats += 1;
                }
                // A repeat is acknowledged too, or the server would deliver it again.
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
    // The summary is the last line on stderr: dropping the consumer ends the event printer once
    // it printed the events so far (the close among them).
    drop(consumer);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    eprintln!(
        r#"{{"received":{},"redelivered":{},"duplicates":{},"reconnects":{}}}"#,
        distinct.len(),
        stats.redelivered,
        stats.duplicates_dropped + repeats,
        stats.reconnects
    );
    match failure {
        Some(e) => Err(e.into()),
        None if cli.count.is_none_or(|n| distinct.len() >= n) => Ok(ExitCode::SUCCESS),
        None => Ok(ExitCode::FAILURE),
    }
}
