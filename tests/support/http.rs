//! A raw HTTP/1.1 client over `std::net::TcpStream`, free ports and bounded waits.
//!
//! The client writes the request bytes exactly as given, so a test controls the request
//! target byte for byte (no re-encoding, no normalization). It reads one response per
//! request, framed by `Content-Length`, chunked transfer coding or the end of the
//! connection, and reads no body for HEAD requests and 1xx, 204 and 304 responses. All calls
//! block, so async tests should run them in `tokio::task::spawn_blocking`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Timeout of [`get`] and of the panicking helpers of [`RawConnection`]: 10 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head (status line and headers) accepted: 64 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before this returns, so another process may take it in between;
/// tests bind it right away to keep that window short.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("bound listener has no local address")
        .port()
}

/// Returns `127.0.0.1:<free port>`, see [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `condition` every 20 ms until it returns `true`; returns `false` after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`], but panics with "timed out after .. waiting for {what}".
pub fn wait_for(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// One parsed HTTP/1.1 response.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// The version from the status line, for example `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in the order received, names with their case as sent, values
    /// without the surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// The body after removing the chunked transfer coding, if any.
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Statuses of the interim 1xx responses (such as `100 Continue`) read before this one.
    pub informational: Vec<u16>,
    /// The raw bytes of the status line and header lines, up to and including the empty line.
    pub head: Vec<u8>,
}

/// Returns the value of the first field named `name` (case-insensitive) of `headers`.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Returns the values of every field named `name` (case-insensitive) of `headers`, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl RawResponse {
    /// Returns the value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Returns the values of every header named `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// Returns the body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses the body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {}",
                self.status,
                self.body_text()
            )
        })
    }

    /// Asserts that the body is `expected`; on a mismatch the message gives both lengths
    /// and the first differing offset instead of the bytes.
    pub fn assert_body(&self, expected: &[u8], what: &str) {
        if self.body == expected {
            return;
        }
        let first_difference = self
            .body
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(self.body.len().min(expected.len()));
        let preview = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        panic!(
            "{what}: body of {} bytes differs from the expected {} bytes at offset \
             {first_difference}; status {}, body starts with {preview:?}",
            self.body.len(),
            expected.len(),
            self.status
        );
    }

    /// Returns whether the server asked to close the connection after this response.
    pub fn closes_connection(&self) -> bool {
        self.header_values("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            || self.version == "HTTP/1.0"
    }
}

/// Builds request bytes: `{method} {target} HTTP/1.1`, a `Host` header (unless `headers`
/// has one), `headers` as given, `Content-Length` when there is a body or the method is
/// POST, PUT or PATCH (unless `headers` sets the length or the transfer coding), then the
/// body. `target` is written exactly as given.
pub fn build_request(
    method: &str,
    target: &str,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    if !has("host") {
        out.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let needs_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if needs_length && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends `request` on a new connection to `addr` and reads one response; panics on any
/// connection or parse error, naming the address. `timeout` bounds the whole exchange.
pub fn raw_request(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    try_raw_request(addr, request, timeout).unwrap_or_else(|e| {
        panic!(
            "request to {addr} failed: {e}; request: {:?}",
            String::from_utf8_lossy(request)
        )
    })
}

/// Like [`raw_request`], but returns the error (refused, reset, timed out, malformed).
pub fn try_raw_request(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<RawResponse> {
    let mut connection = RawConnection::open(addr, timeout)?;
    connection.send(request)
}

/// Sends `GET {target} HTTP/1.1` with only a `Host` header and reads the response, with
/// [`DEFAULT_TIMEOUT`]. `target` is sent exactly as written.
pub fn get(addr: SocketAddr, target: &str) -> RawResponse {
    let request = build_request("GET", target, addr, &[], b"");
    raw_request(addr, &request, DEFAULT_TIMEOUT)
}

/// A client connection that can carry several requests (keep-alive, pipelining).
pub struct RawConnection {
    addr: SocketAddr,
    timeout: Duration,
    reader: BufReader<DeadlineStream>,
}

impl RawConnection {
    /// Connects to `addr`; `timeout` bounds the connect and later each [`RawConnection::send`].
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<RawConnection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            addr,
            timeout,
            reader: BufReader::new(DeadlineStream {
                stream,
                deadline: Instant::now() + timeout,
            }),
        })
    }

    /// Returns the address this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes `request` and reads one response. A request whose method is HEAD gets a
    /// response without a body.
    pub fn send(&mut self, request: &[u8]) -> io::Result<RawResponse> {
        self.write(request)?;
        let is_head = request.starts_with(b"HEAD ");
        self.read_response(is_head)
    }

    /// Writes bytes without reading, for example the first half of a request.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().deadline = Instant::now() + self.timeout;
        let stream = &mut self.reader.get_mut().stream;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads the next response; `is_head` marks it as the response to a HEAD request.
    pub fn read_response(&mut self, is_head: bool) -> io::Result<RawResponse> {
        self.reader.get_mut().deadline = Instant::now() + self.timeout;
        let mut informational = Vec::new();
        loop {
            let mut response = read_head(&mut self.reader)?;
            if (100..200).contains(&response.status) && response.status != 101 {
                informational.push(response.status);
                continue;
            }
            response.informational = informational;
            read_body(&mut self.reader, &mut response, is_head)?;
            return Ok(response);
        }
    }

    /// Sends `GET {target}` with a `Host` header on this connection; panics on errors.
    pub fn get(&mut self, target: &str) -> RawResponse {
        self.request("GET", target, &[])
    }

    /// Sends a request without a body built by [`build_request`]; panics on errors.
    pub fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        let request = build_request(method, target, self.addr, headers, b"");
        self.send(&request).unwrap_or_else(|e| {
            panic!(
                "{method} {target} on a kept-alive connection to {} failed: {e}",
                self.addr
            )
        })
    }

    /// Returns whether the server has closed the connection, waiting at most `timeout`
    /// for the close. Unread response bytes count as "not closed".
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        self.reader.get_mut().deadline = Instant::now() + timeout;
        matches!(self.reader.fill_buf(), Ok([]))
    }
}

/// A socket whose reads fail with `TimedOut` once `deadline` has passed.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(remaining))?;
        match self.stream.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(timed_out())
            }
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no complete response before the timeout",
    )
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one line including its `\n`; an empty result means the peer closed the connection.
fn read_line(reader: &mut impl BufRead, head: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    head.extend_from_slice(&line);
    if head.len() > MAX_HEAD_BYTES {
        return Err(invalid(format!(
            "response head is over {MAX_HEAD_BYTES} bytes"
        )));
    }
    Ok(line)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn read_head(reader: &mut impl BufRead) -> io::Result<RawResponse> {
    let mut head = Vec::new();
    let status_line = read_line(reader, &mut head)?;
    if status_line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status_text = String::from_utf8_lossy(trim_line_end(&status_line)).into_owned();
    let mut parts = status_text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/"))
        .ok_or_else(|| invalid(format!("malformed status line {status_text:?}")))?;
    let reason = parts.next().unwrap_or_default().to_string();

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut head)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the response head",
            ));
        }
        let line = trim_line_end(&line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(invalid(format!("malformed header line {text:?}")));
        };
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        headers.push((name.to_string(), value.to_string()));
    }

    Ok(RawResponse {
        version,
        status,
        reason,
        headers,
        head,
        ..RawResponse::default()
    })
}

fn read_body(
    reader: &mut impl BufRead,
    response: &mut RawResponse,
    is_head: bool,
) -> io::Result<()> {
    if is_head || matches!(response.status, 100..=199 | 204 | 304) {
        return Ok(());
    }

    let chunked = response
        .header_values("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.chunked = true;
        response.body = read_chunked(reader)?;
        return Ok(());
    }

    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("invalid Content-Length {length:?}")))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        response.body = body;
        return Ok(());
    }

    reader.read_to_end(&mut response.body)?;
    Ok(())
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    loop {
        let line = read_line(reader, &mut scratch)?;
        let text = String::from_utf8_lossy(trim_line_end(&line)).into_owned();
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("malformed chunk size line {text:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let end = read_line(reader, &mut scratch)?;
        if !trim_line_end(&end).is_empty() {
            return Err(invalid("chunk data is not followed by CRLF".to_string()));
        }
        scratch.clear();
    }
    // Trailer fields, up to the empty line.
    loop {
        let line = read_line(reader, &mut scratch)?;
        if line.is_empty() || trim_line_end(&line).is_empty() {
            return Ok(body);
        }
    }
}
