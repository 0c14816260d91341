//! `gdn-local`: the embedded server as a standalone offline GDN, for users of any language.
//!
//! ```text
//! cargo run --release --example gdn-local -- [--port N] [--api-key KEY]... \
//!     [--user EMAIL:PASSWORD]... [--credentials-file PATH] [--cert-out FILE] [--tls-dir DIR] \
//!     [--auto-create]
//! ```
//!
//! Credentials given as arguments are visible to every local user in `ps`; give them in the
//! environment (`GDN_LOCAL_API_KEYS=k1,k2`, `GDN_LOCAL_USERS=email:password,...`) or in a file
//! (`--credentials-file`) instead. All sources add up.
//!
//! Everything is kept in memory: a restart starts with no streams, messages or subscriptions
//! (`--auto-create` and consumers that subscribe from the earliest position recover what is
//! published after it). Fault flags (`--drop-every MS`, `--drop-after-frames N`,
//! `--drop-after-frames-between LO:HI`, `--refuse-next K:STATUS`,
//! `--refuse-fraction FRACTION:STATUS`, `--fail-rest-next K:STATUS`, `--fault-seed N`) make it
//! misbehave as the testkit's `LocalServer` methods of the same names do, for clients in any
//! language.
//!
//! It serves GDN's REST calls and stream sockets on `127.0.0.1:<port>`, plain and TLS on the
//! same port, with a self-signed certificate for `127.0.0.1` and `localhost` that `--cert-out`
//! writes (PEM) before the first line is printed. With `--tls-dir DIR` the key and certificate
//! are kept in `DIR` (`key.pem`, `cert.pem`) and reused on the next start, so clients that
//! trust the certificate keep trusting it after a restart. The first stdout line is exactly
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
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stream_websocket_testkit::{LocalServer, ServerConfig, TlsIdentity};

/// Where credentials can come from, and what a restart keeps, for `--help`.
const AFTER_HELP: &str = "\
State: everything is kept in memory. A restart starts empty: no streams, messages or
subscriptions (and a new certificate unless --tls-dir is given). Clients recover everything
they publish after the restart with --auto-create (so that reconnecting creates their streams
again) and consumers that subscribe from the earliest position
(subscriptionInitialPosition=Earliest).

Credentials (all sources add up; without any the server is open):
  --api-key KEY, --user EMAIL:PASSWORD   visible to other local users in `ps`: prefer
  GDN_LOCAL_API_KEYS=KEY1,KEY2           comma-separated API keys, or
  GDN_LOCAL_USERS=EMAIL:PASSWORD,...     comma-separated users, or
  --credentials-file PATH                one `apikey KEY` or `user EMAIL:PASSWORD` per line
                                         (blank lines and lines starting with # are skipped)";

/// An offline Macrometa GDN stand-in: REST and stream sockets, plain and TLS, on one port.
#[derive(Debug, Parser)]
#[command(name = "gdn-local", after_help = AFTER_HELP)]
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
    /// Keep the TLS key and certificate in this directory across restarts: use `cert.pem`
    /// and `key.pem` there if both exist, else (if neither does) generate them and write them there (the key
    /// readable by its owner only). Without it every start makes a new certificate, which
    /// clients that trusted the old one reject.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Serve plain text only (the official SDKs need TLS).
    #[arg(long)]
    no_tls: bool,
    /// At most this many connections open at once (REST and sockets); more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_connections: usize,
    /// Fault: drop every open connection abruptly once every MS milliseconds.
    #[arg(long, value_name = "MS", help_heading = "Fault injection")]
    drop_every: Option<u64>,
    /// Fault: drop each connection abruptly once it has handled N frames (0: right after its
    /// upgrade).
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    drop_after_frames: Option<u64>,
    /// Fault: drop each connection after a number of frames drawn for it from LO to HI.
    #[arg(long, value_name = "LO:HI", value_parser = pair::<u64, u64>, help_heading = "Fault injection")]
    drop_after_frames_between: Option<(u64, u64)>,
    /// Fault: refuse the first K socket upgrades with HTTP STATUS (300-599, else 503).
    #[arg(long, value_name = "K:STATUS", value_parser = pair::<usize, u16>, help_heading = "Fault injection")]
    refuse_next: Option<(usize, u16)>,
    /// Fault: refuse this share (0 to 1) of socket upgrades with HTTP STATUS.
    #[arg(long, value_name = "FRACTION:STATUS", value_parser = pair::<f64, u16>, help_heading = "Fault injection")]
    refuse_fraction: Option<(f64, u16)>,
    /// Fault: answer the first K REST calls with HTTP STATUS (400-599, else 503) and a GDN
    /// error body.
    #[arg(long, value_name = "K:STATUS", value_parser = pair::<usize, u16>, help_heading = "Fault injection")]
    fail_rest_next: Option<(usize, u16)>,
    /// Seed of the random faults (--drop-after-frames-between, --refuse-fraction), to repeat
    /// a run.
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    fault_seed: Option<u64>,
}

/// Parses `A:B`.
fn pair<A: std::str::FromStr, B: std::str::FromStr>(s: &str) -> Result<(A, B), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected two values separated by `:`, got `{s}`"))?;
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(format!("cannot read `{s}`")),
    }
}

/// The TLS identity kept in `dir`: `cert.pem` and `key.pem` if both exist, else a new one
/// written there. Errors name the file, never the key.
fn tls_identity(dir: &Path) -> Result<TlsIdentity, String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let (cert, key) = (read(&cert_path)?, read(&key_path)?);
        return TlsIdentity::from_pem(cert, key).map_err(|e| {
            format!(
                "{} and {} do not make a TLS identity: {e}",
                cert_path.display(),
                key_path.display()
            )
        });
    }
    for (present, missing) in [(&cert_path, &key_path), (&key_path, &cert_path)] {
        if present.exists() && !missing.exists() {
            return Err(format!(
                "{} exists without {}: add it, or remove both to make new ones",
                present.display(),
                missing.display()
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let identity = TlsIdentity::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    write_private(&key_path, identity.key_pem())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    std::fs::write(&cert_path, identity.cert_pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    Ok(identity)
}

/// Writes a file only its owner may read (on Unix; elsewhere as the directory allows).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
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
    if let Some(dir) = &cli.tls_dir {
        if cli.no_tls {
            return fail("--tls-dir needs TLS (drop --no-tls)");
        }
        match tls_identity(dir) {
            Ok(identity) => config = config.tls_identity(identity),
            Err(e) => return fail(&e),
        }
    }
    config = config.max_connections(cli.max_connections);
    if let Some(seed) = cli.fault_seed {
        config = config.fault_seed(seed);
    }
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
    if let Some(ms) = cli.drop_every {
        if ms == 0 {
            return fail("--drop-every takes a period of at least 1 ms");
        }
        server.drop_every(Some(Duration::from_millis(ms)));
    }
    server.drop_after_frames(cli.drop_after_frames);
    server.drop_after_frames_between(cli.drop_after_frames_between.map(|(lo, hi)| lo..=hi));
    if let Some((k, status)) = cli.refuse_next {
        server.refuse_next(k, status);
    }
    if let Some((fraction, status)) = cli.refuse_fraction {
        server.refuse_fraction(fraction, status);
    }
    if let Some((k, status)) = cli.fail_rest_next {
        server.fail_rest_next(k, status);
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
