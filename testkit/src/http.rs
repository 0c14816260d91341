//! A small HTTP/1.1 server side: reads request heads and bodies (`Content-Length` or chunked),
//! tells WebSocket upgrades from REST calls, and writes JSON responses. Enough for the GDN
//! SDKs and `reqwest`; not a general web server.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request head (request line and headers) accepted: larger gets 431.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers in one request: more gets 431.
const MAX_HEADERS: usize = 64;
/// How long a write of a response may make no progress (the client reads nothing) before the
/// connection is closed.
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(10);
/// After answering with `connection: close`, how long, and how many bytes, the server goes on
/// reading (and discarding) what the client still sends, so that the client sees the answer
/// instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target as sent: path and query.
    pub(crate) target: String,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by case-insensitive name.
    fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants to go on with another request on this connection: HTTP/1.1
    /// unless `Connection` names `close`, HTTP/1.0 only if it names `keep-alive`.
    fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers("connection")
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.version == 0 {
            has("keep-alive") && !has("close")
        } else {
            !has("close")
        }
    }
}

/// How a request's body is framed.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// The framing of a body from its headers, strictly (RFC 9112 §6): at most one
/// `Content-Length`, of digits only; `Transfer-Encoding` (over all its headers) must end with a
/// single `chunked` and name no other coding (501), and excludes `Content-Length`.
fn framing(req: &Request) -> Result<Framing, ReadError> {
    let lengths: Vec<&str> = req.headers("content-length").collect();
    let codings: Vec<String> = req
        .headers("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let has_te = req.headers("transfer-encoding").next().is_some();
    if has_te {
        if !lengths.is_empty() {
            return Err(ReadError::Bad(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        let last_chunked = codings.last().is_some_and(|c| c == "chunked");
        let unknown = codings.iter().any(|c| c != "chunked" && !known_coding(c));
        if chunked > 1 || (!last_chunked && !unknown) {
            return Err(ReadError::Bad(
                400,
                "chunked must be the last transfer coding, once",
            ));
        }
        if codings.len() > 1 || unknown {
            return Err(ReadError::Bad(501, "unsupported transfer coding"));
        }
        return Ok(Framing::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Length(0)),
        [one] if !one.is_empty() && one.bytes().all(|b| b.is_ascii_digit()) => one
            .parse()
            .map(Framing::Length)
            .map_err(|_| ReadError::Bad(413, "request body too large")),
        [_] => Err(ReadError::Bad(400, "bad Content-Length")),
        _ => Err(ReadError::Bad(400, "more than one Content-Length")),
    }
}

/// The registered transfer codings other than `chunked`.
fn known_coding(c: &str) -> bool {
    matches!(c, "compress" | "deflate" | "gzip" | "x-compress" | "x-gzip")
}

/// Checks what the WebSocket handshake needs (RFC 6455 §4.2.1), so that a bad upgrade gets a
/// 400 answer rather than a closed connection.
fn check_upgrade(req: &httparse::Request<'_, '_>) -> Result<(), ReadError> {
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .collect::<Vec<_>>()
    };
    if req.method != Some("GET") {
        return Err(ReadError::Bad(400, "a WebSocket upgrade must be a GET"));
    }
    if req.version != Some(1) {
        return Err(ReadError::Bad(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    let connection_upgrade = header("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(ReadError::Bad(
            400,
            "a WebSocket upgrade needs Connection: Upgrade",
        ));
    }
    if header("sec-websocket-version") != ["13"] {
        return Err(ReadError::Bad(400, "Sec-WebSocket-Version must be 13"));
    }
    match header("sec-websocket-key").as_slice() {
        [key] if !key.is_empty() => Ok(()),
        _ => Err(ReadError::Bad(
            400,
            "a WebSocket upgrade needs one Sec-WebSocket-Key",
        )),
    }
}

/// What the next bytes of a connection are.
pub(crate) enum Next {
    /// A REST call, body read.
    Rest(Request),
    /// A WebSocket upgrade: nothing consumed; the buffered bytes start with its head.
    Upgrade,
    /// The client closed the connection between requests.
    Closed,
}

/// Why a request could not be read: answered with this status, then the connection closes.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A connection's transport and what has been read from it but not used yet.
pub(crate) struct Conn<S> {
    pub(crate) io: S,
    pub(crate) buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        self.buf.reserve(4096);
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// Reads the next request. Bodies larger than `max_body` are refused with 413.
    pub(crate) async fn next(&mut self, max_body: usize) -> Result<Next, ReadError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    if head_len > MAX_HEAD {
                        return Err(ReadError::Bad(431, "request head too large"));
                    }
                    let upgrade = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("upgrade")
                            && String::from_utf8_lossy(h.value)
                                .trim()
                                .eq_ignore_ascii_case("websocket")
                    });
                    if upgrade {
                        check_upgrade(&req)?;
                        return Ok(Next::Upgrade);
                    }
                    let method = req.method.unwrap_or("GET").to_string();
                    let target = req.path.unwrap_or("/").to_string();
                    let version = req.version.unwrap_or(1);
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect();
                    self.buf.advance(head_len);
                    let mut request = Request {
                        method,
                        target,
                        version,
                        headers,
                        body: Bytes::new(),
                    };
                    request.body = self.read_body(&request, max_body).await?;
                    return Ok(Next::Rest(request));
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(ReadError::Bad(431, "request head too large"));
                    }
                    if !self.fill().await? {
                        return if self.buf.is_empty() {
                            Ok(Next::Closed)
                        } else {
                            Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
                        };
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ReadError::Bad(431, "too many request headers"))
                }
                Err(_) => return Err(ReadError::Bad(400, "malformed HTTP request")),
            }
        }
    }

    async fn read_body(&mut self, req: &Request, max_body: usize) -> Result<Bytes, ReadError> {
        match framing(req)? {
            Framing::Chunked => self.read_chunked(max_body).await,
            Framing::Length(len) if len > max_body => {
                Err(ReadError::Bad(413, "request body too large"))
            }
            Framing::Length(len) => self.read_exact(len).await,
        }
    }

    async fn read_exact(&mut self, len: usize) -> Result<Bytes, ReadError> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// A line ending in CRLF, without it.
    async fn read_line(&mut self) -> Result<Bytes, ReadError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Bad(400, "chunk header too long"));
            }
            if !self.fill().await? {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = chunk_size(&line).ok_or(ReadError::Bad(400, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body.freeze());
            }
            if body.len().saturating_add(size) > max_body {
                return Err(ReadError::Bad(413, "request body too large"));
            }
            let chunk = self.read_exact(size).await?;
            body.extend_from_slice(&chunk);
            if !self.read_line().await?.is_empty() {
                return Err(ReadError::Bad(400, "chunk not followed by CRLF"));
            }
        }
    }

    /// Writes a response; returns whether the connection may serve another request. Without
    /// `req` (an unreadable request) or when the client asked to close, the answer says
    /// `connection: close`, and the server then half-closes and lingers (reading and discarding
    /// for up to 2 s or 1 MiB) so that the client reads the answer rather than a reset. A write
    /// that makes no progress for [`WRITE_STALL`] fails with `TimedOut`.
    pub(crate) async fn respond(
        &mut self,
        req: Option<&Request>,
        resp: &Response,
    ) -> io::Result<bool> {
        let keep = req.is_some_and(Request::keep_alive);
        let reason = reason(resp.status);
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nx-gdn-region: local\r\n",
            resp.status,
            resp.body.len()
        );
        out.push_str(if keep {
            "connection: keep-alive\r\n\r\n"
        } else {
            "connection: close\r\n\r\n"
        });
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&resp.body);
        self.write_all(&bytes).await?;
        if !keep {
            self.linger().await;
        }
        Ok(keep)
    }

    /// Writes and flushes everything, failing with `TimedOut` if a write makes no progress for
    /// [`WRITE_STALL`] (a client that sends requests but never reads the answers).
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "client reads nothing");
        while !bytes.is_empty() {
            let n = tokio::time::timeout(WRITE_STALL, self.io.write(bytes))
                .await
                .map_err(|_| stalled())??;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        tokio::time::timeout(WRITE_STALL, self.io.flush())
            .await
            .map_err(|_| stalled())?
    }

    /// Half-closes, then reads and discards what the client still sends, for a bounded time
    /// and amount, so that closing does not reset the connection under the answer.
    async fn linger(&mut self) {
        let _ = tokio::time::timeout(WRITE_STALL, self.io.shutdown()).await;
        let mut discarded = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            let mut scratch = [0u8; 8192];
            while discarded < LINGER_BYTES {
                match self.io.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
            }
        })
        .await;
    }
}

/// A chunk-size line (RFC 9112 §7.1): hex digits only, optionally followed by `;` and
/// extensions (whitespace allowed before the `;`).
fn chunk_size(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?;
    let size = line.split(';').next()?.trim_end_matches([' ', '\t']);
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(size, 16).ok()
}

/// A JSON response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A 2xx reply in GDN's shape: `{"error":false,"code":200,"result":…}`. (No `errorNum` key:
    /// pyC8 takes any `errorNum` as a failure.)
    pub(crate) fn result(result: serde_json::Value) -> Response {
        Response::json(
            200,
            serde_json::json!({"error": false, "code": 200, "result": result}),
        )
    }

    /// Any JSON body.
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    /// An error in GDN's shape: `{"error":true,"code":…,"errorMessage":…,"errorNum":…}`.
    pub(crate) fn error(status: u16, error_num: u32, message: &str) -> Response {
        Response::json(
            status,
            serde_json::json!({
                "error": true,
                "code": status,
                "errorMessage": message,
                "errorNum": error_num,
            }),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
