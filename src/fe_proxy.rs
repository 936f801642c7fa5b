//! The `ProxyHttp` service: serves `/api/get_small_file` locally and forwards every other
//! request to a healthy FE, as the client sent it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::RoundRobin;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::{AccessLog, redact_token};
use crate::metrics::Metrics;
use crate::small_file::SmallFileHandler;

/// Upstream and downstream timeouts of the forwarded traffic.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// Connect attempts on other backends after a failed connect.
    pub retries: usize,
    /// Seconds an idle downstream keep-alive connection is kept.
    pub downstream_keepalive_seconds: u64,
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    /// The FE this request went to last, `None` while it is served locally.
    upstream: Option<SocketAddr>,
    /// Backends whose connect failed for this request, skipped on retry.
    failed: Vec<SocketAddr>,
    connect_attempts: usize,
    local: bool,
}

/// Forwards FE traffic and mounts the [`SmallFileHandler`].
pub struct FeProxy {
    backends: Arc<LoadBalancer<RoundRobin>>,
    handler: Arc<SmallFileHandler>,
    options: UpstreamOptions,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
}

impl FeProxy {
    pub fn new(
        backends: Arc<LoadBalancer<RoundRobin>>,
        handler: Arc<SmallFileHandler>,
        options: UpstreamOptions,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> FeProxy {
        FeProxy {
            backends,
            handler,
            options,
            metrics,
            access_log,
        }
    }

    /// Picks the next healthy backend in round-robin order that has not failed to connect
    /// for this request.
    fn select_backend(&self, ctx: &RequestCtx) -> Option<SocketAddr> {
        let backends = self.backends.backends();
        if !ctx.failed.is_empty() {
            // A retry takes the next healthy backend in address order without moving the
            // round-robin position. Otherwise every retry would move it on, and with one dead
            // backend out of two, every request's first attempt would go to the dead one.
            return backends
                .get_backend()
                .iter()
                .filter(|backend| backends.ready(backend))
                .filter_map(|backend| backend.addr.as_inet().copied())
                .find(|addr| !ctx.failed.contains(addr));
        }

        let count = backends.get_backend().len().max(1);
        let backend = self
            .backends
            .select_with(b"", count * 2, |_backend, healthy| healthy)?;
        backend.addr.as_inet().copied()
    }
}

#[async_trait]
impl ProxyHttp for FeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            upstream: None,
            failed: Vec::new(),
            connect_attempts: 0,
            local: false,
        }
    }

    /// Adds no module: Pingora's default adds a disabled compression module, which costs an
    /// allocation per request and would never compress anything here.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Instant::now();
        // Pingora keeps a reused HTTP/1.1 connection open forever unless a keep-alive timeout is set.
        session.set_keepalive(Some(self.options.downstream_keepalive_seconds));
        let handled = self.handler.handle(session).await?;
        ctx.local = handled;
        Ok(handled)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.connect_attempts += 1;
        let Some(addr) = self.select_backend(ctx) else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "no healthy FE backend is available",
            );
        };
        ctx.upstream = Some(addr);

        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.options.connect_timeout);
        peer.options.read_timeout = Some(self.options.read_timeout);
        peer.options.write_timeout = Some(self.options.write_timeout);
        peer.options.idle_timeout = Some(self.options.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(client) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        else {
            return Ok(());
        };
        let client = client.to_string();
        // A client may send the header more than once, and every field is part of the list.
        // One string is built in place, because this runs for every forwarded request.
        let mut forwarded_for = String::new();
        for previous in upstream_request.headers.get_all("x-forwarded-for") {
            forwarded_for.push_str(&String::from_utf8_lossy(previous.as_bytes()));
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&client);
        upstream_request.insert_header("X-Forwarded-For", forwarded_for)?;
        upstream_request.insert_header("X-Real-IP", client)?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(addr) = peer._address.as_inet() {
            ctx.failed.push(*addr);
        }
        // A request whose connect failed never reached the FE, so it is safe to retry on
        // another backend whatever its method.
        if ctx.connect_attempts <= self.options.retries {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy
    where
        RequestCtx: Send + Sync,
    {
        let downstream = matches!(e.esource(), ErrorSource::Downstream);
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectNoRoute => 502,
            // As nginx's client_body_timeout: the client stopped sending its request.
            ErrorType::ReadTimedout if downstream => 408,
            // The client stopped reading the response, so no error response can reach it.
            ErrorType::WriteTimedout if downstream => 0,
            // As nginx does: the FE was chosen but did not connect, read or respond in time.
            ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        let reason = match e.etype() {
            ErrorType::ConnectNoRoute => "no healthy FE backend",
            ErrorType::ConnectTimedout => "connecting to the FE timed out",
            ErrorType::ConnectRefused => "the FE refused the connection",
            ErrorType::ReadTimedout if downstream => "the client did not send its request in time",
            ErrorType::ReadTimedout => "the FE did not respond in time",
            ErrorType::WriteTimedout => "the FE did not read the request in time",
            _ if code == 502 => "the FE connection failed",
            _ => "the request failed",
        };
        if code > 0 && session.response_written().is_none() {
            let body = Bytes::from(format!("{{\"error\":\"{reason}\",\"status\":{code}}}"));
            if let Err(write_error) = write_json_error(session, code, body).await {
                log::debug!("failed to send the {code} response to the client: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        if !ctx.local {
            self.metrics.observe_proxied(
                if error.is_some() && status.is_none() {
                    None
                } else {
                    status
                },
                elapsed,
            );
        }
        self.access_log.write(
            session,
            status,
            elapsed,
            if ctx.local { None } else { ctx.upstream },
            ctx.local,
        );
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        format!("{} {}", req.method, redact_token(target))
    }
}

async fn write_json_error(session: &mut Session, code: u16, body: Bytes) -> Result<()> {
    let mut header = ResponseHeader::build(code, Some(3))?;
    header.insert_header("Content-Type", "application/json")?;
    header.set_content_length(body.len())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
