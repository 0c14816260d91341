//! The crate's main job, offline: the whole GDN flow against the embedded local server, over
//! TLS. Log in with an email and password (a JWT), find the tenant, create the stream, then run
//! a producer and a consumer whose every connection authenticates with a fresh one-time
//! password, while the server misbehaves every couple of seconds for about 15 s (connections
//! dropped, dropped between storing and confirming, handshakes refused, a stall that only
//! keepalive can detect, a pause in listening). Ends with a summary and exits 0 only if nothing
//! was lost and nothing was delivered twice.
//!
//! The drops between storing and confirming make the server store some messages twice (the
//! producer sends again what it saw no confirmation for); the summary counts those copies from
//! what the server stored, and the copies the consumer handed to the application (by payload),
//! which the idempotency keys keep at 0.
//!
//! ```text
//! cargo run --example demo
//! ```

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stream_websocket::Listen;

use futures::StreamExt;
use stream_websocket::gdn::{
    Client, ConsumerOptions, Producer, ProducerConfig, ProducerOptions, Scope, SubscriptionType,
};
use stream_websocket::{Publish, ReconnectConfig};
use stream_websocket_testkit::{LocalServer, ServerConfig};
use tokio::time::{sleep, Instant};

const RUN_FOR: Duration = Duration::from_secs(15);
const PUBLISH_EVERY: Duration = Duration::from_millis(4);
const EMAIL: &str = "demo@example.com";
const PASSWORD: &str = "demo-password";
const STREAM: &str = "orders";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A GDN stand-in that knows one user and, like GDN, wants streams created before use.
    let server = LocalServer::start_with(
        ServerConfig::default()
            .user(EMAIL, PASSWORD)
            .auto_create_streams(false),
    )
    .await?;
    let certificate = server.certificate_pem().ok_or("the server has no TLS")?;
    println!(
        "local GDN on {} (REST and streams, TLS)",
        server.https_url()
    );

    // The REST half: log in, find the tenant, create the stream.
    let client = Client::builder(server.https_url())
        .login(EMAIL, PASSWORD)
        .add_root_certificate_pem(certificate.as_bytes())
        .build()?;
    let tenant = client.tenant().await?;
    let created = client
        .create_stream_if_missing(STREAM, Scope::Local)
        .await?;
    let topic = client.topic(STREAM, Scope::Local).await?;
    println!(
        "logged in as {EMAIL} (tenant {tenant}); stream {} {}",
        topic.full_name(),
        if created { "created" } else { "exists" }
    );
    println!("every connection below authenticates with a fresh one-time password");

    // Short timers so the demo shows several recoveries in 15 s; defaults are seconds.
    let reconnect = ReconnectConfig::builder()
        .min_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(800))
        .ping_interval(Duration::from_millis(300))
        .pong_timeout(Duration::from_millis(600))
        .connect_timeout(Duration::from_secs(2))
        .build()?;

    // Subscribe first: a new subscription starts at the latest message.
    let options = ConsumerOptions::new("demo-audit").subscription_type(SubscriptionType::Exclusive);
    let mut consumer = client
        .consumer_with_config(STREAM, Scope::Local, options, reconnect.clone())
        .await?;
    let mut consumer_opened = consumer.on_open();
    let received = Arc::new(AtomicU64::new(0));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer_task = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut payloads = HashSet::new();
            let mut deliveries = 0u64;
            loop {
                let message = tokio::select! {
                    next = consumer.next() => match next {
                        Some(Ok(message)) => message,
                        _ => break,
                    },
                    _ = &mut stopped => break,
                };
                deliveries += 1;
                if payloads.insert(message.payload.clone()) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                if consumer.ack(&message).await.is_err() {
                    break;
                }
            }
            // Writes the last acknowledgements, then closes.
            let _ = consumer.close().await;
            (payloads, deliveries, consumer.stats())
        })
    };
    // Drive the consumer until it is subscribed.
    consumer_opened.recv().await?;

    let producer = client
        .producer_with_config(
            STREAM,
            Scope::Local,
            ProducerOptions::default(),
            ProducerConfig::new(reconnect),
        )
        .await?;

    let start = Instant::now();
    let mut faults_done = 0;
    let mut published = 0u64;
    let mut receipts = Vec::new();
    let mut last_print = Instant::now();
    while start.elapsed() < RUN_FOR {
        let payload = format!("order-{published}");
        receipts.push(producer.enqueue(Publish::new(payload)).await?);
        published += 1;
        // One fault every two seconds, then a quiet end.
        if faults_done < FAULTS && start.elapsed() >= Duration::from_secs(2 * (faults_done + 1)) {
            inject_fault(&server, faults_done);
            faults_done += 1;
        }
        if last_print.elapsed() >= Duration::from_millis(200) {
            last_print = Instant::now();
            progress(&producer, published, &received);
        }
        sleep(PUBLISH_EVERY).await;
    }
    println!();
    println!("publishing stopped; waiting for the last confirmations and deliveries");
    let mut confirmed = 0u64;
    for receipt in receipts {
        if receipt.await.is_ok() {
            confirmed += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        progress(&producer, published, &received);
        sleep(Duration::from_millis(100)).await;
    }
    progress(&producer, published, &received);
    println!();
    let producer_reconnects = producer.stats().reconnects;
    producer.close().await?;
    let _ = stop.send(());
    let (payloads, deliveries, consumer_stats) = consumer_task.await?;
    let stored = server.stored(&topic.full_name());
    let server_stats = server.stats();
    server.shutdown().await;

    let lost = (0..published)
        .filter(|i| !payloads.contains(format!("order-{i}").as_bytes()))
        .count();
    // Copies beyond the first: every payload is unique, so these are the producer's re-sends.
    let extra_stored = stored.len() - stored.iter().collect::<HashSet<_>>().len();
    let extra_delivered = deliveries - payloads.len() as u64;
    println!();
    println!(
        "| published | confirmed | received | duplicates stored by the server \
         | duplicates delivered to the application | reconnects | lost |"
    );
    println!(
        "|----------:|----------:|---------:|--------------------------------:\
         |----------------------------------------:|-----------:|-----:|"
    );
    println!(
        "| {published:>9} | {confirmed:>9} | {:>8} | {extra_stored:>31} \
         | {extra_delivered:>39} | {:>10} | {lost:>4} |",
        payloads.len(),
        producer_reconnects + consumer_stats.reconnects,
    );
    if lost > 0 || confirmed < published || extra_delivered > 0 {
        eprintln!(
            "FAILED: {lost} lost, {} unconfirmed, {extra_delivered} delivered twice",
            published - confirmed
        );
        std::process::exit(1);
    }
    println!("\nnothing lost, nothing delivered twice.");
    println!(
        "{} connections were opened, each with its own one-time password ({} REST calls in all: \
         login, tenant, stream, data center and the passwords).",
        server_stats.connections_accepted, server_stats.rest_requests
    );
    println!(
        "The server stored {extra_stored} extra copies: messages stored just before a drop and \
         sent again\nbecause their confirmation never arrived. The consumer recognised {} by \
         their idempotency key,\nacknowledged them and did not hand them over.",
        consumer_stats.duplicates_dropped
    );
    Ok(())
}

fn progress(producer: &Producer, published: u64, received: &AtomicU64) {
    let s = producer.stats();
    print!(
        "\rpublished {published:>5}  confirmed {:>5}  received {:>5}  reconnects {:>3}",
        s.confirmed,
        received.load(Ordering::Relaxed),
        s.reconnects,
    );
    let _ = std::io::stdout().flush();
}

const FAULTS: u64 = 6;

fn inject_fault(server: &LocalServer, n: u64) {
    let what = match n {
        0 => {
            server.drop_all();
            "dropped every connection"
        }
        1 => {
            server.drop_after_frames(Some(150));
            "dropping each connection after 150 frames (some stored, not confirmed)"
        }
        2 => {
            server.drop_after_frames(None);
            server.refuse_next(3, 503);
            server.drop_all();
            "dropped every connection and refusing the next 3 handshakes with 503"
        }
        3 => {
            server.stall(true);
            "stalled every connection (half-open: no pongs)"
        }
        4 => {
            server.stall(false);
            server.pause_listening(Duration::from_secs(1));
            server.drop_all();
            "dropped every connection and stopped listening for 1 s"
        }
        _ => {
            server.drop_all();
            "dropped every connection"
        }
    };
    println!("\n>> fault: {what}");
}
