//! Integration tests of faults around the forwarded traffic: an FE that accepts
//! connections but never responds or never reads an upload, request heads over the proxy's
//! limits, and the idle bounds of downstream and upstream keep-alive connections.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::fake_fe::FAKE_FE_HEADER;
use support::http::{DEFAULT_TIMEOUT, build_request, try_raw_request, wait_for};
use support::scripted_fe::{Reply, ScriptedFe};
use support::{FakeFe, ProxyBuilder, ProxyProcess, RawConnection};

/// How long a test waits for the proxy to forward to a new FE.
const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `fe.read_timeout_ms` of the hanging-FE test.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Slack on top of [`READ_TIMEOUT`] before a request to a hanging FE counts as hung. It is
/// a hang check, not a speed check, so it is generous.
const HANG_MARGIN: Duration = Duration::from_secs(5);

/// Largest request head Pingora 0.9's HTTP/1 server reads: 1 MiB minus one byte.
const PINGORA_MAX_HEAD_BYTES: usize = 1_048_575;

/// Most header fields Pingora 0.9's HTTP/1 server parses in one request.
const PINGORA_MAX_HEADERS: usize = 256;

/// Returns [`ProxyBuilder::new`] with a 5 s health check timeout, so that a live FE on a
/// busy machine is not taken out in the middle of a test.
fn proxy_builder() -> ProxyBuilder {
    ProxyBuilder::new().set("fe.health_check.timeout_ms", "5000")
}

fn start_proxy(builder: ProxyBuilder, fe: &FakeFe) -> ProxyProcess {
    let proxy = builder.fe(fe).start();
    assert!(
        proxy.wait_until_forwarding_to(fe, FE_READY_TIMEOUT),
        "the proxy did not forward GET /api/health to fake FE {} within {FE_READY_TIMEOUT:?}",
        fe.name()
    );
    proxy
}

/// Asserts that a plain request through the proxy still reaches `fe`.
fn assert_still_serving(proxy: &ProxyProcess, fe: &FakeFe, after: &str) {
    let response = proxy.get("/api/still-serving");
    assert_eq!(
        response.status,
        200,
        "after {after}: the next request got {}",
        response.body_text()
    );
    assert_eq!(
        response.header(FAKE_FE_HEADER),
        Some(fe.name()),
        "after {after}"
    );
}

#[test]
fn hanging_fe_answered_within_read_timeout() {
    let fe = FakeFe::start("hanging-fe");
    let proxy = start_proxy(
        proxy_builder()
            .set("fe.read_timeout_ms", &READ_TIMEOUT.as_millis().to_string())
            // The health check gives the hanging FE 4 s, so the requests below still go to
            // it before the check takes it out.
            .set(
                "fe.health_check",
                "{ path: /api/health, interval_ms: 200, timeout_ms: 4000 }",
            ),
        &fe,
    );
    fe.set_hang_all(true);

    for (method, target) in [("GET", "/api/hang/get"), ("POST", "/api/hang/post")] {
        let request = build_request(method, target, proxy.addr(), &[], b"{}");
        let started = Instant::now();
        let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {target}: no answer from the proxy: {e}"));
        let elapsed = started.elapsed();

        assert!(
            matches!(response.status, 502 | 504),
            "{method} {target}: status {} ({})",
            response.status,
            response.body_text()
        );
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body = response.json();
        assert_eq!(body["status"].as_u64(), Some(u64::from(response.status)));
        assert!(
            elapsed < READ_TIMEOUT + HANG_MARGIN,
            "{method} {target}: the error took {elapsed:?} with a {READ_TIMEOUT:?} read timeout"
        );
        assert_eq!(
            fe.requests_to(target).len(),
            1,
            "{method} {target} did not reach the FE exactly once"
        );
    }

    wait_for(
        Duration::from_secs(10),
        "the health check to take the hanging FE out (healthy backends 0)",
        || proxy.metric_value("doris_fe_proxy_healthy_backends") == Some(0.0),
    );
    assert!(
        proxy
            .log_text()
            .contains(&format!("FE backend {} is unhealthy", fe.addr())),
        "the log does not say that the hanging FE is unhealthy"
    );

    fe.set_hang_all(false);
    assert!(
        proxy.wait_until_forwarding_to(&fe, FE_READY_TIMEOUT),
        "the FE did not come back once it answered again"
    );
}

#[test]
fn oversized_request_heads_rejected() {
    let fe = FakeFe::start("header-fe");
    let proxy = start_proxy(proxy_builder(), &fe);
    let huge_value = "v".repeat(PINGORA_MAX_HEAD_BYTES + 1024);
    let many_headers: Vec<(String, String)> = (0..PINGORA_MAX_HEADERS + 44)
        .map(|i| (format!("X-Header-{i}"), format!("value-{i}")))
        .collect();
    let many_headers: Vec<(&str, &str)> = many_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let cases: [(&str, Vec<(&str, &str)>); 2] = [
        ("a header over 1 MiB", vec![("X-Huge", huge_value.as_str())]),
        ("300 header fields", many_headers),
    ];

    for (what, headers) in cases {
        let request = build_request("GET", "/api/oversized", proxy.addr(), &headers, b"");
        match try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT) {
            Ok(response) => assert!(
                (400..500).contains(&response.status),
                "{what}: status {} instead of a 4xx",
                response.status
            ),
            // A closed or reset connection is a clean rejection too, but a hang is not.
            Err(e) => assert_ne!(
                e.kind(),
                std::io::ErrorKind::TimedOut,
                "{what}: the proxy neither answered nor closed the connection"
            ),
        }
        assert!(
            fe.requests_to("/api/oversized").is_empty(),
            "{what}: the request reached the FE"
        );
        assert_still_serving(&proxy, &fe, what);
    }
}

#[test]
fn large_request_heads_within_limits_forwarded() {
    // 100 KiB and 200 fields are below Pingora's limits, so the proxy forwards them. The FE
    // decides whether such a head is too large, and hyper's limit is 100 fields.
    let fe = FakeFe::start("header-fe");
    let proxy = start_proxy(proxy_builder(), &fe);
    let big_value = "v".repeat(100 * 1024);
    let request = build_request(
        "GET",
        "/api/big-header",
        proxy.addr(),
        &[("X-Big", big_value.as_str())],
        b"",
    );
    let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT).expect("request");
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = fe.requests_to("/api/big-header");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-big").map(str::len), Some(big_value.len()));
    assert_still_serving(&proxy, &fe, "a 100 KiB header");

    let names: Vec<String> = (0..200).map(|i| format!("X-Field-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    let request = build_request("GET", "/api/many-fields", proxy.addr(), &headers, b"");
    let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT).expect("request");
    assert!(
        response.status == 200 || response.status == 431,
        "200 header fields: status {} ({})",
        response.status,
        response.body_text()
    );
    assert_still_serving(&proxy, &fe, "200 header fields");
}

#[test]
fn idle_downstream_connection_closed() {
    let fe = FakeFe::start("keep-alive-fe");
    let proxy = start_proxy(
        proxy_builder().set("fe.downstream_keepalive_seconds", "1"),
        &fe,
    );

    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).expect("connect");
    let response = connection.get("/api/first");
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert!(!response.closes_connection());
    let second = connection.get("/api/second");
    assert_eq!(
        second.status, 200,
        "a second request right away is kept alive"
    );

    assert!(
        connection.is_closed_within(Duration::from_secs(5)),
        "the proxy kept an idle client connection open for more than 5 s with \
         downstream_keepalive_seconds 1"
    );
}

#[test]
fn idle_upstream_connection_closed() {
    let fe = ScriptedFe::start("pooled-fe");
    let proxy = proxy_builder()
        .backends(&[fe.addr()])
        .set("fe.idle_timeout_ms", "300")
        .start();
    let request = build_request("GET", "/api/pooled", proxy.addr(), &[], b"");
    wait_for(FE_READY_TIMEOUT, "a request through the proxy", || {
        try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT).is_ok_and(|r| r.status == 200)
    });

    let pooled = fe
        .requests_to("/api/pooled")
        .last()
        .map(|r| r.connection)
        .expect("the FE recorded the request");
    wait_for(
        Duration::from_secs(5),
        "the proxy to close its idle upstream connection (idle_timeout_ms 300)",
        || !fe.is_connection_open(pooled),
    );
}

/// `fe.write_timeout_ms` of the stalled-upload test.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// `fe.read_timeout_ms` of the stalled-upload test. After a failed write Pingora still
/// waits for the FE's response, because an FE may respond to a Stream Load before it reads the
/// body, so the read timeout bounds the rest of the request.
const STALLED_READ_TIMEOUT: Duration = Duration::from_millis(1000);

/// Body size of the stalled upload: far more than the loopback socket buffers between the
/// proxy and the FE hold, so the proxy's writes to the FE block.
const STALLED_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// Sends the head and up to `total` body bytes of an upload on `stream` until the proxy
/// stops reading or closes. Returns the body bytes written.
fn send_upload(mut stream: TcpStream, head: Vec<u8>, total: usize) -> usize {
    if stream.write_all(&head).is_err() {
        return 0;
    }
    let chunk = vec![b'u'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let len = chunk.len().min(total - sent);
        match stream.write(&chunk[..len]) {
            Ok(0) | Err(_) => break,
            Ok(written) => sent += written,
        }
    }
    sent
}

#[test]
fn fe_not_reading_upload_bounded_by_write_timeout() {
    let fe = ScriptedFe::start("stalled-fe");
    fe.reply_to(
        "/api/stalled/_stream_load",
        Reply::new("HTTP/1.1 200 OK", &[], b"").stalled(),
    );
    let proxy = proxy_builder()
        .backends(&[fe.addr()])
        .set(
            "fe.write_timeout_ms",
            &WRITE_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "fe.read_timeout_ms",
            &STALLED_READ_TIMEOUT.as_millis().to_string(),
        )
        .start();
    let ready = build_request("GET", "/api/ready", proxy.addr(), &[], b"");
    wait_for(FE_READY_TIMEOUT, "a request through the proxy", || {
        try_raw_request(proxy.addr(), &ready, DEFAULT_TIMEOUT).is_ok_and(|r| r.status == 200)
    });

    let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    // Bounds both sides of the client, so the test cannot hang on a wedged proxy.
    let client_timeout = WRITE_TIMEOUT + STALLED_READ_TIMEOUT + HANG_MARGIN;
    stream
        .set_write_timeout(Some(client_timeout))
        .expect("set write timeout");
    stream
        .set_read_timeout(Some(client_timeout))
        .expect("set read timeout");
    let head = format!(
        "PUT /api/stalled/_stream_load HTTP/1.1\r\nHost: {}\r\nContent-Length: {STALLED_UPLOAD_BYTES}\r\n\r\n",
        proxy.addr()
    );
    let writer_stream = stream.try_clone().expect("clone the client socket");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        send_upload(writer_stream, head.into_bytes(), STALLED_UPLOAD_BYTES)
    });

    // The proxy responds with 504 or closes the connection; either ends the read.
    let mut answer = Vec::new();
    let mut reader = stream;
    let read_result = reader.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let sent = writer.join().expect("the upload thread panicked");

    assert!(
        elapsed < client_timeout,
        "the stalled upload ended after {elapsed:?} with a {WRITE_TIMEOUT:?} write timeout \
         and a {STALLED_READ_TIMEOUT:?} read timeout (read result {read_result:?})"
    );
    assert!(
        sent < STALLED_UPLOAD_BYTES,
        "all {sent} body bytes went through although the FE read none"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 504 "),
        "the proxy answered the stalled upload with: {answer}"
    );
    assert_eq!(
        fe.requests_to("/api/stalled/_stream_load").len(),
        1,
        "the upload head did not reach the FE exactly once"
    );
    wait_for(
        Duration::from_secs(5),
        "the proxy to log the upstream write timeout",
        || proxy.log_text().contains("WriteTimedout"),
    );
    // The client may see a reset before it reads the response, so the status is checked in
    // the access log.
    assert!(
        proxy
            .log_text()
            .contains("\"PUT /api/stalled/_stream_load\" 504 "),
        "the access log has no 504 line for the stalled upload"
    );

    let after = proxy.get("/api/after-stall");
    assert_eq!(
        after.status,
        200,
        "after the stalled upload: {}",
        after.body_text()
    );
}
