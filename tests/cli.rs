//! The `producer` and `consumer` command-line examples against the embedded server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use stream_websocket::testkit::{LocalServer, ServerConfig};

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
    [
        "--server",
        &server.ws_url(),
        "--tenant",
        "acme",
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
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
    while server.stats().connections_open == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
        r#"{"received":25,"redelivered":0,"reconnects":0}"#
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
    while server.stats().connections_open == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the consumer did not stop on Ctrl-C")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap(),
        r#"{"received":0,"redelivered":0,"reconnects":0}"#
    );
    server.shutdown().await;
}
