//! A fake Doris FE: a real HTTP/1.1 server (hyper) on 127.0.0.1 that implements the FE
//! endpoints the tests need and records every request it gets.
//!
//! Endpoints (every response carries `x-fake-fe: <name>`):
//! - `GET /api/health`: `{"msg":"success","code":0,...}`, or code 1 / status 500 after
//!   [`FakeFe::set_health`].
//! - `GET|HEAD /api/get_small_file`: the FE's own small-file action over an optional store
//!   folder in the `<file_id>/<file_name>` layout, checking the token.
//! - `PUT /api/{db}/{table}/_stream_load` (and `_stream_load_2pc`): 307 to
//!   `http://user:pass@127.0.0.1:<be_port>` + the same path and query, sent without reading
//!   the body, so no `100 Continue` goes out.
//! - `GET /check`, `GET /role`: 200 with the FE-to-FE response headers `role`, `token`,
//!   `cluster_id`, `is_ready`.
//! - `GET /image?bytes=N`: N bytes of [`image_bytes`], streamed in 64 KiB chunks with a
//!   `Content-Length`.
//! - `PUT|POST /upload`: reads and discards the body, responds with `{"received_bytes":N}`.
//! - `GET /hang`: never responds; the connection stays open until the server stops.
//! - anything else: 200 with the JSON echo `{"method":..,"target":..,"headers":{..}}`.
//!
//! The server runs on its own thread with its own tokio runtime, so sync and async tests
//! can use it alike.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::TEST_TOKEN;
use super::http::wait_until;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Chunk size of the `/image` body: 64 KiB.
const IMAGE_CHUNK_BYTES: u64 = 64 * 1024;

/// Name of the header that every response of a fake FE carries, with the FE's name as value.
pub const FAKE_FE_HEADER: &str = "x-fake-fe";

/// Value of the `token` response header of `/check` and `/role` when no token is set.
const CHECK_TOKEN: &str = "fake-fe-check-token";

/// The response of `GET /api/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeHealth {
    /// 200 with `"code":0`: healthy.
    Ok,
    /// 200 with `"code":1`: the FE is up but reports an error.
    CodeOne,
    /// Status 500 with a JSON body.
    Status500,
}

/// One request as the fake FE received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as received: path and query for origin-form requests.
    pub target: String,
    /// Header fields with lowercase names (hyper lowercases them), grouped by name.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// Returns the path: the target up to the first `?`.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Returns the value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header_value(&self.headers, name)
    }
}

/// Returns byte `index` of every `/image` body: `index % 251`, a pattern whose period is
/// prime, so a dropped or repeated chunk shows up in a comparison.
pub fn image_byte(index: u64) -> u8 {
    (index % 251) as u8
}

/// Returns the whole `/image?bytes=len` body, for comparisons.
pub fn image_bytes(len: u64) -> Vec<u8> {
    (0..len).map(image_byte).collect()
}

/// Settings of a [`FakeFe`]; start it with [`FakeFeBuilder::start`].
#[derive(Debug, Clone)]
pub struct FakeFeBuilder {
    name: String,
    port: u16,
    files: Option<PathBuf>,
    token: String,
    be_port: u16,
}

impl FakeFeBuilder {
    /// Listens on `127.0.0.1:port`; default 0 (a free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Serves `/api/get_small_file` from `folder` (`<file_id>/<file_name>`); default none,
    /// so every id is "File not found or is not content".
    pub fn files(mut self, folder: impl Into<PathBuf>) -> Self {
        self.files = Some(folder.into());
        self
    }

    /// Sets the cluster token that `/api/get_small_file` accepts; default [`TEST_TOKEN`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Sets the BE HTTP port in the stream load redirect; default 8040.
    pub fn be_port(mut self, port: u16) -> Self {
        self.be_port = port;
        self
    }

    /// Binds the port and starts serving; panics if the port cannot be bound.
    pub fn start(self) -> FakeFe {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut fe = FakeFe {
            addr,
            settings: Arc::new(self),
            state: Arc::new(State::default()),
            running: None,
        };
        fe.serve();
        fe
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    health: Mutex<Option<FeHealth>>,
    hang_all: AtomicBool,
}

struct Running {
    shutdown: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

/// A running fake FE; stopped on drop. See the module documentation for its endpoints.
pub struct FakeFe {
    addr: SocketAddr,
    settings: Arc<FakeFeBuilder>,
    state: Arc<State>,
    running: Option<Running>,
}

impl FakeFe {
    /// Returns a builder with the defaults: free port, no files, [`TEST_TOKEN`], BE port 8040.
    pub fn builder(name: &str) -> FakeFeBuilder {
        FakeFeBuilder {
            name: name.to_string(),
            port: 0,
            files: None,
            token: TEST_TOKEN.to_string(),
            be_port: 8040,
        }
    }

    /// Starts a fake FE with the defaults of [`FakeFe::builder`].
    pub fn start(name: &str) -> FakeFe {
        FakeFe::builder(name).start()
    }

    /// Returns the listening address (`127.0.0.1:<port>`), the same after [`FakeFe::restart`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the name sent in the `x-fake-fe` header.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Returns a copy of every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Returns how many requests were received so far, health checks included.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Returns how many requests had this method and path (the target without its query).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path() == path)
            .count()
    }

    /// Returns the requests whose path (the target without its query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Sets the response of `/api/health` from now on.
    pub fn set_health(&self, health: FeHealth) {
        *self.state.health.lock().unwrap() = Some(health);
    }

    /// When `true`, every request is recorded and gets no response: an FE that accepts
    /// connections but hangs.
    pub fn set_hang_all(&self, hang: bool) {
        self.state.hang_all.store(hang, Ordering::SeqCst);
    }

    /// Waits up to `timeout` until `count(method, path)` reaches `n`; returns whether it did.
    pub fn wait_for_count(&self, method: &str, path: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(method, path) >= n)
    }

    /// Returns whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Closes the listener and every open connection, and waits until they are closed.
    /// Does nothing if the server is stopped.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            // A send error means the server thread is gone already.
            let _ = running.shutdown.send(true);
            if running.thread.join().is_err() {
                eprintln!("fake FE {} server thread panicked", self.name());
            }
        }
    }

    /// Starts serving again on the same address, keeping the recorded requests and the
    /// switches. Stops the server first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("fake FE cannot bind {}: {e}", self.addr));
        self.addr = listener
            .local_addr()
            .expect("bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");

        let (shutdown, shutdown_rx) = watch::channel(false);
        let context = Arc::new(Context {
            settings: Arc::clone(&self.settings),
            state: Arc::clone(&self.state),
        });
        let thread_name = format!("fake-fe-{}", self.settings.name);
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("cannot build the fake FE runtime");
                // Dropping the runtime after `accept_loop` returns cancels every connection
                // task, which closes the sockets.
                runtime.block_on(accept_loop(listener, shutdown_rx, context));
            })
            .expect("cannot spawn the fake FE thread");
        self.running = Some(Running { shutdown, thread });
    }
}

impl Drop for FakeFe {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Context {
    settings: Arc<FakeFeBuilder>,
    state: Arc<State>,
}

async fn accept_loop(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    context: Arc<Context>,
) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("cannot hand the listener to tokio");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("fake FE {}: accept failed: {e}", context.settings.name);
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let context = Arc::clone(&context);
        let mut connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let context = Arc::clone(&context);
                async move { Ok::<_, Infallible>(answer(&context, request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = connection_shutdown.changed() => {}
            }
        });
    }
}

async fn answer(context: &Context, request: Request<Incoming>) -> Response<Body> {
    record(context, &request);
    if context.state.hang_all.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }

    let mut response = route(context, request).await;
    let name = HeaderValue::from_str(&context.settings.name)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-name"));
    response.headers_mut().insert(FAKE_FE_HEADER, name);
    response
}

fn record(context: &Context, request: &Request<Incoming>) {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let recorded = RecordedRequest {
        method: request.method().as_str().to_string(),
        target: request.uri().to_string(),
        headers,
    };
    context.state.requests.lock().unwrap().push(recorded);
}

async fn route(context: &Context, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);

    match (method, path.as_str()) {
        (Method::GET, "/api/health") => health(context),
        (Method::GET | Method::HEAD, "/api/get_small_file") => {
            small_file(context, query.as_deref())
        }
        (Method::PUT, _) if is_stream_load(&path) => stream_load_redirect(context, &request),
        (Method::GET, "/check" | "/role") => check(context),
        (Method::GET, "/image") => image(query.as_deref()),
        (Method::PUT | Method::POST, "/upload") => upload(request).await,
        (Method::GET, "/hang") => std::future::pending().await,
        _ => echo(&request),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

fn health(context: &Context) -> Response<Body> {
    let health = context.state.health.lock().unwrap().unwrap_or(FeHealth::Ok);
    match health {
        FeHealth::Ok => json_response(
            StatusCode::OK,
            r#"{"msg":"success","code":0,"data":{"online_backend_num":1,"total_backend_num":1},"count":0}"#
                .to_string(),
        ),
        FeHealth::CodeOne => json_response(
            StatusCode::OK,
            r#"{"msg":"Error","code":1,"data":"fake FE reports an error","count":0}"#.to_string(),
        ),
        FeHealth::Status500 => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"msg":"Internal Error","code":500,"data":"fake FE is failing","count":0}"#
                .to_string(),
        ),
    }
}

/// Builds the FE's error envelope. `data` is escaped by serde_json, whose `\u00xx` hex is
/// lowercase where Jackson writes uppercase, so an echoed control character differs from
/// the FE's body.
fn envelope(msg: &str, code: i32, data: &str) -> Response<Body> {
    let data = serde_json::to_string(data).expect("a string serializes");
    json_response(
        StatusCode::OK,
        format!(r#"{{"msg":"{msg}","code":{code},"data":{data},"count":0}}"#),
    )
}

/// Runs the FE's `GetSmallFileAction` steps: parameters, token, id, lookup, file.
fn small_file(context: &Context, query: Option<&str>) -> Response<Body> {
    let mut token = None;
    let mut file_id = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "token" => &mut token,
            "file_id" => &mut file_id,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    let token = token.filter(|t| !t.is_empty());
    let file_id = file_id.filter(|f| !f.is_empty());
    let (Some(token), Some(file_id)) = (token, file_id) else {
        return envelope(
            "Bad Request",
            403,
            "Missing parameter. Need token and file id",
        );
    };

    if token != context.settings.token {
        return envelope("Error", 1, "Invalid token");
    }

    // NOTE: Rust's `i64::from_str` takes the ASCII forms that Java's `Long.valueOf` takes,
    // but not the non-ASCII Unicode digits Java also accepts.
    let Ok(id) = file_id.parse::<i64>() else {
        return envelope(
            "Bad Request",
            403,
            &format!("Invalid file id format: {file_id}"),
        );
    };

    let found = context
        .settings
        .files
        .as_deref()
        .filter(|_| id >= 0)
        .and_then(|folder| single_file(folder, id));
    let Some((name, bytes)) = found else {
        return envelope("Error", 1, "File not found or is not content");
    };

    let mut response = Response::new(full(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let disposition = format!("attachment;fileName={name}");
    match HeaderValue::from_str(&disposition) {
        Ok(value) => {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        Err(_) => eprintln!("fake FE: file name {name:?} cannot be sent in a header"),
    }
    response
}

/// Returns the name and bytes of the only file in `<folder>/<id>/`, if there is exactly one.
fn single_file(folder: &Path, id: i64) -> Option<(String, Vec<u8>)> {
    let entries: Vec<PathBuf> = std::fs::read_dir(folder.join(id.to_string()))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    let [path] = entries.as_slice() else {
        return None;
    };
    let name = path.file_name()?.to_string_lossy().into_owned();
    let bytes = std::fs::read(path).ok()?;
    Some((name, bytes))
}

fn is_stream_load(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", db, table, "_stream_load" | "_stream_load_2pc"]
            if !db.is_empty() && !table.is_empty()
    )
}

/// Sends the FE's stream load response: a 307 to a BE, without reading the body.
fn stream_load_redirect(context: &Context, request: &Request<Incoming>) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!(
        "http://user:pass@127.0.0.1:{}{target}",
        context.settings.be_port
    );
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("the location is a valid header value"),
    );
    response
}

/// Sends the FE-to-FE `/check` and `/role` response, which carries its data in headers.
fn check(context: &Context) -> Response<Body> {
    let token = if context.settings.token.is_empty() {
        CHECK_TOKEN
    } else {
        &context.settings.token
    };
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert("role", HeaderValue::from_static("FOLLOWER"));
    headers.insert(
        "token",
        HeaderValue::from_str(token).unwrap_or_else(|_| HeaderValue::from_static(CHECK_TOKEN)),
    );
    headers.insert("cluster_id", HeaderValue::from_static("123"));
    headers.insert("is_ready", HeaderValue::from_static("true"));
    response
}

/// Streams `bytes=N` bytes of [`image_byte`], generated one chunk at a time.
fn image(query: Option<&str>) -> Response<Body> {
    let len = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "bytes")
        .and_then(|(_, value)| value.parse::<u64>().ok());
    let Some(len) = len else {
        return json_response(
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected /image?bytes=N"}"#.to_string(),
        );
    };

    let chunks = (0..len)
        .step_by(IMAGE_CHUNK_BYTES as usize)
        .map(move |start| {
            let end = (start + IMAGE_CHUNK_BYTES).min(len);
            let chunk: Vec<u8> = (start..end).map(image_byte).collect();
            Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
        });
    let body = StreamBody::new(futures::stream::iter(chunks)).boxed_unsync();
    let mut response = Response::new(body);
    // hyper frames a body of unknown size with this header instead of chunked coding.
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Reads the whole body frame by frame and responds with its length.
async fn upload(request: Request<Incoming>) -> Response<Body> {
    let mut body = request.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": e.to_string(), "received_bytes": received })
                        .to_string(),
                );
            }
        }
    }
    json_response(
        StatusCode::OK,
        serde_json::json!({ "received_bytes": received }).to_string(),
    )
}

/// `{"method":..,"target":..,"headers":{..}}`; repeated headers are joined with `, `.
fn echo(request: &Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for name in request.headers().keys() {
        let values: Vec<String> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(
            name.as_str().to_string(),
            serde_json::Value::String(values.join(", ")),
        );
    }
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "target": request.uri().to_string(),
        "headers": headers,
    });
    json_response(StatusCode::OK, body.to_string())
}
