//! `gdn::Client` against the embedded server's own REST endpoints (no mock): the whole GDN flow
//! over TLS with a one-time password per connection, stream management, retries of injected
//! 429/503, and a JWT that the server keeps refusing. Real sockets on 127.0.0.1, bounded.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use stream_websocket::gdn::{
    Client, ConsumerOptions, InitialPosition, ProducerOptions, RestError, Scope,
};
use stream_websocket::{Publish, ReconnectConfig};
use stream_websocket_testkit::{LocalServer, ServerConfig};

const EMAIL: &str = "flow@acme.example";
const PASSWORD: &str = "flow-PASSWORD-secret";
const TENANT: &str = "flow_acme.example";

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test took too long")
}

/// Short timers for REST retries and for the sockets.
fn fast() -> ReconnectConfig {
    ReconnectConfig::builder()
        .min_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(50))
        .max_retries(2)
        .build()
        .unwrap()
}

fn login_client(server: &LocalServer) -> Client {
    Client::builder(server.https_url())
        .login(EMAIL, PASSWORD)
        .add_root_certificate_pem(server.certificate_pem().unwrap().as_bytes())
        .retry(fast())
        .build()
        .unwrap()
}

async fn gdn(config: ServerConfig) -> LocalServer {
    LocalServer::start_with(config.user(EMAIL, PASSWORD).auto_create_streams(false))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_whole_flow_over_tls_with_an_otp_per_connection() {
    let server = gdn(ServerConfig::default()).await;
    let client = login_client(&server);
    bounded(async {
        assert_eq!(client.tenant().await.unwrap(), TENANT);
        assert!(client
            .create_stream_if_missing("orders", Scope::Global)
            .await
            .unwrap());
        assert!(!client
            .create_stream_if_missing("orders", Scope::Global)
            .await
            .unwrap());

        let options = ConsumerOptions::new("audit").initial_position(InitialPosition::Earliest);
        let mut consumer = client
            .consumer_with_config("orders", Scope::Global, options, fast())
            .await
            .unwrap();
        let producer = client
            .producer_with_config("orders", Scope::Global, ProducerOptions::default(), fast())
            .await
            .unwrap();
        producer.send(Publish::new("before")).await.unwrap();
        let first = consumer.next().await.unwrap().unwrap();
        assert_eq!(&first.payload[..], b"before");
        consumer.ack(&first).await.unwrap();

        // Every connection dies; the server accepts each one-time password once, so the
        // reconnects succeed only with fresh ones.
        let accepted = server.stats().connections_accepted;
        server.drop_all();
        producer.send(Publish::new("after")).await.unwrap();
        let second = consumer.next().await.unwrap().unwrap();
        assert_eq!(&second.payload[..], b"after");
        consumer.ack(&second).await.unwrap();
        assert!(server.stats().connections_accepted >= accepted + 2);
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
    })
    .await;
    let stored = server.stored(&format!(
        "persistent://{TENANT}/c8global._system/c8globals.orders"
    ));
    assert_eq!(stored, vec!["before", "after"]);
    server.shutdown().await;
}

#[tokio::test]
async fn streams_are_listed_published_to_and_deleted() {
    let server = gdn(ServerConfig::default()).await;
    let client = login_client(&server);
    bounded(async {
        assert!(!client.stream_exists("audit", Scope::Local).await.unwrap());
        assert_eq!(
            client.create_stream("audit", Scope::Local).await.unwrap(),
            "c8locals.audit"
        );
        let err = client
            .create_stream("audit", Scope::Local)
            .await
            .unwrap_err();
        assert!(matches!(err, RestError::Conflict(_)), "{err:?}");
        assert_eq!(err.error_num(), Some(581));
        let listed = client.list_streams(Scope::Local).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].topic.as_str(), listed[0].local),
            ("c8locals.audit", true)
        );
        assert!(client.list_streams(Scope::Global).await.unwrap().is_empty());

        let options = ConsumerOptions::new("s").initial_position(InitialPosition::Earliest);
        let mut consumer = client
            .consumer_with_config("audit", Scope::Local, options, fast())
            .await
            .unwrap();
        client
            .publish("audit", Scope::Local, "over REST")
            .await
            .unwrap();
        let message = consumer.next().await.unwrap().unwrap();
        assert_eq!(&message.payload[..], b"over REST");
        consumer.ack(&message).await.unwrap();
        consumer.close().await.unwrap();

        client.delete_stream("audit", Scope::Local).await.unwrap();
        assert!(!client.stream_exists("audit", Scope::Local).await.unwrap());
        let err = client
            .delete_stream("audit", Scope::Local)
            .await
            .unwrap_err();
        assert!(matches!(err, RestError::NotFound(_)), "{err:?}");
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn injected_429_and_503_are_retried_then_typed() {
    let server = gdn(ServerConfig::default()).await;
    let client = login_client(&server);
    bounded(async {
        client.tenant().await.unwrap();
        let before = server.stats().rest_requests;
        server.fail_rest_next(2, 503);
        assert!(client.list_streams(Scope::Global).await.unwrap().is_empty());
        assert_eq!(
            server.stats().rest_requests - before,
            3,
            "two failures, one success"
        );

        // More failures than retries: the typed error, with GDN's fields, after 3 requests.
        let before = server.stats().rest_requests;
        server.fail_rest_next(10, 429);
        let err = client.list_streams(Scope::Global).await.unwrap_err();
        assert!(matches!(err, RestError::RateLimited(_)), "{err:?}");
        assert_eq!((err.status(), err.error_num()), (Some(429), Some(429)));
        assert_eq!(server.stats().rest_requests - before, 3);
        server.fail_rest_next(0, 429);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_jwt_the_server_keeps_refusing_is_not_retried_forever() {
    // Every JWT the server issues has already expired.
    let server = gdn(ServerConfig::default().jwt_lifetime(Duration::ZERO)).await;
    let client = login_client(&server);
    bounded(async {
        let err = client.list_streams(Scope::Global).await.unwrap_err();
        assert!(matches!(err, RestError::Unauthorized(_)), "{err:?}");
        // Login, refused call, one new login, one refused repeat: then it stops. (The token
        // claims a one-second `exp` in whole seconds; when the call falls within the client's
        // renewal margin of it, the client logs in once more before using it: 5.)
        let requests = server.stats().rest_requests;
        assert!((4..=5).contains(&requests), "{requests} requests");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(PASSWORD) && !text.contains("eyJ"), "{text}");
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn api_keys_find_the_tenant_the_server_derives() {
    let server = LocalServer::start_with(ServerConfig::default().api_key("acme.key1.SECRET"))
        .await
        .unwrap();
    bounded(async {
        let client = Client::builder(server.http_url())
            .api_key("acme.key1.SECRET")
            .retry(fast())
            .build()
            .unwrap();
        assert_eq!(client.tenant().await.unwrap(), "acme");
        let wrong = Client::builder(server.http_url())
            .api_key("acme.key1.WRONG")
            .retry(fast())
            .build()
            .unwrap();
        let err = wrong.list_streams(Scope::Global).await.unwrap_err();
        assert!(matches!(err, RestError::Unauthorized(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("WRONG"));
    })
    .await;
    server.shutdown().await;
}
