//! A small HTTP/1.1 server side: reads request heads and bodies (`Content-Length` or chunked),
//! tells WebSocket upgrades from REST calls, and writes JSON responses. Enough for the GDN
//! SDKs and `reqwest`; not a general web server.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers in one request.
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target as sent: path and query.
    pub(crate) target: String,
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

    /// Whether the client wants to go on with another request on this connection.
    fn keep_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
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
                    let upgrade = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("upgrade")
                            && String::from_utf8_lossy(h.value)
                                .trim()
                                .eq_ignore_ascii_case("websocket")
                    });
                    if upgrade {
                        return Ok(Next::Upgrade);
                    }
                    let method = req.method.unwrap_or("GET").to_string();
                    let target = req.path.unwrap_or("/").to_string();
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
                Err(_) => return Err(ReadError::Bad(400, "malformed HTTP request")),
            }
        }
    }

    async fn read_body(&mut self, req: &Request, max_body: usize) -> Result<Bytes, ReadError> {
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return self.read_chunked(max_body).await;
        }
        let len = match req.header("content-length") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ReadError::Bad(400, "bad Content-Length"))?,
        };
        if len > max_body {
            return Err(ReadError::Bad(413, "request body too large"));
        }
        self.read_exact(len).await
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
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                .ok_or(ReadError::Bad(400, "bad chunk size"))?;
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

    /// Writes a response; returns whether the connection may serve another request.
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
        self.io.write_all(&bytes).await?;
        self.io.flush().await?;
        Ok(keep)
    }
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
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
