//! Large bodies without holding them in memory, and the memory and file descriptors of a
//! process as Linux reports them in `/proc/<pid>`.
//!
//! [`stream_get`] hands a response body to a callback one read at a time, and
//! [`stream_upload`] writes a generated request body block by block. With them a test can
//! move gigabytes through the proxy while [`RssSampler`] samples the proxy's resident
//! memory.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{RawConnection, RawResponse};

/// Size of one read of [`stream_get`] and one written block of [`stream_upload`]: 256 KiB.
pub const BLOCK_BYTES: usize = 256 * 1024;

/// Time between two samples of [`RssSampler`].
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// Largest response head [`stream_get`] reads: 64 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Returns the resident set size (`VmRSS` in `/proc/<pid>/status`) in bytes, or `None` when
/// the process is gone.
pub fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Returns how many file descriptors the process has open (entries of `/proc/<pid>/fd`).
pub fn open_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

/// Samples the resident set size of a process every 20 ms on its own thread and keeps
/// the peak.
pub struct RssSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`. Panics if the process has no `VmRSS`.
    pub fn start(pid: u32) -> RssSampler {
        let first = vm_rss_bytes(pid)
            .unwrap_or_else(|| panic!("process {pid} has no VmRSS in /proc/{pid}/status"));
        let peak = Arc::new(AtomicU64::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let peak = Arc::clone(&peak);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(rss) = vm_rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::SeqCst);
                    }
                    std::thread::sleep(RSS_SAMPLE_INTERVAL);
                }
            })
        };
        RssSampler {
            pid,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling, takes one last sample and returns the peak in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop_thread();
        if let Some(rss) = vm_rss_bytes(self.pid) {
            self.peak.fetch_max(rss, Ordering::SeqCst);
        }
        self.peak.load(Ordering::SeqCst)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("the RSS sampler thread of process {} panicked", self.pid);
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The head of a streamed response and how many body bytes went to the callback.
#[derive(Debug)]
pub struct StreamedResponse {
    pub status: u16,
    /// Header fields in the order received, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
}

impl StreamedResponse {
    /// Returns the value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET {target}` on a new connection and passes the body to `on_block(offset, bytes)`
/// one read at a time. `on_block` returns `false` to stop reading and close the connection
/// early. The body must be framed by `Content-Length`. `timeout` bounds the whole exchange.
pub fn stream_get(
    addr: SocketAddr,
    target: &str,
    timeout: Duration,
    mut on_block: impl FnMut(u64, &[u8]) -> bool,
) -> io::Result<StreamedResponse> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut reader = BufReader::with_capacity(BLOCK_BYTES, stream);

    let mut response = read_head(&mut reader, deadline)?;
    let length: u64 = response
        .header("content-length")
        .ok_or_else(|| invalid("the response has no Content-Length".to_string()))?
        .parse()
        .map_err(|_| invalid("the response has an invalid Content-Length".to_string()))?;

    while response.body_bytes < length {
        set_remaining_timeout(reader.get_ref(), deadline)?;
        let block = reader.fill_buf()?;
        if block.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} of {length} body bytes",
                    response.body_bytes
                ),
            ));
        }
        let take = block.len().min((length - response.body_bytes) as usize);
        let keep_going = on_block(response.body_bytes, &block[..take]);
        reader.consume(take);
        response.body_bytes += take as u64;
        if !keep_going {
            break;
        }
    }
    Ok(response)
}

/// Sends `{method} {target}` with a body of `len` bytes made by `byte_at(offset)`, written
/// block by block, then reads the response. With `chunked` the body goes in chunked
/// transfer coding, one chunk per block, and otherwise with `Content-Length`. `timeout`
/// bounds the connect, each write and the wait for the response.
pub fn stream_upload(
    addr: SocketAddr,
    method: &str,
    target: &str,
    len: u64,
    chunked: bool,
    timeout: Duration,
    byte_at: impl Fn(u64) -> u8,
) -> io::Result<RawResponse> {
    let mut connection = RawConnection::open(addr, timeout)?;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    connection.write(
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\n\r\n").as_bytes(),
    )?;

    let mut block = Vec::with_capacity(BLOCK_BYTES + 16);
    let mut offset = 0;
    while offset < len {
        let end = (offset + BLOCK_BYTES as u64).min(len);
        block.clear();
        if chunked {
            block.extend_from_slice(format!("{:x}\r\n", end - offset).as_bytes());
        }
        block.extend((offset..end).map(&byte_at));
        if chunked {
            block.extend_from_slice(b"\r\n");
        }
        if let Err(e) = connection.write(&block) {
            return Err(body_write_error(&mut connection, offset, e));
        }
        offset = end;
    }
    if chunked {
        connection.write(b"0\r\n\r\n")?;
    }
    connection.read_response(false)
}

/// Describes a failed body write, with the response the server sent before it stopped
/// reading, if one can still be read.
fn body_write_error(connection: &mut RawConnection, offset: u64, error: io::Error) -> io::Error {
    let message = match connection.read_response(false) {
        Ok(response) => format!(
            "writing the body failed at byte {offset}: {error}; the server had responded {} {}",
            response.status,
            response.body_text()
        ),
        Err(_) => format!("writing the body failed at byte {offset}: {error}"),
    };
    io::Error::new(error.kind(), message)
}

fn set_remaining_timeout(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the response did not finish before the timeout",
        ));
    }
    stream.set_read_timeout(Some(remaining))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn read_head(reader: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<StreamedResponse> {
    let mut lines = Vec::new();
    let mut head_bytes = 0;
    loop {
        set_remaining_timeout(reader.get_ref(), deadline)?;
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the response head",
            ));
        }
        head_bytes += line.len();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(invalid(format!(
                "response head over {MAX_HEAD_BYTES} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            // An interim 1xx response is followed by the final one.
            if lines
                .first()
                .is_some_and(|s: &String| s.split(' ').nth(1).is_some_and(|c| c.starts_with('1')))
            {
                lines.clear();
                continue;
            }
            break;
        }
        lines.push(text);
    }

    let status_line = lines.first().cloned().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("malformed status line {status_line:?}")))?;
    let headers = lines[1..]
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect();
    Ok(StreamedResponse {
        status,
        headers,
        body_bytes: 0,
    })
}
