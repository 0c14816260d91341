//! Publishes to a GDN stream (or Pulsar topic) with confirmation, surviving reconnects.
//!
//! ```text
//! cargo run --example producer -- --server ws://127.0.0.1:8080 --tenant acme --stream orders --count 100
//! ```
//!
//! With `--count N` it publishes `<prefix>0` … `<prefix>N-1`, waits for every confirmation and
//! prints `{"sent":N,"confirmed":N,"failed":F,"reconnects":R}` on stdout (exit 0 only if all were
//! confirmed). Without it, it publishes one message a second until Ctrl-C.
//!
//! Through GDN's REST API: log in by email (each socket connection then authenticates with a
//! fresh one-time password), discover the tenant, create the stream if missing, and trust a
//! local server's certificate (e.g. `gdn-local --cert-out cert.pem`):
//!
//! ```text
//! C8_PASSWORD=... cargo run --example producer -- --server wss://127.0.0.1:8080 \
//!     --email me@example.com --ca-file cert.pem --create-stream --stream orders --count 100
//! ```
//!
//! | flag | |
//! |---|---|
//! | `--email`, `--password` | log in (env `C8_EMAIL`, `C8_PASSWORD`); sockets use one-time passwords |
//! | `--api-key` | an API key instead (env `C8_API_KEY`); sockets send it as a header |
//! | `--tenant` | optional: without it the tenant is discovered over REST |
//! | `--create-stream` | create the stream over REST if it does not exist |
//! | `--ca-file PEM` | trust these roots too, for REST and wss |
//! | `--rest-url URL` | the REST base; default: `--server` with `http(s)` for `ws(s)` |
//!
//! With `--tenant` and none of `--email`, `--create-stream`, `--ca-file`, no REST call is made.
//! `--namespace` (plain Pulsar) needs `--tenant` and refuses the REST flags. A fatal error is
//! one `fatal: ...` line on stderr (with `HTTP <status>` when a server refused) and exit status
//! 2. No password, key, JWT or one-time password is printed, even with `RUST_LOG=trace`.

mod common;

use std::process::ExitCode;
use std::time::Duration;
use stream_websocket::Listen;

use clap::Parser;
use common::{Failure, Role};
use stream_websocket::gdn::{Producer, ProducerConfig, ProducerError, ProducerOptions};
use stream_websocket::Publish;

/// Publish messages to a stream.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: common::Common,
    /// Publish this many messages, then exit.
    #[arg(long)]
    count: Option<u64>,
    /// Payload prefix.
    #[arg(long, default_value = "msg-")]
    prefix: String,
}

// One thread: the producer's task starts connecting only once `run` first waits, so the event
// printer subscribed right after `Producer::with_config` sees the first open too.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Cli::parse()).await)
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let endpoint = cli
        .common
        .endpoint(Role::Producer(ProducerOptions::default()))
        .await?;
    let config = ProducerConfig::new(cli.common.reconnect_config()?);
    let producer = Producer::with_config(move || endpoint.connect(), config);
    common::print_events(producer.events());

    let mut failed = 0u64;
    let mut fatal = None;
    let mut sent = 0u64;
    let mut receipts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if cli.count.is_some_and(|n| sent >= n) {
            break;
        }
        if cli.count.is_none() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut ctrl_c => break,
            }
        }
        let message = Publish::new(format!("{}{sent}", cli.prefix));
        tokio::select! {
            r = producer.enqueue(message) => match r {
                Ok(receipt) => receipts.push(receipt),
                Err(e) => { fatal = Some(e); break; }
            },
            _ = &mut ctrl_c => break,
        }
        sent += 1;
    }
    for receipt in receipts {
        match receipt.await {
            Ok(_) => {}
            Err(ProducerError::Rejected { .. }) => failed += 1,
            Err(e) => {
                failed += 1;
                fatal.get_or_insert(e);
            }
        }
    }
    let stats = producer.stats();
    let _ = producer.close().await;
    println!(
        r#"{{"sent":{sent},"confirmed":{},"failed":{failed},"reconnects":{}}}"#,
        stats.confirmed, stats.reconnects
    );
    match fatal {
        Some(ProducerError::Stopped(e)) => Err(e.into()),
        _ if stats.confirmed == sent => Ok(ExitCode::SUCCESS),
        _ => Ok(ExitCode::FAILURE),
    }
}
