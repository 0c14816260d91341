//! [`Endpoint`]: a server, a [`Topic`], the options of one [`EndpointRole`] and an [`Auth`]
//! method, turned into the stream URL and the upgrade request of each connection attempt.

use std::fmt;
use std::future::Future;

use super::auth::Auth;
use super::encode::{push_encoded, Query};
use super::error::UrlError;
use super::options::{ConsumerOptions, ProducerOptions, ReaderOptions};
use super::topic::{check_segment, Topic};
use crate::connect::WsStream;
use crate::error::Error;
use crate::redact::redact_url;
use crate::tungstenite::client::IntoClientRequest;
use crate::tungstenite::http;

/// Which kind of client an [`Endpoint`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointRole {
    /// Publishes messages (`/ws/v2/producer/...`).
    Producer,
    /// Receives and acknowledges messages of a subscription (`/ws/v2/consumer/...`).
    Consumer,
    /// Reads messages from a position without a durable subscription (`/ws/v2/reader/...`).
    Reader,
}

impl EndpointRole {
    /// The path segment: `producer`, `consumer` or `reader`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointRole::Producer => "producer",
            EndpointRole::Consumer => "consumer",
            EndpointRole::Reader => "reader",
        }
    }
}

/// A producer, consumer or reader endpoint: server, topic, role options and authentication.
///
/// URLs are `<server>/_ws/ws/v2/<role>/persistent/<tenant>/<namespace>/<topic>[/<subscription>]`
/// for GDN and the same without `/_ws` for Apache Pulsar; the subscription segment exists only for
/// consumers. Names are percent-encoded.
///
/// `Debug` shows the URL (redacted) and the kind of authentication, never its secret.
///
/// ```no_run
/// use stream_websocket::gdn::{Auth, ConsumerOptions, Endpoint, Topic, DEFAULT_FABRIC};
/// use stream_websocket::ReconnectingStream;
///
/// # fn run() -> Result<(), stream_websocket::Error> {
/// let topic = Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false)?;
/// let endpoint = Endpoint::consumer(
///     "wss://api-gdn-us-west.paas.macrometa.io",
///     &topic,
///     ConsumerOptions::new("billing"),
/// )?
/// .with_auth(Auth::api_key("my-api-key"));
/// let stream = ReconnectingStream::new(move || endpoint.connect());
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    role: EndpointRole,
    topic: Topic,
    auth: Auth,
    options: crate::ConnectOptions,
    /// A producer's `maxPendingMessages`, if set.
    max_pending_messages: Option<u32>,
}

impl Endpoint {
    /// A producer endpoint. `server` is `ws://host[:port]` or `wss://host[:port]` (a trailing `/`
    /// is allowed).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] for another scheme, a path, query, fragment, credentials or an
    /// empty or malformed host or port; [`UrlError::EmptyName`] for an empty producer name;
    /// [`UrlError::InvalidOption`] for a send timeout or pending limit above `i32::MAX`.
    pub fn producer(
        server: &str,
        topic: &Topic,
        options: ProducerOptions,
    ) -> Result<Endpoint, UrlError> {
        let query = options.query()?;
        let mut endpoint = Endpoint::build(server, topic, EndpointRole::Producer, None, query)?;
        endpoint.max_pending_messages = options.max_pending_messages;
        Ok(endpoint)
    }

    /// A consumer endpoint for the subscription in `options`. `server` as for
    /// [`producer`](Self::producer).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] as for [`producer`](Self::producer);
    /// [`UrlError::EmptyName`] / [`UrlError::InvalidName`] for an empty subscription or one
    /// containing `/`, `%` or a control character, and an empty consumer name;
    /// [`UrlError::InvalidOption`] for an ack timeout between 0 and 1000 ms or a number above
    /// `i32::MAX`.
    pub fn consumer(
        server: &str,
        topic: &Topic,
        options: ConsumerOptions,
    ) -> Result<Endpoint, UrlError> {
        check_segment("subscription", options.subscription())?;
        let query = options.query()?;
        Endpoint::build(
            server,
            topic,
            EndpointRole::Consumer,
            Some(options.subscription()),
            query,
        )
    }

    /// A reader endpoint. `server` as for [`producer`](Self::producer).
    ///
    /// # Errors
    ///
    /// [`UrlError::InvalidServer`] as for [`producer`](Self::producer); [`UrlError::EmptyName`]
    /// for an empty reader name; [`UrlError::InvalidOption`] for an empty message id or a queue
    /// size above `i32::MAX`.
    pub fn reader(
        server: &str,
        topic: &Topic,
        options: ReaderOptions,
    ) -> Result<Endpoint, UrlError> {
        let query = options.query()?;
        Endpoint::build(server, topic, EndpointRole::Reader, None, query)
    }

    fn build(
        server: &str,
        topic: &Topic,
        role: EndpointRole,
        subscription: Option<&str>,
        query: Query,
    ) -> Result<Endpoint, UrlError> {
        let mut url = parse_server(server)?;
        if topic.is_gdn() {
            url.push_str("/_ws");
        }
        url.push_str("/ws/v2/");
        url.push_str(role.as_str());
        url.push_str("/persistent");
        for segment in [topic.tenant(), topic.namespace(), topic.topic()]
            .into_iter()
            .chain(subscription)
        {
            url.push('/');
            push_encoded(&mut url, segment);
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query.as_str());
        }
        // Everything above is validated or encoded; this only guards against a mistake here.
        if http::Uri::try_from(url.as_str()).is_err() {
            return Err(UrlError::InvalidServer(redact_url(server).into_owned()));
        }
        Ok(Endpoint {
            url,
            role,
            topic: topic.clone(),
            auth: Auth::None,
            options: crate::ConnectOptions::default(),
            max_pending_messages: None,
        })
    }

    /// This endpoint with `auth` instead of its current authentication (initially
    /// [`Auth::None`]).
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Endpoint {
        self.auth = auth;
        self
    }

    /// Sets how connections are opened: tungstenite limits and the TLS connector (a custom root
    /// store, for instance). Default: [`ConnectOptions::new`](crate::ConnectOptions::new).
    pub fn with_connect_options(mut self, options: crate::ConnectOptions) -> Endpoint {
        self.options = options;
        self
    }

    /// The URL without any one-time password (what [`request`](Self::request) starts from).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Producer, consumer or reader.
    pub fn role(&self) -> EndpointRole {
        self.role
    }

    /// A producer endpoint's `maxPendingMessages` ([`ProducerOptions::max_pending_messages`]),
    /// if it sets one: the server's queue for the producer (1000 when unset).
    pub fn max_pending_messages(&self) -> Option<u32> {
        self.max_pending_messages
    }

    /// The authentication method.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Builds the upgrade request for one connection attempt: with [`Auth::Otp`] it fetches a
    /// fresh one-time password and appends `otp=<otp>` (percent-encoded) to the query; with
    /// [`Auth::ApiKey`] / [`Auth::Bearer`] it sets the `Authorization` header (marked
    /// sensitive).
    ///
    /// # Errors
    ///
    /// The OTP callback's error; [`Error::Factory`] if it returned an empty password;
    /// [`Error::Url`] for an empty API key or token, or one that cannot be put in an HTTP header.
    pub async fn request(&self) -> Result<http::Request<()>, Error> {
        let mut url = self.url.clone();
        if let Auth::Otp(source) = &self.auth {
            tracing::debug!(topic = %self.topic, "fetching a one-time password");
            let otp = source.fetch().await?;
            if otp.expose().is_empty() {
                return Err(Error::factory(UrlError::EmptyName {
                    what: "one-time password",
                }));
            }
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("otp=");
            push_encoded(&mut url, otp.expose());
        }
        let mut request = url.into_client_request()?;
        let header = match &self.auth {
            Auth::ApiKey(key) => Some(("apikey", "API key", key)),
            Auth::Bearer(token) => Some(("bearer", "bearer token", token)),
            Auth::None | Auth::Otp(_) => None,
        };
        if let Some((scheme, what, secret)) = header {
            if secret.expose().is_empty() {
                return Err(UrlError::InvalidOption {
                    option: "Authorization",
                    reason: format!("the {what} is empty"),
                }
                .into());
            }
            let mut value = http::HeaderValue::from_str(&format!("{scheme} {}", secret.expose()))
                .map_err(|_| UrlError::InvalidOption {
                option: "Authorization",
                reason: format!("the {what} contains characters not allowed in an HTTP header"),
            })?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// One connection attempt: [`request`](Self::request), then [`crate::connect`]. The future
    /// owns a copy of the endpoint, so this can be the connection factory itself:
    /// `ReconnectingStream::new(move || endpoint.connect())`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request) and [`crate::connect`].
    pub fn connect(&self) -> impl Future<Output = Result<WsStream, Error>> + Send + 'static {
        let endpoint = self.clone();
        async move {
            let request = endpoint.request().await?;
            crate::connect::connect_with(request, endpoint.options).await
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth.kind())
            .finish()
    }
}

/// Checks `ws[s]://host[:port][/]` and returns it without the trailing `/`, scheme lowercased.
fn parse_server(server: &str) -> Result<String, UrlError> {
    let invalid = || UrlError::InvalidServer(redact_url(server).into_owned());
    let (scheme, rest) = server.split_once("://").ok_or_else(invalid)?;
    let scheme = if scheme.eq_ignore_ascii_case("ws") {
        "ws"
    } else if scheme.eq_ignore_ascii_case("wss") {
        "wss"
    } else {
        return Err(invalid());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if !valid_authority(authority) {
        return Err(invalid());
    }
    Ok(format!("{scheme}://{authority}"))
}

/// `host[:port]` where host is a DNS name / IPv4 address or a bracketed IPv6 address.
fn valid_authority(authority: &str) -> bool {
    let (host_ok, port) = if let Some(after) = authority.strip_prefix('[') {
        let Some((v6, tail)) = after.split_once(']') else {
            return false;
        };
        let host_ok = !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        let port = match tail {
            "" => None,
            t => match t.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (host_ok, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        (host_ok, port)
    };
    let port_ok = match port {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n != 0)
        }
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MessageId;
    use crate::gdn::{InitialPosition, ReaderStart, SubscriptionType, DEFAULT_FABRIC};
    use crate::redact::Secret;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    const SERVER: &str = "wss://api-gdn.example.com";

    fn gdn_topic() -> Topic {
        Topic::gdn("acme_x.com", DEFAULT_FABRIC, "orders", false).unwrap()
    }

    #[test]
    fn gdn_global_producer_url() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/producer/persistent/acme_x.com/c8global._system/c8globals.orders"
        );
        assert_eq!(e.role(), EndpointRole::Producer);
        assert!(e.topic().is_gdn());
    }

    #[test]
    fn gdn_local_consumer_url_with_all_params() {
        let topic = Topic::gdn("acme", "fab1", "events", true).unwrap();
        let options = ConsumerOptions::new("sub-1")
            .subscription_type(SubscriptionType::KeyShared)
            .receiver_queue_size(500)
            .consumer_name("c 1")
            .ack_timeout(Duration::from_secs(30))
            .negative_ack_delay(Duration::from_millis(1500))
            .initial_position(InitialPosition::Earliest)
            .priority_level(-2);
        let e = Endpoint::consumer("ws://127.0.0.1:8080/", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://127.0.0.1:8080/_ws/ws/v2/consumer/persistent/acme/c8local.fab1/c8locals.events/sub-1\
             ?subscriptionType=Key_Shared&receiverQueueSize=500&consumerName=c%201\
             &ackTimeoutMillis=30000&negativeAckRedeliveryDelay=1500\
             &subscriptionInitialPosition=Earliest&priorityLevel=-2"
        );
    }

    #[test]
    fn consumer_always_sends_subscription_type() {
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s")).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/consumer/persistent/acme_x.com/c8global._system/c8globals.orders/s?subscriptionType=Exclusive"
        );
    }

    #[test]
    fn pulsar_producer_url_with_all_params() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        let options = ProducerOptions::default()
            .producer_name("writer-1")
            .send_timeout(Duration::from_millis(2500))
            .max_pending_messages(100);
        let e = Endpoint::producer("WS://localhost:8080", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://localhost:8080/ws/v2/producer/persistent/public/default/orders\
             ?producerName=writer-1&sendTimeoutMillis=2500&maxPendingMessages=100"
        );
    }

    #[test]
    fn pulsar_consumer_url() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        let options = ConsumerOptions::new("billing")
            .subscription_type(SubscriptionType::Failover)
            .ack_timeout(Duration::ZERO);
        let e = Endpoint::consumer("ws://localhost:8080", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "ws://localhost:8080/ws/v2/consumer/persistent/public/default/orders/billing\
             ?subscriptionType=Failover&ackTimeoutMillis=0"
        );
    }

    #[test]
    fn pulsar_reader_urls() {
        let topic = Topic::pulsar("public", "default", "orders").unwrap();
        let options = ReaderOptions::default()
            .reader_name("r1")
            .receiver_queue_size(10)
            .start(ReaderStart::MessageId(MessageId::new("CAEQAw+/=")));
        let e = Endpoint::reader("wss://[::1]:8443", &topic, options).unwrap();
        assert_eq!(
            e.url(),
            "wss://[::1]:8443/ws/v2/reader/persistent/public/default/orders\
             ?readerName=r1&receiverQueueSize=10&messageId=CAEQAw%2B%2F%3D"
        );
        let e = Endpoint::reader("ws://h", &topic, ReaderOptions::default()).unwrap();
        assert_eq!(
            e.url(),
            "ws://h/ws/v2/reader/persistent/public/default/orders?messageId=latest"
        );
        let e = Endpoint::reader(
            "ws://h",
            &topic,
            ReaderOptions::default().start(ReaderStart::Earliest),
        )
        .unwrap();
        assert!(e.url().ends_with("?messageId=earliest"), "{}", e.url());
    }

    #[test]
    fn names_are_percent_encoded() {
        let topic = Topic::gdn("t", "my fabric", "Bestellungen für Köln~", false).unwrap();
        let e = Endpoint::consumer(SERVER, &topic, ConsumerOptions::new("sub 1+é")).unwrap();
        assert_eq!(
            e.url(),
            "wss://api-gdn.example.com/_ws/ws/v2/consumer/persistent/t/c8global.my%20fabric/\
             c8globals.Bestellungen%20f%C3%BCr%20K%C3%B6ln~/sub%201%2B%C3%A9?subscriptionType=Exclusive"
        );
    }

    #[test]
    fn invalid_subscriptions_are_rejected() {
        assert_eq!(
            Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("")).unwrap_err(),
            UrlError::EmptyName {
                what: "subscription"
            }
        );
        let sub = |s: &str| Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new(s));
        assert_eq!(
            sub("a/b").unwrap_err(),
            UrlError::InvalidName {
                what: "subscription",
                name: "a/b".into(),
                reason: "contains '/'"
            }
        );
        assert!(matches!(
            sub("a%b"),
            Err(UrlError::InvalidName {
                reason: "contains '%'",
                ..
            })
        ));
        assert!(matches!(
            sub("a\tb"),
            Err(UrlError::InvalidName {
                reason: "contains a control character",
                ..
            })
        ));
        assert_eq!(
            sub("a/b").unwrap_err().to_string(),
            "invalid subscription \"a/b\": contains '/'"
        );
    }

    #[test]
    fn invalid_servers_are_rejected() {
        for server in [
            "",
            "example.com",
            "http://example.com",
            "https://example.com",
            "ws://",
            "ws:///",
            "wss://host/path",
            "wss://host/_ws",
            "wss://host//",
            "wss://host?x=1",
            "wss://host#frag",
            "wss://host:",
            "wss://host:0",
            "wss://host:65536",
            "wss://host:80a",
            "wss://:443",
            "wss://ho st",
            "wss://[::1",
            "wss://[]:80",
            "wss://[::1]x",
            "wss://user@host",
            " wss://host",
        ] {
            let err = Endpoint::producer(server, &gdn_topic(), ProducerOptions::default())
                .expect_err(server);
            assert!(
                matches!(err, UrlError::InvalidServer(_)),
                "{server}: {err:?}"
            );
        }
        for server in [
            "ws://host",
            "wss://host/",
            "WSS://Host.Example:443",
            "ws://127.0.0.1:1",
            "ws://[fe80::1]",
        ] {
            assert!(
                Endpoint::producer(server, &gdn_topic(), ProducerOptions::default()).is_ok(),
                "{server}"
            );
        }
    }

    #[test]
    fn option_errors_are_returned() {
        let empty = |what| UrlError::EmptyName { what };
        let producer = ProducerOptions::default().producer_name("");
        let consumer = ConsumerOptions::new("s").consumer_name("");
        let reader = ReaderOptions::default().reader_name("");
        let topic = gdn_topic();
        assert_eq!(
            Endpoint::producer(SERVER, &topic, producer).unwrap_err(),
            empty("producer name")
        );
        assert_eq!(
            Endpoint::consumer(SERVER, &topic, consumer).unwrap_err(),
            empty("consumer name")
        );
        assert_eq!(
            Endpoint::reader(SERVER, &topic, reader).unwrap_err(),
            empty("reader name")
        );
    }

    #[tokio::test]
    async fn request_sets_authorization_headers() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();

        let req = e.request().await.unwrap();
        assert!(req.headers().get("authorization").is_none());
        assert_eq!(req.uri().to_string(), e.url());

        let req = e
            .clone()
            .with_auth(Auth::api_key("K"))
            .request()
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "apikey K");
        assert!(req.headers()["authorization"].is_sensitive());
        assert_eq!(req.uri().to_string(), e.url());

        let req = e
            .clone()
            .with_auth(Auth::bearer(String::from("T")))
            .request()
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "bearer T");
        assert_eq!(req.uri().to_string(), e.url());
    }

    #[tokio::test]
    async fn bad_header_secrets_are_url_errors_without_the_secret() {
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        let err = e
            .clone()
            .with_auth(Auth::api_key("s3cr3t\nkey"))
            .request()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
        let err = e.with_auth(Auth::bearer("")).request().await.unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
    }

    #[tokio::test]
    async fn otp_is_fetched_on_every_request() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let auth = Auth::otp(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(Secret::new(format!("otp{n}+/="))) }
        });
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s"))
            .unwrap()
            .with_auth(auth);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(!e.url().contains("otp"));

        let first = e.request().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let second = e.request().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        assert_eq!(
            first.uri().to_string(),
            format!("{}&otp=otp1%2B%2F%3D", e.url())
        );
        assert_eq!(
            second.uri().to_string(),
            format!("{}&otp=otp2%2B%2F%3D", e.url())
        );
        assert!(first.headers().get("authorization").is_none());

        // Without other parameters the OTP starts the query.
        let p = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default())
            .unwrap()
            .with_auth(e.auth().clone());
        let req = p.request().await.unwrap();
        assert_eq!(
            req.uri().to_string(),
            format!("{}?otp=otp3%2B%2F%3D", p.url())
        );
    }

    #[tokio::test]
    async fn otp_failures_fail_the_request() {
        let failing =
            Auth::otp(|| async { Err(Error::factory(std::io::Error::other("otp service down"))) });
        let e = Endpoint::producer(SERVER, &gdn_topic(), ProducerOptions::default()).unwrap();
        let err = e.clone().with_auth(failing).request().await.unwrap_err();
        assert!(matches!(err, Error::Factory(_)), "{err:?}");
        assert!(err.is_retryable());

        let empty = Auth::otp(|| async { Ok(Secret::new("")) });
        let err = e.with_auth(empty).request().await.unwrap_err();
        assert!(matches!(err, Error::Factory(_)), "{err:?}");
    }

    #[tokio::test]
    async fn secrets_never_appear_in_debug_or_errors() {
        let e = Endpoint::consumer(SERVER, &gdn_topic(), ConsumerOptions::new("s")).unwrap();

        let with_key = e.clone().with_auth(Auth::api_key("KEY-s3cr3t"));
        let text = format!("{with_key:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("apikey"), "{text}");
        assert!(text.contains("c8globals.orders"), "{text}");
        let req = with_key.request().await.unwrap();
        assert!(!format!("{req:?}").contains("s3cr3t"));

        let with_jwt = e.clone().with_auth(Auth::bearer("JWT-s3cr3t"));
        assert!(!format!("{with_jwt:?} {:?}", with_jwt.auth()).contains("s3cr3t"));

        let with_otp = e.with_auth(Auth::otp(|| async { Ok(Secret::new("OTP-s3cr3t")) }));
        let text = format!("{with_otp:?} {:?}", with_otp.auth());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("OtpSource(..)"), "{text}");
        // The OTP is in the request, but only there.
        let req = with_otp.request().await.unwrap();
        assert!(req.uri().to_string().contains("otp=OTP-s3cr3t"));
        assert!(!with_otp.url().contains("s3cr3t"));
        assert!(!format!("{with_otp:?}").contains("s3cr3t"));

        for server in [
            "wss://host/?apikey=s3cr3t",
            "wss://host/?otp=s3cr3t",
            "wss://user:s3cr3t@host",
            "wss://s3cr3t@host",
            "http://s3cr3t@host/x",
        ] {
            let err =
                Endpoint::producer(server, &gdn_topic(), ProducerOptions::default()).unwrap_err();
            assert!(matches!(err, UrlError::InvalidServer(_)), "{err:?}");
            let text = format!("{err} {err:?} {}", Error::from(err.clone()));
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[tokio::test]
    async fn connect_to_closed_port_is_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let topic = Topic::pulsar("public", "default", "t").unwrap();
        let e = Endpoint::producer(
            &format!("ws://127.0.0.1:{port}"),
            &topic,
            ProducerOptions::default(),
        )
        .unwrap()
        .with_auth(Auth::api_key("k"));
        fn assert_send_static<T: Send + 'static>(t: T) -> T {
            t
        }
        let attempt = assert_send_static(e.connect());
        drop(e);
        let err = attempt.await.unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        assert!(err.is_retryable());
    }
}
