//! `gdn-local`: the embedded server as a standalone offline GDN, for users of any language.
//!
//! ```text
//! cargo run --release --example gdn-local -- [--port N] [--api-key KEY]... \
//!     [--user EMAIL:PASSWORD]... [--credentials-file PATH] [--cert-out FILE] [--auto-create]
//! ```
//!
//! Credentials given as arguments are visible to every local user in `ps`; give them in the
//! environment (`GDN_LOCAL_API_KEYS=k1,k2`, `GDN_LOCAL_USERS=email:password,...`) or in a file
//! (`--credentials-file`) instead. All sources add up.
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

/// Where credentials can come from, for `--help`.
const CREDENTIALS_HELP: &str = "\
Credentials (all sources add up; without any the server is open):
  --api-key KEY, --user EMAIL:PASSWORD   visible to other local users in `ps`: prefer
  GDN_LOCAL_API_KEYS=KEY1,KEY2           comma-separated API keys, or
  GDN_LOCAL_USERS=EMAIL:PASSWORD,...     comma-separated users, or
  --credentials-file PATH                one `apikey KEY` or `user EMAIL:PASSWORD` per line
                                         (blank lines and lines starting with # are skipped)";

/// An offline Macrometa GDN stand-in: REST and stream sockets, plain and TLS, on one port.
#[derive(Debug, Parser)]
#[command(name = "gdn-local", after_help = CREDENTIALS_HELP)]
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
    /// Read API keys and users from this file: one `apikey KEY` or `user EMAIL:PASSWORD` per
    /// line, blank lines and `#` comments skipped. Keeps them out of `ps`.
    #[arg(long, value_name = "PATH")]
    credentials_file: Option<PathBuf>,
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

/// The API keys and users from the command line, the environment (`GDN_LOCAL_API_KEYS`,
/// `GDN_LOCAL_USERS`, comma-separated) and `--credentials-file`. Errors name the source and line,
/// never a secret.
fn credentials(cli: &Cli) -> Result<(Vec<String>, Vec<String>), String> {
    let mut keys = cli.api_keys.clone();
    let mut users = cli.users.clone();
    let list = |name: &str| -> Result<Vec<String>, String> {
        match std::env::var(name) {
            Ok(v) => Ok(v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()),
            Err(std::env::VarError::NotPresent) => Ok(Vec::new()),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
        }
    };
    keys.extend(list("GDN_LOCAL_API_KEYS")?);
    users.extend(list("GDN_LOCAL_USERS")?);
    if let Some(path) = &cli.credentials_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let value = value.trim();
            match kind {
                "apikey" if !value.is_empty() => keys.push(value.to_string()),
                "user" if !value.is_empty() => users.push(value.to_string()),
                _ => {
                    return Err(format!(
                        "{} line {}: expected `apikey KEY` or `user EMAIL:PASSWORD`",
                        path.display(),
                        i + 1
                    ))
                }
            }
        }
    }
    Ok((keys, users))
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
    let (api_keys, users) = match credentials(&cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    for key in &api_keys {
        config = config.api_key(key.as_str());
    }
    for user in &users {
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
        match (api_keys.len(), users.len()) {
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
