//! The `producer` and `consumer` command-line examples against the embedded server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stream_websocket_testkit::{LocalServer, ServerConfig};

const KEY: &str = "cli-secret-key";

/// Builds the examples once (a no-op when `cargo test` already did) and returns their directory.
fn examples() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(build_examples).clone()
}

fn build_examples() -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo describes the package to the test process in these variables; inherited, they differ
    // from what a plain `cargo build` sees and make build scripts that watch them (ring's) run
    // again, so the examples and the tests would rebuild each other's dependencies on every run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cargo.env_remove(&*name);
        }
    }
    let status = cargo
        .args([
            "build",
            "--quiet",
            "--example",
            "producer",
            "--example",
            "consumer",
            "--example",
            "gdn-local",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the examples failed");
    // target/<profile>/deps/cli-<hash> → target/<profile>/examples
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

fn common(server: &LocalServer) -> Vec<String> {
    strings(&["--server", &server.ws_url(), "--tenant", "acme"])
        .into_iter()
        .chain(knobs())
        .collect()
}

/// The stream and quick reconnect and keepalive settings, for every run against a server.
fn knobs() -> Vec<String> {
    strings(&[
        "--stream",
        "orders",
        "--min-delay-ms",
        "20",
        "--max-delay-ms",
        "200",
        "--ping-interval-ms",
        "500",
        "--pong-timeout-ms",
        "1000",
    ])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits until `done` holds, for at most 30 s.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start() -> LocalServer {
    LocalServer::start_with(ServerConfig::default().api_key(KEY))
        .await
        .unwrap()
}

/// Runs a command to completion off the async runtime, with a time limit.
async fn run(mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    match tokio::time::timeout(Duration::from_secs(60), waiting).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the command did not finish");
        }
    }
}

/// Sends `signal` (`-INT`, `-TERM`) to a running child, then waits for it to exit, at most 30 s
/// (`stuck` is the panic message otherwise).
async fn signal_and_wait(
    child: std::process::Child,
    signal: &str,
    stuck: &str,
) -> std::process::Output {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect(stuck)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_exchange_messages() {
    let dir = examples();
    let server = start().await;
    let mut consumer = Command::new(dir.join("consumer"));
    consumer.args(common(&server)).args([
        "--subscription",
        "audit",
        "--type",
        "shared",
        "--count",
        "25",
    ]);
    consumer.env("C8_API_KEY", KEY);
    let consumer = tokio::spawn(run(consumer));
    // Let the consumer subscribe (a new subscription starts at the latest message).
    wait_for("the consumer", || server.stats().connections_open > 0).await;

    let mut producer = Command::new(dir.join("producer"));
    producer
        .args(common(&server))
        .args(["--count", "25", "--prefix", "p-", "--api-key", KEY]);
    let out = run(producer).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer failed: {stderr}");
    assert_eq!(
        stdout.trim(),
        r#"{"sent":25,"confirmed":25,"failed":0,"reconnects":0}"#
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("event: open")),
        "{stderr}"
    );

    let out = consumer.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "consumer failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let want: Vec<String> = (0..25).map(|i| format!("p-{i}")).collect();
    assert_eq!(lines, want);
    assert_eq!(
        stderr.lines().last().unwrap(),
        r#"{"received":25,"redelivered":0,"duplicates":0,"reconnects":0}"#
    );
    for output in [&stdout, &stderr] {
        assert!(!output.contains(KEY), "the key leaked");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_exits_2_naming_the_status_but_not_the_key() {
    let dir = examples();
    let server = start().await;
    let mut producer = Command::new(dir.join("producer"));
    producer
        .args(common(&server))
        .args(["--count", "3", "--api-key", "not-the-key"]);
    let out = run(producer).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("fatal: HTTP 401"), "{stderr}");
    assert!(!stderr.contains("not-the-key"));
    server.shutdown().await;
}

/// Error messages name only their own layer; the examples print the whole chain, so a human
/// still reads why: the retry cap, then the I/O error, then the operating system's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_exits_2_naming_the_last_cause() {
    let dir = examples();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    let server = format!("ws://{addr}");
    drop(closed);
    // What the operating system says to a connection nobody accepts.
    let refused = std::net::TcpStream::connect(addr).unwrap_err().to_string();
    let mut producer = Command::new(dir.join("producer"));
    producer.args([
        "--server",
        &server,
        "--tenant",
        "acme",
        "--stream",
        "orders",
        "--min-delay-ms",
        "10",
        "--max-delay-ms",
        "20",
        "--max-retries",
        "1",
        "--count",
        "1",
        "--api-key",
        KEY,
    ]);
    let out = run(producer).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("fatal: gave up after "), "{stderr}");
    assert!(
        last.ends_with(&format!(": I/O error: {refused}")),
        "{stderr}"
    );
    assert_eq!(last.matches(&refused).count(), 1, "{stderr}");
    let error_event = stderr
        .lines()
        .find(|l| l.starts_with("event: error"))
        .unwrap_or_else(|| panic!("no error event: {stderr}"));
    assert_eq!(error_event, format!("event: error I/O error: {refused}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_closes_the_consumer_cleanly_with_a_summary() {
    let dir = examples();
    let server = start().await;
    let mut consumer = Command::new(dir.join("consumer"));
    consumer
        .args(common(&server))
        .args(["--subscription", "tail", "--api-key", KEY])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = consumer.spawn().unwrap();
    wait_for("the consumer", || server.stats().connections_open > 0).await;
    let out = signal_and_wait(child, "-INT", "the consumer did not stop on Ctrl-C").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap(),
        r#"{"received":0,"redelivered":0,"duplicates":0,"reconnects":0}"#
    );
    server.shutdown().await;
}

/// Publishes `p-0` … `p-{n-1}` with the `producer` command line while the server drops every
/// producer connection right after storing its 7th message and before confirming it: the
/// producer sends that message again, so the server stores it twice. Returns what the server
/// stored on the topic, every copy, in order.
async fn publish_with_stored_duplicates(server: &LocalServer, n: usize) -> Vec<String> {
    let dir = examples();
    server.drop_after_frames(Some(7));
    let mut producer = Command::new(dir.join("producer"));
    producer.args(common(server)).args([
        "--count",
        &n.to_string(),
        "--prefix",
        "p-",
        "--api-key",
        KEY,
    ]);
    let out = run(producer).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer failed: {stderr}");
    // Consumer connections must not drop: every copy is delivered once, in order.
    server.drop_after_frames(None);
    stored(server, "acme")
}

/// How many stored copies repeat an earlier one before the first copy of the `n`-th distinct
/// payload: the duplicates a consumer reading the log from the start meets before it has `n`
/// distinct messages.
fn repeats_before_nth_distinct(stored: &[String], n: usize) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut repeats = 0;
    for p in stored {
        if seen.len() == n {
            break;
        }
        if !seen.insert(p) {
            repeats += 1;
        }
    }
    repeats
}

/// Runs the `consumer` command line from the start of the stream until it has `n` messages,
/// with these extra arguments, and checks that it printed each payload once, in order, and
/// reported `duplicates` repeats in its summary.
async fn consume_from_earliest(server: &LocalServer, n: usize, extra: &[&str], duplicates: usize) {
    let dir = examples();
    let mut consumer = Command::new(dir.join("consumer"));
    consumer
        .args(common(server))
        .args([
            "--subscription",
            "replay",
            "--initial-position",
            "earliest",
            "--count",
            &n.to_string(),
            "--api-key",
            KEY,
        ])
        .args(extra);
    let out = run(consumer).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "consumer failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let want: Vec<String> = (0..n).map(|i| format!("p-{i}")).collect();
    assert_eq!(lines, want, "each payload once, in order");
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(r#"{{"received":{n},"redelivered":0,"duplicates":{duplicates},"reconnects":0}}"#),
        "{stderr}"
    );
}

/// Publishes N messages of which the server stores some twice (a producer's re-send after a
/// drop between storing and confirming), then runs the consumer command line with `flags`: it
/// counts, prints and acknowledges each message once, and reports the copies it dropped.
async fn consume_stored_duplicates(flags: &[&str]) {
    const N: usize = 30;
    let server = start().await;
    let stored = publish_with_stored_duplicates(&server, N).await;
    assert!(stored.len() > N, "no duplicates stored: {stored:?}");
    let duplicates = repeats_before_nth_distinct(&stored, N);
    assert!(
        duplicates >= 1,
        "only the last message was stored twice: {stored:?}"
    );
    consume_from_earliest(&server, N, flags, duplicates).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_counts_each_message_once_when_the_server_stored_duplicates() {
    consume_stored_duplicates(&[]).await;
}

/// With the library's de-duplication off every stored copy is handed over; the command line
/// still counts and prints each message once, by its idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dedup_the_consumer_still_counts_each_message_once() {
    consume_stored_duplicates(&["--no-dedup"]).await;
}

const EMAIL: &str = "cli@example.com";
/// The tenant of [`EMAIL`]: `@` becomes `_`.
const EMAIL_TENANT: &str = "cli_example.com";
const PASSWORD: &str = "cli-Pa55word";

/// A file under the temporary directory with a name no other test or run uses, removed on
/// drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "stream-websocket-cli-{}-{nanos}-{n}.pem",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A command for an example with none of the credentials or log settings of the environment
/// this test runs in.
fn example(name: &str) -> Command {
    let mut cmd = Command::new(examples().join(name));
    for var in [
        "C8_API_KEY",
        "C8_EMAIL",
        "C8_PASSWORD",
        "RUST_LOG",
        "GDN_LOCAL_API_KEYS",
        "GDN_LOCAL_USERS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The GDN stream `orders` of `tenant` as the server names it.
fn stored(server: &LocalServer, tenant: &str) -> Vec<String> {
    let topic = stream_websocket::gdn::Topic::gdn(tenant, "_system", "orders", false).unwrap();
    server
        .stored(&topic.full_name())
        .iter()
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect()
}

/// Fails if `output` shows the password, a JWT (every JWT starts with `eyJ`, base64 of `{"`)
/// or a one-time password (`otp=` with a value that is not `REDACTED`).
fn assert_no_secrets(output: &str) {
    assert!(!output.contains(PASSWORD), "the password leaked: {output}");
    assert!(!output.contains("eyJ"), "a JWT leaked: {output}");
    for (at, _) in output.match_indices("otp=") {
        assert!(
            output[at + 4..].starts_with("REDACTED"),
            "a one-time password leaked: {output}"
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The whole GDN flow of issue 14 over TLS: log in by email, discover the tenant, create the
/// stream, trust the server's certificate from a file; every socket connection authenticates
/// with a fresh one-time password, reconnects included. Run at `RUST_LOG=trace`, no output
/// shows the password, a JWT or a one-time password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_login_over_tls_creates_the_stream_and_uses_a_fresh_otp_per_connection() {
    const N: usize = 10;
    // Streams are not created by connecting: only --create-stream makes the upgrades succeed.
    let server = LocalServer::start_with(
        ServerConfig::default()
            .user(EMAIL, PASSWORD)
            .auto_create_streams(false),
    )
    .await
    .unwrap();
    let ca = TempFile::new(server.certificate_pem().unwrap());
    let login = |name: &str| {
        let mut cmd = example(name);
        cmd.args(["--server", &server.wss_url(), "--email", EMAIL])
            .arg("--ca-file")
            .arg(ca.path())
            .arg("--create-stream")
            .args(knobs())
            .env("RUST_LOG", "trace");
        cmd
    };

    let mut consumer = login("consumer");
    consumer
        .args(["--subscription", "audit", "--count", &(2 * N).to_string()])
        .env("C8_PASSWORD", PASSWORD);
    let consumer = tokio::spawn(run(consumer));
    wait_for("the consumer", || server.stats().connections_open > 0).await;
    let produce = |prefix: &str| {
        let mut producer = login("producer");
        producer.args([
            "--password",
            PASSWORD,
            "--count",
            &N.to_string(),
            "--prefix",
            prefix,
        ]);
        run(producer)
    };
    let first = produce("a-").await;

    // The consumer's one-time password is spent: its reconnect must fetch a new one, the only
    // REST call it makes after starting.
    let before = server.stats();
    server.drop_all();
    wait_for("the consumer's reconnect", || {
        server.stats().connections_accepted > before.connections_accepted
    })
    .await;
    assert!(
        server.stats().rest_requests > before.rest_requests,
        "no one-time password fetched for the reconnect"
    );
    let second = produce("b-").await;

    let received = consumer.await.unwrap();
    let mut want: Vec<String> = (0..N).map(|i| format!("a-{i}")).collect();
    want.extend((0..N).map(|i| format!("b-{i}")));
    for out in [&first, &second] {
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "producer failed: {stderr}");
        assert!(stdout.starts_with(&format!(r#"{{"sent":{N},"confirmed":{N},"failed":0,"#)));
        assert_no_secrets(&stdout);
        assert_no_secrets(&stderr);
    }
    let (stdout, stderr) = (text(&received.stdout), text(&received.stderr));
    assert!(received.status.success(), "consumer failed: {stderr}");
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    lines.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "each message once");
    // The summary: every message, and the reconnect after the drop. At `RUST_LOG=trace` the
    // HTTP client's pool may still log its shutdown after it, so take the last JSON line.
    let summary = stderr.lines().rfind(|l| l.starts_with('{')).unwrap();
    assert!(
        summary.starts_with(&format!(r#"{{"received":{}"#, 2 * N)),
        "{summary}"
    );
    assert!(!summary.ends_with(r#""reconnects":0}"#), "{summary}");
    assert_no_secrets(&stdout);
    assert_no_secrets(&stderr);
    // The trace was on, and showed both of the consumer's upgrades with a one-time password.
    assert!(stderr.contains("TRACE"), "{stderr}");
    assert!(stderr.matches("otp=REDACTED").count() >= 2, "{stderr}");

    assert_eq!(stored(&server, EMAIL_TENANT), want);
    assert_eq!(
        server.stats().handshakes_refused,
        0,
        "a spent OTP was reused"
    );
    // An upgrade without credentials is refused, so every accepted one had a valid OTP.
    let bare = tokio_tungstenite::connect_async(format!(
        "{}/_ws/ws/v2/consumer/persistent/{EMAIL_TENANT}/c8global._system/c8globals.orders/x",
        server.ws_url()
    ))
    .await;
    assert!(
        matches!(&bare, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
        "{bare:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_2_with_one_line_naming_the_401() {
    let server = LocalServer::start_with(ServerConfig::default().user(EMAIL, PASSWORD))
        .await
        .unwrap();
    let mut producer = example("producer");
    producer
        .args(["--server", &server.ws_url(), "--email", EMAIL])
        .args(knobs())
        .args(["--count", "1"])
        .env("C8_PASSWORD", "not-the-Pa55word");
    let out = run(producer).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("fatal: HTTP 401: "), "{stderr}");
    assert!(stderr.contains("/_open/auth"), "{stderr}");
    assert!(!stderr.contains("not-the-Pa55word"), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(server.stats().connections_accepted, 0);
    server.shutdown().await;
}

/// Plain Pulsar has no GDN REST API: the flags that need it are refused before any network
/// use, in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_flags_with_a_pulsar_namespace_exit_2_with_a_clear_message() {
    let tenant: &[&str] = &["--tenant", "acme"];
    let cases: [(&[&str], &[&str], &str); 3] = [
        (
            &["--email", EMAIL, "--password", PASSWORD],
            tenant,
            "--email",
        ),
        (
            &["--create-stream", "--api-key", KEY],
            tenant,
            "--create-stream",
        ),
        (&[], &[], "--namespace needs --tenant"),
    ];
    for (flags, tenant, named) in cases {
        for (name, own) in [
            ("producer", &[][..]),
            ("consumer", &["--subscription", "s"][..]),
        ] {
            let mut cmd = example(name);
            cmd.args(["--server", "ws://127.0.0.1:9", "--stream", "orders"])
                .args(["--namespace", "default"])
                .args(tenant)
                .args(own)
                .args(flags);
            let out = run(cmd).await;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {flags:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with("fatal: "), "{stderr}");
            assert!(stderr.contains(named), "{stderr}");
            assert!(stderr.contains("--namespace"), "{stderr}");
            assert_no_secrets(&stderr);
        }
    }
}

/// With an API key and no --tenant the tenant is discovered over REST (the key's, by jsc8's
/// rule on this server: `_mm` for a key of fewer than three parts) and the stream created, but
/// the sockets keep the key in their header: no one-time password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_without_tenant_discovers_it_and_keeps_the_key_on_sockets() {
    let server = LocalServer::start_with(
        ServerConfig::default()
            .api_key(KEY)
            .auto_create_streams(false),
    )
    .await
    .unwrap();
    let mut producer = example("producer");
    producer
        .args(["--server", &server.ws_url(), "--create-stream"])
        .args(knobs())
        .args(["--count", "3", "--prefix", "k-"])
        .env("C8_API_KEY", KEY)
        .env("RUST_LOG", "stream_websocket=debug");
    let out = run(producer).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with(r#"{"sent":3,"confirmed":3,"#),
        "{stdout}"
    );
    assert!(stderr.contains("opening WebSocket"), "{stderr}");
    assert!(!stderr.contains("otp="), "{stderr}");
    assert!(!stderr.contains(KEY), "the key leaked: {stderr}");
    assert_eq!(stored(&server, "_mm"), ["k-0", "k-1", "k-2"]);
    assert!(
        server.stats().rest_requests >= 2,
        "tenant and stream over REST"
    );
    server.shutdown().await;
}

/// One HTTP/1.1 request over a fresh plain connection; the whole response as text.
async fn http(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("gdn-local did not answer")
        .unwrap();
    text(&out)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdn_local_prints_its_address_first_writes_the_certificate_and_stops_on_sigterm() {
    let cert = TempFile(std::env::temp_dir().join(format!(
        "gdn-local-{}-{}.pem",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )));
    let key = "acme.key1.GDNLOCALSECRET";
    let mut child = example("gdn-local")
        .args([
            "--port",
            "0",
            "--api-key",
            key,
            "--user",
            "a@b.c:GDNLOCALPASSWORD",
        ])
        .arg("--cert-out")
        .arg(&cert.0)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = first_line(stdout).await;
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:") && addr[10..].parse::<u16>().is_ok_and(|p| p > 0));
    // The certificate was written before the line was printed.
    let pem = std::fs::read_to_string(&cert.0).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    let ask = |auth: &str| {
        format!("GET /_api/user HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
    };
    let ok = http(&addr, &ask(&format!("Authorization: apikey {key}\r\n"))).await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains(r#""tenant":"acme""#),
        "{ok}"
    );
    let refused = http(&addr, &ask("")).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let out = signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("GDNLOCALSECRET") && !stderr.contains("GDNLOCALPASSWORD"),
        "{stderr}"
    );
}

/// The first line a child printed on stdout (gdn-local's `listening on ...`), within 30 s.
async fn first_line(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead;
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap();
            line
        }),
    )
    .await
    .expect("no first line")
    .unwrap()
}

#[test]
fn gdn_local_refuses_a_user_without_a_password() {
    let out = example("gdn-local")
        .args(["--user", "nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "gdn-local: --user takes EMAIL:PASSWORD"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdn_local_takes_credentials_from_the_environment_and_a_file() {
    let file =
        TempFile::new("# credentials\n\napikey file.k2.FILESECRET\nuser f@x.y:FILEPASSWORD\n");
    let mut child = example("gdn-local")
        .args(["--port", "0", "--no-tls", "--credentials-file"])
        .arg(file.path())
        .env("GDN_LOCAL_API_KEYS", "env.k1.ENVSECRET, env2.k.ENVSECRET2")
        .env("GDN_LOCAL_USERS", "e@x.y:ENVPASSWORD")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = first_line(stdout).await;
    let addr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    let ask = |auth: &str| {
        format!("GET /_api/user HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n")
    };
    for (key, tenant) in [
        ("env.k1.ENVSECRET", "env"),
        ("env2.k.ENVSECRET2", "env2"),
        ("file.k2.FILESECRET", "file"),
    ] {
        let ok = http(&addr, &ask(&format!("apikey {key}"))).await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains(&format!(r#""tenant":"{tenant}""#)),
            "{key}: {ok}"
        );
    }
    let refused = http(&addr, &ask("apikey other.k.s")).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    for body in [
        r#"{"email":"e@x.y","password":"ENVPASSWORD"}"#,
        r#"{"email":"f@x.y","password":"FILEPASSWORD"}"#,
    ] {
        let login = format!(
            "POST /_open/auth HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let ok = http(&addr, &login).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{body}: {ok}");
    }
    let out = signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 API key(s), 2 user(s)"), "{stderr}");
    for secret in ["ENVSECRET", "FILESECRET", "ENVPASSWORD", "FILEPASSWORD"] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

#[test]
fn gdn_local_refuses_a_bad_credentials_file_line_without_printing_it() {
    let file = TempFile::new("apikey a.b.OK\npassword HUNTER2SECRET\n");
    let out = example("gdn-local")
        .arg("--credentials-file")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 2: expected `apikey KEY` or `user EMAIL:PASSWORD`"),
        "{stderr}"
    );
    assert!(!stderr.contains("HUNTER2SECRET"), "{stderr}");
    let missing = example("gdn-local")
        .args(["--credentials-file", "/nonexistent/gdn-local-credentials"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn gdn_local_help_tells_how_to_keep_credentials_out_of_ps() {
    let out = example("gdn-local").arg("--help").output().unwrap();
    let help = text(&out.stdout);
    for needle in [
        "GDN_LOCAL_API_KEYS",
        "GDN_LOCAL_USERS",
        "--credentials-file",
        "ps",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

/// Starts `gdn-local` with these arguments (and `RUST_LOG=trace`) and returns it with the address
/// of its first line.
async fn spawn_gdn_local(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = example("gdn-local")
        .args(args)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            line
        }),
    )
    .await
    .expect("no first line")
    .unwrap();
    let Some(addr) = first.trim_end().strip_prefix("listening on ") else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("first line {first:?}; stderr: {}", text(&out.stderr));
    };
    let addr = addr.to_string();
    (child, addr)
}

/// `request` over TLS to `addr`, trusting only the certificate `pem`; the whole answer, or the
/// TLS error.
async fn https(addr: &str, pem: &str, request: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let talk = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(text(&out))
    };
    tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .expect("gdn-local did not answer")
        .map_err(|e| e.to_string())
}

/// A directory under the temporary directory, removed with its files on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdn_local_keeps_its_certificate_across_restarts_with_tls_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir(TempFile::new("").0.with_extension("tls"));
    let dir_arg = dir.0.to_str().unwrap().to_string();
    let ask = "GET /_api/user HTTP/1.1\r\nHost: x\r\nAuthorization: apikey t.k.s\r\nConnection: close\r\n\r\n";

    let (child, addr) = spawn_gdn_local(&["--port", "0", "--tls-dir", &dir_arg]).await;
    let cert = std::fs::read_to_string(dir.0.join("cert.pem")).unwrap();
    let key = std::fs::read_to_string(dir.0.join("key.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.contains("PRIVATE KEY-----"));
    let mode = std::fs::metadata(dir.0.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key.pem is readable by others: {mode:o}");
    let ok = https(&addr, &cert, ask).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let out = signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Restarted, it serves the same certificate: a client that read it once still connects.
    let (child, addr) = spawn_gdn_local(&["--port", "0", "--tls-dir", &dir_arg]).await;
    assert_eq!(
        std::fs::read_to_string(dir.0.join("cert.pem")).unwrap(),
        cert
    );
    assert_eq!(std::fs::read_to_string(dir.0.join("key.pem")).unwrap(), key);
    let ok = https(&addr, &cert, ask).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let out = signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let key_body = key.lines().nth(1).unwrap();
    assert!(!stderr.contains(key_body), "{stderr}");

    // Without --tls-dir every start has a new certificate, which the old clients reject.
    let (child, addr) = spawn_gdn_local(&["--port", "0"]).await;
    assert!(https(&addr, &cert, ask).await.is_err());
    signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
}

#[test]
fn gdn_local_refuses_a_broken_tls_dir_without_printing_the_key() {
    let dir = TempDir(TempFile::new("").0.with_extension("tls"));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.0.join("key.pem"), "KEYMATERIALSECRET").unwrap();
    let out = example("gdn-local")
        .arg("--tls-dir")
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("do not make a TLS identity"), "{stderr}");
    assert!(!stderr.contains("KEYMATERIALSECRET"), "{stderr}");
    // A key without its certificate is not overwritten.
    std::fs::remove_file(dir.0.join("cert.pem")).unwrap();
    let out = example("gdn-local")
        .arg("--tls-dir")
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.0.join("key.pem")).unwrap(),
        "KEYMATERIALSECRET"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdn_local_injects_the_testkits_faults_from_its_command_line() {
    let (child, addr) = spawn_gdn_local(&[
        "--port",
        "0",
        "--no-tls",
        "--auto-create",
        "--fail-rest-next",
        "1:502",
        "--refuse-next",
        "2:503",
        "--drop-after-frames",
        "0",
    ])
    .await;
    let rest = "GET /_api/user HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let failed = http(&addr, rest).await;
    assert!(failed.starts_with("HTTP/1.1 502"), "{failed}");
    let ok = http(&addr, rest).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let upgrade = "GET /_ws/ws/v2/producer/persistent/t/c8local._system/c8locals.s HTTP/1.1\r\n\
        Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for _ in 0..2 {
        let refused = http(&addr, upgrade).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    }
    // Accepted, then dropped right after the upgrade (`http` reads until the server closes).
    let accepted = http(&addr, upgrade).await;
    assert!(accepted.starts_with("HTTP/1.1 101"), "{accepted}");
    let out = signal_and_wait(child, "-TERM", "gdn-local did not stop on SIGTERM").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn gdn_local_rejects_malformed_fault_flags() {
    for args in [
        ["--refuse-next", "3"],
        ["--refuse-next", "x:503"],
        ["--drop-after-frames-between", "1-2"],
        ["--drop-every", "0"],
    ] {
        let out = example("gdn-local").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn gdn_local_help_tells_that_a_restart_starts_empty_and_lists_the_faults() {
    let out = example("gdn-local").arg("--help").output().unwrap();
    let help = text(&out.stdout);
    for needle in [
        "A restart starts empty",
        "--auto-create",
        "Earliest",
        "--tls-dir",
        "--drop-every",
        "--refuse-next",
        "--drop-after-frames",
        "--max-connections",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
