//! Integration tests of faults around the forwarded traffic: an FE that accepts
//! connections but never responds, request heads over the proxy's limits, and the idle
//! bounds of downstream and upstream keep-alive connections.

mod support;

use std::time::{Duration, Instant};

use support::fake_fe::FAKE_FE_HEADER;
use support::http::{DEFAULT_TIMEOUT, build_request, try_raw_request, wait_for};
use support::scripted_fe::ScriptedFe;
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
