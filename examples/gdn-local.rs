//! `gdn-local`: the embedded server as a standalone offline GDN, for users of any language.
//!
//! ```text
//! cargo run --release --example gdn-local -- [--port N] [--api-key KEY]... \
//!     [--user EMAIL:PASSWORD]... [--cert-out FILE] [--auto-create]
//! ```
//!
//! It serves GDN's REST calls and stream sockets on `127.0.0.1:<port>`, plain and TLS on the
//! same port, with a self-signed certificate for `127.0.0.1` and `localhost` that `--cert-out`
//! writes (PEM) before the first line is printed. The first stdout line is exactly
//! `listening on 127.0.0.1:<port>`. It runs until Ctrl-C or SIGTERM. `RUST_LOG=debug` shows
//! every call; no key, password, JWT or one-time password is ever printed.
//!
//! Point the SDKs at it (see the README, "Offline GDN"):
//! - pyC8: `C8Client(protocol='https', host='127.0.0.1:<port>/api-', port=443, apikey=KEY)`
//!   with `REQUESTS_CA_BUNDLE` and `WEBSOCKET_CLIENT_CA_BUNDLE` set to the certificate file;
//! - jsc8: `new jsc8({url: 'https://gdn@127.0.0.1:<port>', apiKey: KEY})` with
//!   `NODE_EXTRA_CA_CERTS` set to it.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stream_websocket_testkit::{LocalServer, ServerConfig};

/// An offline Macrometa GDN stand-in: REST and stream sockets, plain and TLS, on one port.
#[derive(Debug, Parser)]
#[command(name = "gdn-local")]
struct Cli {
    /// Port on 127.0.0.1 (0: any free port; the first line tells which).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Accept this API key (repeat for several). Its tenant is the key without its last two
    /// dot-separated parts (`acme.key1.secret` → `acme`). Without keys or users the server
    /// is open: it accepts any credentials.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// Accept this user for email login (repeat for several). Tenant: the email with `@`
    /// replaced by `_`.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    users: Vec<String>,
    /// Write the self-signed certificate (PEM) here before listening.
    #[arg(long, value_name = "FILE")]
    cert_out: Option<PathBuf>,
    /// Let a producer or consumer create its stream by connecting (default: streams must be
    /// created over REST first, as on GDN).
    #[arg(long)]
    auto_create: bool,
    /// Serve plain text only (the official SDKs need TLS).
    #[arg(long)]
    no_tls: bool,
}

fn fail(message: &str) -> ExitCode {
    eprintln!("gdn-local: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    let cli = Cli::parse();
    let mut config = ServerConfig::default()
        .port(cli.port)
        .auto_create_streams(cli.auto_create)
        .tls(!cli.no_tls);
    for key in &cli.api_keys {
        config = config.api_key(key.as_str());
    }
    for user in &cli.users {
        let Some((email, password)) = user.split_once(':') else {
            return fail("--user takes EMAIL:PASSWORD");
        };
        config = config.user(email, password);
    }
    let server = match LocalServer::start_with(config).await {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot listen on 127.0.0.1:{}: {e}", cli.port)),
    };
    if let Some(path) = &cli.cert_out {
        let Some(pem) = server.certificate_pem() else {
            return fail("--cert-out needs TLS (drop --no-tls)");
        };
        if let Err(e) = std::fs::write(path, pem) {
            return fail(&format!("cannot write {}: {e}", path.display()));
        }
    }
    let stop = match shutdown_signal() {
        Ok(stop) => stop,
        Err(e) => return fail(&format!("cannot handle Ctrl-C or SIGTERM: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", server.addr());
    let _ = out.flush();
    drop(out);
    eprintln!(
        "gdn-local: REST {} (and {}), sockets {} (and {}); {}; Ctrl-C to stop",
        server.http_url(),
        server.https_url(),
        server.ws_url(),
        server.wss_url(),
        match (cli.api_keys.len(), cli.users.len()) {
            (0, 0) => "open: any credentials".to_string(),
            (k, u) => format!("{k} API key(s), {u} user(s)"),
        }
    );
    stop.await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Waits for Ctrl-C, or SIGTERM on Unix. The handlers are installed when this is called, not
/// when the future is first polled: call it before announcing the server, so that a signal sent
/// right after the first line stops it cleanly instead of killing it.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
        Ok(async move {
            ctrl_c.recv().await;
        })
    }
}
