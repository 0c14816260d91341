//! Publishes 2,000 messages through a local server that cuts every connection after 100–400
//! frames (sometimes after storing a message but before confirming it), the scenario in which the
//! original JavaScript wrapper lost more than half. Runs offline in a few seconds:
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It exits 0 only if the server stored every message.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stream_websocket::tungstenite::Message;
use stream_websocket::{
    connect, AckResult, Incoming, Outgoing, Publish, ReconnectConfig, ReconnectingStream,
};
use tokio::net::TcpListener;

const MESSAGES: u64 = 2_000;

/// What the server stored, by payload, and how often it saw each.
#[derive(Default)]
struct Stored {
    seen: HashSet<String>,
    duplicates: u64,
    connections: u64,
}

/// A tiny producer endpoint: stores each message and confirms it, and drops the connection
/// abruptly after a pseudo-random 100–400 frames; every third drop happens after storing a
/// message but before confirming it.
async fn server(listener: TcpListener, stored: Arc<Mutex<Stored>>) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    while let Ok((tcp, _)) = listener.accept().await {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let limit = 100 + rng % 301;
        let stored = stored.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let conn = {
                let mut s = stored.lock().unwrap();
                s.connections += 1;
                s.connections
            };
            let mut frames = 0;
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let frame: serde_json::Value = match serde_json::from_str(text.as_str()) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let payload = frame["payload"].as_str().unwrap_or_default().to_string();
                {
                    let mut s = stored.lock().unwrap();
                    if !s.seen.insert(payload) {
                        s.duplicates += 1;
                    }
                }
                frames += 1;
                if frames == limit && conn % 3 == 0 {
                    return; // stored, never confirmed
                }
                let ack = serde_json::json!({
                    "result": "ok",
                    "messageId": format!("{conn}:{frames}"),
                    "context": frame["context"],
                });
                if ws
                    .send(Message::Text(ack.to_string().into()))
                    .await
                    .is_err()
                    || frames == limit
                {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "ws://{}/_ws/ws/v2/producer/persistent/demo/c8global._system/c8globals.orders",
        listener.local_addr()?
    );
    let stored = Arc::new(Mutex::new(Stored::default()));
    tokio::spawn(server(listener, stored.clone()));

    let config = ReconnectConfig::builder()
        .min_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(500))
        .jitter(stream_websocket::Jitter::Equal)
        .build()?;
    let mut stream = ReconnectingStream::with_config(move || connect(url.clone()), config);
    let mut opens = stream.on_open();

    // Every message stays here until the server confirms it, and is re-sent after a reconnect.
    let mut unconfirmed: BTreeMap<u64, Publish> = BTreeMap::new();
    let mut next = 0u64;
    let mut confirmed = 0u64;
    let mut resent = 0u64;
    let mut connection = 0u64;
    let mut tick = tokio::time::interval(Duration::from_micros(500));
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    let mut last_print = tokio::time::Instant::now();
    tokio::pin!(deadline);

    println!("publishing {MESSAGES} messages through a server that drops every 100-400 frames");
    while confirmed < MESSAGES {
        tokio::select! {
            _ = tick.tick(), if next < MESSAGES => {
                let msg = Publish::new(format!("msg-{next}")).context(next.to_string());
                unconfirmed.insert(next, msg.clone());
                stream.send(Outgoing::Publish(msg)).await?;
                next += 1;
            }
            frame = stream.next() => match frame {
                Some(Ok(Incoming::Ack(ack))) => {
                    let id = ack.context.as_deref().and_then(|c| c.parse().ok());
                    if let (AckResult::Ok(_), Some(id)) = (ack.result, id) {
                        if unconfirmed.remove(&id).is_some() {
                            confirmed += 1;
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            _ = &mut deadline => break,
        }
        // A new connection: whatever the old one did not confirm goes out again, in order.
        while let Ok(open) = opens.try_recv() {
            if open.connection > 1 {
                for msg in unconfirmed.values() {
                    stream.feed(Outgoing::Publish(msg.clone())).await?;
                    resent += 1;
                }
                stream.flush().await?;
            }
            connection = open.connection;
        }
        if last_print.elapsed() >= Duration::from_millis(100) || confirmed == MESSAGES {
            last_print = tokio::time::Instant::now();
            print!(
                "\rpublished {next:>5}  confirmed {confirmed:>5}  connections {connection:>3}  re-sent {resent:>5}"
            );
            std::io::stdout().flush()?;
        }
    }
    stream.close().await.ok();

    let s = stored.lock().unwrap();
    let lost = (0..MESSAGES)
        .filter(|i| !s.seen.contains(&base64_of(&format!("msg-{i}"))))
        .count();
    println!("\n");
    println!("| published | confirmed | stored | duplicates | reconnects | lost |");
    println!("|-----------|-----------|--------|------------|------------|------|");
    println!(
        "| {MESSAGES:>9} | {confirmed:>9} | {:>6} | {:>10} | {:>10} | {lost:>4} |",
        s.seen.len(),
        s.duplicates,
        connection.saturating_sub(1)
    );
    if lost > 0 || confirmed < MESSAGES {
        eprintln!("FAILED: {lost} messages lost");
        std::process::exit(1);
    }
    println!(
        "\nnothing lost (duplicates come from confirmations cut off by a drop: at-least-once)"
    );
    Ok(())
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
