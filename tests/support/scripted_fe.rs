//! A fake FE written at the socket level: it records every request byte for byte, numbers
//! the TCP connections it accepts, and sends replies that a test scripts byte for byte.
//!
//! [`super::FakeFe`] is a hyper server, so it cannot show which connection a request came
//! on, cannot send a header exactly as written, and cannot close a connection at a chosen
//! moment. This server can:
//! - `GET /api/health`: 200 with `{"code":0}`, so the proxy's health check passes;
//! - a path set with [`ScriptedFe::reply_to`]: the scripted [`Reply`];
//! - anything else: 200 with the request body as the response body and the connection
//!   number in `x-connection`.
//!
//! Request bodies are read by `Content-Length` or chunked transfer coding. Each connection
//! has its own thread; everything listens on 127.0.0.1 and stops on drop.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Path of the health endpoint that the proxy's health check requests.
const HEALTH_PATH: &str = "/api/health";

/// Largest request head read: 1 MiB, about the request head limit of Pingora 0.9's HTTP/1
/// server.
const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// How often the accept loop and stalled connections check whether they should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Maximum time a stalled connection is kept open unread.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct ScriptedRequest {
    /// Number of the TCP connection it came on, from 1 in accept order.
    pub connection: usize,
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    /// Header fields in the order sent, names in the case sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The request line and header lines as received, up to and including the empty line.
    pub head: Vec<u8>,
    /// The body after removing the chunked transfer coding, if any.
    pub body: Vec<u8>,
}

impl ScriptedRequest {
    /// Returns the path: the target up to the first `?`.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Returns the value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header_value(&self.headers, name)
    }

    /// Returns the values of every header named `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        super::http::header_values(&self.headers, name)
    }
}

/// A scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status line and header lines, each ending in CRLF, without the final empty line.
    pub head: String,
    pub body: Vec<u8>,
    /// Read the request body before replying. When false the body is left unread, as an FE
    /// does when it redirects a stream load.
    pub read_body: bool,
    /// Close the connection right after the reply, without a `Connection: close` header.
    pub close_after: bool,
    /// Never reply and never read the body: after the head, the connection stays open
    /// unread until the FE stops or [`STALL_LIMIT`] passes.
    pub stall: bool,
}

impl Reply {
    /// Builds a reply with `Content-Length` set from `body`, after reading the request body,
    /// on a connection that stays open. `headers` are written exactly as given.
    pub fn new(status_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut head = format!("{status_line}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        Reply {
            head,
            body: body.to_vec(),
            read_body: true,
            close_after: false,
            stall: false,
        }
    }

    /// Leaves the request body unread and never replies, like an FE that hangs while a
    /// client uploads.
    pub fn stalled(mut self) -> Reply {
        self.read_body = false;
        self.stall = true;
        self
    }

    /// Leaves the request body unread.
    pub fn without_reading_body(mut self) -> Reply {
        self.read_body = false;
        self
    }

    /// Closes the connection after the reply.
    pub fn then_close(mut self) -> Reply {
        self.close_after = true;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone().into_bytes();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[derive(Default)]
struct State {
    connections: AtomicUsize,
    requests: Mutex<Vec<ScriptedRequest>>,
    replies: Mutex<HashMap<String, Reply>>,
    /// Clones of the open sockets by connection number, shut down on stop so their
    /// threads end.
    open: Mutex<HashMap<usize, TcpStream>>,
    stopping: AtomicBool,
}

/// A running socket-level fake FE; stopped on drop.
pub struct ScriptedFe {
    name: String,
    addr: SocketAddr,
    state: Arc<State>,
    accept_thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl ScriptedFe {
    /// Starts serving on `127.0.0.1:<free port>`.
    pub fn start(name: &str) -> ScriptedFe {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let accept_thread = std::thread::Builder::new()
            .name(format!("scripted-fe-{name}"))
            .spawn(move || accept_loop(listener, accept_state))
            .expect("cannot spawn the scripted FE thread");
        ScriptedFe {
            name: name.to_string(),
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `reply` to every later request whose path (the target without its query) is
    /// `path`.
    pub fn reply_to(&self, path: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// Returns a copy of every request received so far, health checks included.
    pub fn requests(&self) -> Vec<ScriptedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Returns the requests whose path (the target without its query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<ScriptedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }

    /// Returns how many TCP connections were accepted so far, health checks included.
    pub fn connections_accepted(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Returns how many distinct connections carried requests other than health checks.
    pub fn connections_used_by_proxied_requests(&self) -> usize {
        let mut connections: Vec<usize> = self
            .requests()
            .iter()
            .filter(|r| r.path() != HEALTH_PATH)
            .map(|r| r.connection)
            .collect();
        connections.sort_unstable();
        connections.dedup();
        connections.len()
    }

    /// Returns whether connection number `connection` is still open: neither side has
    /// closed it.
    pub fn is_connection_open(&self, connection: usize) -> bool {
        self.state.open.lock().unwrap().contains_key(&connection)
    }

    /// Closes the listener and every open connection, and waits for their threads.
    pub fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.state.stopping.store(true, Ordering::SeqCst);
        let connection_threads = accept_thread.join().unwrap_or_default();
        for (_, stream) in self.state.open.lock().unwrap().drain() {
            // The peer may have closed the socket already.
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in connection_threads {
            if thread.join().is_err() {
                eprintln!("scripted FE {}: a connection thread panicked", self.name);
            }
        }
    }
}

impl Drop for ScriptedFe {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    while !state.stopping.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                eprintln!("scripted FE: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let number = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if let Ok(clone) = stream.try_clone() {
            state.open.lock().unwrap().insert(number, clone);
        }
        let connection_state = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            // An error ends the connection, which is all a closed or reset peer needs.
            let _ = serve_connection(stream, number, &connection_state);
            connection_state.open.lock().unwrap().remove(&number);
        });
        threads.push(thread);
    }
    threads
}

fn serve_connection(stream: TcpStream, number: usize, state: &State) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some((mut request, length)) = read_head(&mut reader, number)? else {
            return Ok(());
        };
        let reply = state.replies.lock().unwrap().get(request.path()).cloned();
        if reply.as_ref().is_some_and(|r| r.stall) {
            state.requests.lock().unwrap().push(request);
            let started = std::time::Instant::now();
            while !state.stopping.load(Ordering::SeqCst) && started.elapsed() < STALL_LIMIT {
                std::thread::sleep(ACCEPT_POLL);
            }
            return Ok(());
        }
        let read_body = reply.as_ref().is_none_or(|r| r.read_body);
        let has_body = !matches!(length, BodyLength::None | BodyLength::Bytes(0));
        if read_body {
            request.body = read_body_bytes(&mut reader, &length)?;
        }
        let reply = reply.unwrap_or_else(|| default_reply(&request));
        state.requests.lock().unwrap().push(request);

        writer.write_all(&reply.bytes())?;
        writer.flush()?;
        if reply.close_after || (has_body && !read_body) {
            // Unread body bytes would be taken for the next request.
            writer.shutdown(Shutdown::Both)?;
            return Ok(());
        }
    }
}

/// How the request body is framed.
enum BodyLength {
    None,
    Bytes(usize),
    Chunked,
}

fn read_line(reader: &mut impl BufRead, head: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    head.extend_from_slice(&line);
    if head.len() > MAX_HEAD_BYTES {
        return Err(invalid("request head over the limit"));
    }
    Ok(line)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Reads one request head, or returns `None` when the peer closed the connection between
/// requests.
fn read_head(
    reader: &mut impl BufRead,
    connection: usize,
) -> io::Result<Option<(ScriptedRequest, BodyLength)>> {
    let mut head = Vec::new();
    let request_line = read_line(reader, &mut head)?;
    if request_line.is_empty() {
        return Ok(None);
    }
    let request_line = String::from_utf8_lossy(trim_line_end(&request_line)).into_owned();
    let mut parts = request_line.splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut head)?;
        if line.is_empty() {
            return Err(invalid("connection closed inside the request head"));
        }
        let line = trim_line_end(&line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid("header line without a colon"))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }

    let request = ScriptedRequest {
        connection,
        method,
        target,
        headers,
        head,
        body: Vec::new(),
    };
    let chunked = request
        .header_values("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = if chunked {
        BodyLength::Chunked
    } else if let Some(length) = request.header("content-length") {
        BodyLength::Bytes(length.parse().map_err(|_| invalid("bad Content-Length"))?)
    } else {
        BodyLength::None
    };
    Ok(Some((request, length)))
}

fn read_body_bytes(reader: &mut impl BufRead, length: &BodyLength) -> io::Result<Vec<u8>> {
    match length {
        BodyLength::None => Ok(Vec::new()),
        BodyLength::Bytes(length) => {
            let mut body = vec![0; *length];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        BodyLength::Chunked => read_chunked(reader),
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    loop {
        scratch.clear();
        let line = read_line(reader, &mut scratch)?;
        let text = String::from_utf8_lossy(trim_line_end(&line)).into_owned();
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid("malformed chunk size line"))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let end = read_line(reader, &mut scratch)?;
        if !trim_line_end(&end).is_empty() {
            return Err(invalid("chunk data is not followed by CRLF"));
        }
    }
    // Trailer fields, up to the empty line.
    loop {
        scratch.clear();
        let line = read_line(reader, &mut scratch)?;
        if line.is_empty() || trim_line_end(&line).is_empty() {
            return Ok(body);
        }
    }
}

fn default_reply(request: &ScriptedRequest) -> Reply {
    if request.path() == HEALTH_PATH {
        return Reply::new(
            "HTTP/1.1 200 OK",
            &[("Content-Type", "application/json")],
            br#"{"msg":"success","code":0,"data":{"online_backend_num":1,"total_backend_num":1},"count":0}"#,
        );
    }
    let connection = request.connection.to_string();
    Reply::new(
        "HTTP/1.1 200 OK",
        &[
            ("Content-Type", "application/octet-stream"),
            ("x-connection", &connection),
        ],
        &request.body,
    )
}
