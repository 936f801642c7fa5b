//! A steady, paced request load from several client threads, for the restart tests.
//!
//! Every request carries a unique tag (`seq=<tag>` at the end of its query). The proxy's
//! access log contains the target of every request it read, and the fake FE records every
//! target it got. A test can so find out afterwards whether a proxy process or the fake FE
//! saw a request that failed on the client side.
//!
//! Each client thread uses one [`ConnectionMode`]. A keep-alive client retries a request
//! once, on a new connection, when the request went out on a reused connection and the
//! connection failed before any byte of the response arrived. HTTP clients do the same with
//! an idempotent request, because a server may close an idle keep-alive connection at the
//! moment a new request is sent, without reading it. Whether a server did read it is decided
//! later, from the tags, by [`LoadReport::failures`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest response head accepted: 64 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How a client thread uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// A new connection for every request, closed after the response.
    NewPerRequest,
    /// One connection for as long as the server keeps it open.
    KeepAlive,
}

impl ConnectionMode {
    pub fn name(self) -> &'static str {
        match self {
            ConnectionMode::NewPerRequest => "new connection per request",
            ConnectionMode::KeepAlive => "keep-alive",
        }
    }
}

/// A parsed response of the load client.
#[derive(Debug, Clone)]
pub struct LoadResponse {
    pub status: u16,
    /// Header fields with lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LoadResponse {
    /// Returns the value of the first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Returns whether the server announced that it closes the connection.
    pub fn closes_connection(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// Builds the request bytes for a tag; the target must end with `seq=<tag>`.
pub type BuildRequest = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// Checks a response to the request with a tag; `Err` describes what is wrong.
pub type CheckResponse = Arc<dyn Fn(&LoadResponse, &str) -> Result<(), String> + Send + Sync>;

/// One kind of request in the load.
#[derive(Clone)]
pub struct LoadTarget {
    pub name: &'static str,
    pub build: BuildRequest,
    pub check: CheckResponse,
}

/// Settings of a [`LoadRun`].
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// One entry per client thread.
    pub modes: Vec<ConnectionMode>,
    /// Upper bound of requests over all threads, retries not included.
    pub max_requests: usize,
    /// Request `k` of the run is not sent before `start + k * interval`.
    pub interval: Duration,
    /// Bounds one request: connect, write and the whole response.
    pub timeout: Duration,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// A response that passed the target's check.
    Ok,
    /// A complete response that failed the check.
    WrongResponse(String),
    /// The connection failed before any response byte arrived, or the connect failed.
    NoResponse(String),
    /// The connection failed or timed out after part of the response arrived.
    PartialResponse(String),
    /// No complete response within the timeout.
    TimedOut(String),
}

/// One attempt of one request.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub tag: String,
    pub target: &'static str,
    pub mode: ConnectionMode,
    /// Whether the request went out on a connection that had carried a response before.
    pub reused: bool,
    /// Whether this attempt is the retry of an earlier one.
    pub retry: bool,
    pub started: Instant,
    pub finished: Instant,
    /// Whether the response asked to close the connection.
    pub closed_by_server: bool,
    pub result: AttemptResult,
}

impl Attempt {
    pub fn is_ok(&self) -> bool {
        matches!(self.result, AttemptResult::Ok)
    }
}

/// A load running in background threads; [`LoadRun::stop`] ends it and returns the report.
pub struct LoadRun {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<Attempt>>>,
}

impl LoadRun {
    /// Starts one thread per entry of `spec.modes`; they take turns through `targets`.
    pub fn start(spec: LoadSpec, targets: Vec<LoadTarget>) -> LoadRun {
        assert!(!targets.is_empty(), "a load needs at least one target");
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(targets);
        let start = Instant::now();
        let threads = spec
            .modes
            .iter()
            .enumerate()
            .map(|(index, &mode)| {
                let client = Client {
                    index,
                    mode,
                    spec: spec.clone(),
                    targets: Arc::clone(&targets),
                    stop: Arc::clone(&stop),
                    next: Arc::clone(&next),
                    completed: Arc::clone(&completed),
                    start,
                    connection: None,
                    attempts: Vec::new(),
                };
                std::thread::Builder::new()
                    .name(format!("load-{index}"))
                    .spawn(move || client.run())
                    .expect("cannot spawn a load thread")
            })
            .collect();
        LoadRun {
            stop,
            completed,
            threads,
        }
    }

    /// Returns how many requests have finished so far (ok or not, retries not counted).
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` until `n` more requests than now have finished.
    pub fn wait_for_more(&self, n: usize, timeout: Duration) -> bool {
        let target = self.completed() + n;
        super::http::wait_until(timeout, || self.completed() >= target)
    }

    /// Stops the threads after their current request and returns every attempt.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut attempts = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(mut list) => attempts.append(&mut list),
                Err(_) => panic!("a load thread panicked"),
            }
        }
        attempts.sort_by_key(|a| a.started);
        LoadReport { attempts }
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct Client {
    index: usize,
    mode: ConnectionMode,
    spec: LoadSpec,
    targets: Arc<Vec<LoadTarget>>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
    start: Instant,
    /// The open keep-alive connection and whether it has carried a response.
    connection: Option<(TcpStream, bool)>,
    attempts: Vec<Attempt>,
}

impl Client {
    fn run(mut self) -> Vec<Attempt> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let k = self.next.fetch_add(1, Ordering::SeqCst);
            if k >= self.spec.max_requests {
                break;
            }
            let due = self.start + self.spec.interval * u32::try_from(k).unwrap_or(u32::MAX);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let target = self.targets[k % self.targets.len()].clone();
            let first = self.attempt(&target, &format!("t{}-{k}-a1", self.index), false);
            let retry = self.mode == ConnectionMode::KeepAlive
                && first.reused
                && matches!(first.result, AttemptResult::NoResponse(_));
            self.attempts.push(first);
            if retry {
                let second = self.attempt(&target, &format!("t{}-{k}-a2", self.index), true);
                self.attempts.push(second);
            }
            self.completed.fetch_add(1, Ordering::SeqCst);
        }
        self.attempts
    }

    fn attempt(&mut self, target: &LoadTarget, tag: &str, retry: bool) -> Attempt {
        let started = Instant::now();
        let request = (target.build)(tag);
        let (stream, reused) = match self.connection.take() {
            Some((stream, reused)) if self.mode == ConnectionMode::KeepAlive => (stream, reused),
            _ => match TcpStream::connect_timeout(&self.spec.addr, self.spec.timeout) {
                Ok(stream) => (stream, false),
                Err(e) => {
                    return self.finish(target, tag, retry, started, false, false, no_response(&e));
                }
            },
        };
        let deadline = started + self.spec.timeout;
        let mut received = 0usize;
        let outcome = exchange(&stream, &request, deadline, &mut received);
        let (result, closed_by_server) = match outcome {
            Ok(response) => {
                let closes = response.closes_connection();
                let result = match (target.check)(&response, tag) {
                    Ok(()) => AttemptResult::Ok,
                    Err(message) => AttemptResult::WrongResponse(message),
                };
                if self.mode == ConnectionMode::KeepAlive && !closes {
                    self.connection = Some((stream, true));
                }
                (result, closes)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => (
                AttemptResult::TimedOut(format!("{e} after {received} response bytes")),
                false,
            ),
            Err(e) if received == 0 => (no_response(&e), false),
            Err(e) => (
                AttemptResult::PartialResponse(format!("{e} after {received} response bytes")),
                false,
            ),
        };
        self.finish(
            target,
            tag,
            retry,
            started,
            reused,
            closed_by_server,
            result,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        target: &LoadTarget,
        tag: &str,
        retry: bool,
        started: Instant,
        reused: bool,
        closed_by_server: bool,
        result: AttemptResult,
    ) -> Attempt {
        Attempt {
            tag: tag.to_string(),
            target: target.name,
            mode: self.mode,
            reused,
            retry,
            started,
            finished: Instant::now(),
            closed_by_server,
            result,
        }
    }
}

fn no_response(e: &io::Error) -> AttemptResult {
    AttemptResult::NoResponse(format!("{:?}: {e}", e.kind()))
}

/// Writes `request` and reads one response framed by `Content-Length`; `received` counts
/// the response bytes read, also when an error is returned.
fn exchange(
    mut stream: &TcpStream,
    request: &[u8],
    deadline: Instant,
    received: &mut usize,
) -> io::Result<LoadResponse> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(request)?;

    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let (head_len, status, headers) = loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the response head",
            ));
        }
        *received += n;
        buffer.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                break (len, parsed.code.unwrap_or(0), headers);
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Err(invalid("response head over 64 KiB".to_string()));
            }
            Err(e) => return Err(invalid(format!("malformed response head: {e}"))),
        }
    };

    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse())
        .transpose()
        .map_err(|_| invalid("invalid Content-Length".to_string()))?
        .ok_or_else(|| invalid("response without Content-Length".to_string()))?;
    let mut body = buffer.split_off(head_len);
    while body.len() < length {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} of {length} body bytes",
                    body.len()
                ),
            ));
        }
        *received += n;
        body.extend_from_slice(&chunk[..n]);
    }
    if body.len() > length {
        return Err(invalid(format!(
            "{} bytes after a body of {length} bytes",
            body.len() - length
        )));
    }
    Ok(LoadResponse {
        status,
        headers,
        body,
    })
}

fn read_some(mut stream: &TcpStream, chunk: &mut [u8]) -> io::Result<usize> {
    match stream.read(chunk) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no complete response before the timeout",
        )),
        other => other,
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no complete response before the timeout",
        ));
    }
    Ok(left)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Every attempt of a finished [`LoadRun`], oldest first.
pub struct LoadReport {
    pub attempts: Vec<Attempt>,
}

impl LoadReport {
    /// Returns a description of every failed attempt. An attempt failed when it got a wrong
    /// response, a partial response or no response in time. It also failed when it got no
    /// response although a server read the request (`seen` contains its tag). An attempt
    /// without any response that no server read failed unless `excused` accepts it.
    pub fn failures(&self, seen: &SeenRequests, excused: impl Fn(&Attempt) -> bool) -> Vec<String> {
        let mut failures = Vec::new();
        for attempt in &self.attempts {
            let describe = |what: &str, detail: &str| {
                format!(
                    "{} {} ({}, {}reused connection{}): {what}: {detail}",
                    attempt.target,
                    attempt.tag,
                    attempt.mode.name(),
                    if attempt.reused { "" } else { "not a " },
                    if attempt.retry { ", retry" } else { "" },
                )
            };
            match &attempt.result {
                AttemptResult::Ok => {}
                AttemptResult::WrongResponse(detail) => {
                    failures.push(describe("wrong response", detail))
                }
                AttemptResult::PartialResponse(detail) => {
                    failures.push(describe("partial response", detail))
                }
                AttemptResult::TimedOut(detail) => failures.push(describe("timed out", detail)),
                AttemptResult::NoResponse(detail) if seen.contains(&attempt.tag) => {
                    failures.push(describe("read by a server but not answered", detail))
                }
                AttemptResult::NoResponse(detail) if !excused(attempt) => {
                    failures.push(describe("no response", detail))
                }
                AttemptResult::NoResponse(_) => {}
            }
        }
        failures
    }

    /// Prints the counts per mode and result, for the test output.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        for mode in [ConnectionMode::NewPerRequest, ConnectionMode::KeepAlive] {
            let of_mode: Vec<&Attempt> = self.attempts.iter().filter(|a| a.mode == mode).collect();
            if of_mode.is_empty() {
                continue;
            }
            let count = |f: &dyn Fn(&Attempt) -> bool| of_mode.iter().filter(|a| f(a)).count();
            lines.push(format!(
                "{}: {} attempts, {} ok, {} retries, {} wrong responses, {} without response, \
                 {} partial responses, {} timed out, {} responses with `Connection: close`",
                mode.name(),
                of_mode.len(),
                count(&|a| a.is_ok()),
                count(&|a| a.retry),
                count(&|a| matches!(a.result, AttemptResult::WrongResponse(_))),
                count(&|a| matches!(a.result, AttemptResult::NoResponse(_))),
                count(&|a| matches!(a.result, AttemptResult::PartialResponse(_))),
                count(&|a| matches!(a.result, AttemptResult::TimedOut(_))),
                count(&|a| a.closed_by_server),
            ));
        }
        lines.join("\n")
    }
}

/// Returns whether `text` (a log or recorded targets) contains the tag of a load request,
/// that is `seq=<tag>` followed by the end of the target.
pub fn has_tag(text: &str, tag: &str) -> bool {
    let needle = format!("seq={tag}");
    text.match_indices(&needle).any(|(at, _)| {
        let after = text[at + needle.len()..].chars().next();
        matches!(after, None | Some('"') | Some(' ') | Some('\n'))
    })
}

/// Collects the fake FE targets and log texts that tell whether a tagged request was seen.
#[derive(Default)]
pub struct SeenRequests {
    texts: Vec<String>,
}

impl SeenRequests {
    pub fn add(&mut self, text: impl Into<String>) {
        self.texts.push(text.into());
    }

    pub fn contains(&self, tag: &str) -> bool {
        self.texts.iter().any(|text| has_tag(text, tag))
    }
}
