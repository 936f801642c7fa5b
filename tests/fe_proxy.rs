//! Integration tests of the traffic the proxy forwards to the FE.
//!
//! They cover stream load redirects with `Expect: 100-continue`, other redirects, the
//! FE-to-FE header responses, the forwarding headers, byte-exact targets and bodies, and
//! gigabyte bodies in bounded memory. They also cover round robin with health checks,
//! connect retries, upstream keep-alive, and recovery after clients and FEs that close
//! early.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::fake_fe::{FAKE_FE_HEADER, image_byte, image_bytes};
use support::http::{DEFAULT_TIMEOUT, build_request, try_raw_request, wait_for, wait_until};
use support::scripted_fe::{Reply, ScriptedFe};
use support::streaming::{RssSampler, open_fd_count, stream_get, stream_upload};
use support::{FakeFe, FeHealth, ProxyBuilder, ProxyProcess, RawConnection, TEST_TOKEN};

/// How long a test waits for the proxy to forward to a new or restarted FE.
const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for a health check to take an FE out or put it back.
const HEALTH_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of the proxy's resident memory while gigabyte bodies pass through it:
/// far below the body sizes, so a proxy that buffers a body fails.
const RSS_BOUND_BYTES: u64 = 200 * 1024 * 1024;

/// Size of the streamed download: 1 GiB.
const DOWNLOAD_BYTES: u64 = 1024 * 1024 * 1024;

/// Size of each streamed upload: 512 MiB.
const UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Upper bound of one gigabyte transfer. It is a hang check, not a speed check.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Size of the stream load file: 4 MiB, a body that must not be sent before the FE's 307.
const STREAM_LOAD_BYTES: usize = 4 * 1024 * 1024;

/// Bound on how long a 502 takes when no FE is healthy. It is a hang check, because the
/// proxy sends it without connecting anywhere and `fe.connect_timeout_ms` is 1000 there.
const NO_HEALTHY_FE_502_BOUND: Duration = Duration::from_secs(3);

/// Connect and read timeout of the health check in these tests. A stopped FE fails its
/// check at once (connection refused), and a code-1 FE fails as soon as it responds. Only
/// a live FE on a busy machine gets near this bound, and it must stay in the rotation.
const HEALTH_CHECK_TIMEOUT_MS: &str = "5000";

/// Returns [`ProxyBuilder::new`] with the health check timeout of these tests.
fn proxy_builder() -> ProxyBuilder {
    ProxyBuilder::new().set("fe.health_check.timeout_ms", HEALTH_CHECK_TIMEOUT_MS)
}

/// Returns how many lines of the proxy log contain `needle`.
fn log_count(proxy: &ProxyProcess, needle: &str) -> usize {
    proxy
        .log_text()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// Runs `change`, then waits until the log has one more line with `needle` than before.
fn wait_for_new_log_line(proxy: &ProxyProcess, needle: &str, change: impl FnOnce()) -> bool {
    let before = log_count(proxy, needle);
    change();
    wait_until(HEALTH_CHANGE_TIMEOUT, || log_count(proxy, needle) > before)
}

fn start_proxy(builder: ProxyBuilder, fe: &FakeFe) -> ProxyProcess {
    let proxy = builder.start();
    assert!(
        proxy.wait_until_forwarding_to(fe, FE_READY_TIMEOUT),
        "the proxy did not forward GET /api/health to fake FE {} within {FE_READY_TIMEOUT:?}",
        fe.name()
    );
    proxy
}

/// Starts a proxy in front of one [`ScriptedFe`] and waits until a request reaches it.
fn start_scripted_proxy(builder: ProxyBuilder, fe: &ScriptedFe) -> ProxyProcess {
    let proxy = builder.backends(&[fe.addr()]).start();
    let request = build_request("GET", "/api/ready", proxy.addr(), &[], b"");
    wait_for(
        FE_READY_TIMEOUT,
        "the proxy to forward to the scripted FE",
        || {
            try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
                .is_ok_and(|r| r.status == 200 && r.header("x-connection").is_some())
        },
    );
    proxy
}

/// Sends `GET {target}` through the proxy and returns the `x-fake-fe` name of the FE that
/// sent the response, or the failure as text.
fn answering_fe(proxy: &ProxyProcess, target: &str) -> Result<String, String> {
    let request = build_request("GET", target, proxy.addr(), &[], b"");
    let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "status {}, body {}",
            response.status,
            response.body_text()
        ));
    }
    response
        .header(FAKE_FE_HEADER)
        .map(str::to_string)
        .ok_or_else(|| format!("no {FAKE_FE_HEADER} header in {:?}", response.headers))
}

fn healthy_backends(proxy: &ProxyProcess) -> Option<f64> {
    proxy.metric_value("doris_fe_proxy_healthy_backends")
}

/// Writes `len` bytes of the `/image` pattern to `path`.
fn write_pattern_file(path: &Path, len: usize) {
    std::fs::write(path, image_bytes(len as u64)).expect("cannot write the upload file");
}

/// Returns the status lines of every response in a `curl -D` headers file.
fn status_lines(headers: &str) -> Vec<&str> {
    headers
        .lines()
        .filter(|line| line.starts_with("HTTP/"))
        .collect()
}

/// Returns the value of the first `name:` line in a `curl -D` headers file, as written.
fn dumped_header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field
            .eq_ignore_ascii_case(name)
            .then(|| value.trim_start().trim_end_matches('\r'))
    })
}

fn run_curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `curl` ({e}); install it with: apt-get install -y curl")
        })
}

#[test]
fn stream_load_by_curl_gets_fe_redirect() {
    let fe = FakeFe::builder("stream-load-fe").be_port(8040).start();
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let file = proxy.dir().join("rows.csv");
    write_pattern_file(&file, STREAM_LOAD_BYTES);
    let headers_file = proxy.dir().join("curl-headers.txt");
    let target = "/api/db1/tbl1/_stream_load?label=l%2F1&columns=a,b";
    let url = format!("http://{}{target}", proxy.addr());

    let output = run_curl(&[
        "-sS",
        "--max-time",
        "30",
        "-T",
        file.to_str().expect("temporary paths are UTF-8"),
        "-H",
        "Expect: 100-continue",
        "-H",
        "Host: fe.example:8030",
        "-D",
        headers_file.to_str().expect("temporary paths are UTF-8"),
        &url,
    ]);
    let headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
    assert!(
        output.status.success(),
        "curl failed with {}: {}\nheaders:\n{headers}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let statuses = status_lines(&headers);
    assert_eq!(
        statuses.len(),
        1,
        "curl saw more than the one final response (a 100 Continue?):\n{headers}"
    );
    assert!(
        statuses[0].starts_with("HTTP/1.1 307"),
        "curl did not get the FE's 307:\n{headers}"
    );
    assert_eq!(
        dumped_header(&headers, "location"),
        Some(format!("http://user:pass@127.0.0.1:8040{target}").as_str()),
        "the Location header differs from the one the fake FE sent:\n{headers}"
    );
    assert_eq!(
        dumped_header(&headers, FAKE_FE_HEADER),
        Some("stream-load-fe")
    );

    let loads = fe.requests_to("/api/db1/tbl1/_stream_load");
    assert_eq!(loads.len(), 1, "the FE got {} stream loads", loads.len());
    let load = &loads[0];
    assert_eq!(load.method, "PUT");
    assert_eq!(load.target, target);
    assert_eq!(load.header("expect"), Some("100-continue"));
    assert_eq!(load.header("host"), Some("fe.example:8030"));
    assert_eq!(
        load.header("content-length"),
        Some(STREAM_LOAD_BYTES.to_string().as_str())
    );
}

#[test]
fn stream_load_gets_no_100_continue_from_proxy() {
    let fe = FakeFe::builder("stream-load-fe").be_port(8040).start();
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let length = STREAM_LOAD_BYTES.to_string();

    for path in [
        "/api/db1/tbl1/_stream_load",
        "/api/db1/tbl1/_stream_load_2pc",
    ] {
        let target = format!("{path}?label=raw-{}", path.len());
        let head = build_request(
            "PUT",
            &target,
            proxy.addr(),
            &[
                ("Host", "fe.example:8030"),
                ("Expect", "100-continue"),
                ("Content-Length", &length),
                ("label", "raw-client"),
            ],
            b"",
        );
        let mut connection =
            RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).expect("cannot connect");
        connection.write(&head).expect("cannot send the head");
        let response = connection
            .read_response(false)
            .unwrap_or_else(|e| panic!("{path}: no response to the head alone: {e}"));

        assert!(
            response.informational.is_empty(),
            "{path}: the client got {:?} before the final response",
            response.informational
        );
        assert_eq!(
            response.status,
            307,
            "{path}: {}",
            String::from_utf8_lossy(&response.head)
        );
        assert_eq!(
            response.header("location"),
            Some(format!("http://user:pass@127.0.0.1:8040{target}").as_str())
        );

        let loads = fe.requests_to(path);
        assert_eq!(
            loads.len(),
            1,
            "{path}: the FE got {} requests",
            loads.len()
        );
        assert_eq!(loads[0].header("expect"), Some("100-continue"));
        assert_eq!(loads[0].header("host"), Some("fe.example:8030"));
        assert_eq!(loads[0].header("label"), Some("raw-client"));
    }
}

#[test]
fn fe_redirects_pass_through_unchanged() {
    let fe = ScriptedFe::start("redirecting-fe");
    let cases = [
        (
            "/api/db1/_query",
            307,
            "http://10.0.0.7:8030/api/db1/_query?x=%2F&y=+",
        ),
        (
            "/api/bootstrap",
            302,
            "http://master.example:8030/api/bootstrap?token=abc&cluster_id=1",
        ),
        ("/api/show_proc", 307, "/api/show_proc?path=%2Fbackends"),
        (
            "/api/_http_stream",
            307,
            "http://root:@127.0.0.1:8040/api/_http_stream",
        ),
    ];
    for (path, status, location) in cases {
        let reason = if status == 302 {
            "Found"
        } else {
            "Temporary Redirect"
        };
        fe.reply_to(
            path,
            Reply::new(
                &format!("HTTP/1.1 {status} {reason}"),
                &[("Location", location), ("Content-Type", "text/plain")],
                b"redirected",
            ),
        );
    }
    let proxy = start_scripted_proxy(proxy_builder(), &fe);

    for (path, status, location) in cases {
        for method in ["GET", "POST", "PUT"] {
            let request = build_request(method, path, proxy.addr(), &[], b"");
            let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
                .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
            assert_eq!(response.status, status, "{method} {path}");
            assert_eq!(
                response.header_values("location"),
                vec![location],
                "{method} {path}: Location changed"
            );
            let location_line = format!("Location: {location}\r\n");
            assert!(
                String::from_utf8_lossy(&response.head).contains(&location_line),
                "{method} {path}: the head has no line {location_line:?}: {}",
                String::from_utf8_lossy(&response.head)
            );
            assert_eq!(response.body, b"redirected", "{method} {path}");
        }
    }
}

#[test]
fn check_and_role_headers_pass_through() {
    let fe = FakeFe::start("meta-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);

    for path in ["/check", "/role"] {
        let response = proxy.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.body_text());
        assert_eq!(response.header("role"), Some("FOLLOWER"), "{path}");
        assert_eq!(response.header("token"), Some(TEST_TOKEN), "{path}");
        assert_eq!(response.header("cluster_id"), Some("123"), "{path}");
        assert_eq!(response.header("is_ready"), Some("true"), "{path}");
        assert_eq!(response.header(FAKE_FE_HEADER), Some("meta-fe"), "{path}");
    }
}

/// A request with extra headers and the `X-Forwarded-For` the FE should get for it.
struct ForwardingCase {
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    forwarded_for: &'static str,
}

#[test]
fn forwarding_headers_added_and_host_kept() {
    let fe = FakeFe::start("echo-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let cases = [
        ForwardingCase {
            path: "/api/xff/none",
            headers: &[],
            forwarded_for: "127.0.0.1",
        },
        ForwardingCase {
            path: "/api/xff/one",
            headers: &[("X-Forwarded-For", "10.1.2.3")],
            forwarded_for: "10.1.2.3, 127.0.0.1",
        },
        ForwardingCase {
            path: "/api/xff/list",
            headers: &[("X-Forwarded-For", "10.1.2.3, 10.4.5.6")],
            forwarded_for: "10.1.2.3, 10.4.5.6, 127.0.0.1",
        },
        ForwardingCase {
            path: "/api/xff/spoofed-real-ip",
            headers: &[("X-Real-IP", "192.0.2.1")],
            forwarded_for: "127.0.0.1",
        },
    ];

    for case in cases {
        let ForwardingCase {
            path,
            headers,
            forwarded_for: expected_forwarded_for,
        } = case;
        let mut all_headers = vec![("Host", "fe.example:8030")];
        all_headers.extend_from_slice(headers);
        let request = build_request("GET", path, proxy.addr(), &all_headers, b"");
        let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status, 200, "{path}: {}", response.body_text());

        let seen = fe.requests_to(path);
        assert_eq!(seen.len(), 1, "{path}: the FE got {} requests", seen.len());
        let seen = &seen[0];
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some(expected_forwarded_for),
            "{path}"
        );
        assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"), "{path}");
        assert_eq!(seen.header("host"), Some("fe.example:8030"), "{path}");
        let forwarded_for_fields = seen
            .headers
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .count();
        assert_eq!(forwarded_for_fields, 1, "{path}: {:?}", seen.headers);
    }
}

#[test]
fn repeated_forwarded_for_fields_all_kept() {
    let fe = FakeFe::start("echo-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let request = build_request(
        "GET",
        "/api/xff/repeated",
        proxy.addr(),
        &[
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Forwarded-For", "10.4.5.6"),
        ],
        b"",
    );
    let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT).expect("request");
    assert_eq!(response.status, 200, "{}", response.body_text());

    let seen = fe.requests_to("/api/xff/repeated");
    assert_eq!(seen.len(), 1);
    let values: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(name, _)| name == "x-forwarded-for")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(
        values.join(", "),
        "10.1.2.3, 10.4.5.6, 127.0.0.1",
        "every address the client sent comes before the client's own"
    );
}

#[test]
fn post_headers_and_body_reach_fe_unchanged() {
    let fe = ScriptedFe::start("echo-fe");
    let proxy = start_scripted_proxy(proxy_builder(), &fe);
    let mut body = b"k1\tv1\r\nk2\t\"quoted\"\r\n\x00\x01\xff binary tail".to_vec();
    body.extend(image_bytes(100_000));
    let sent_headers: [(&str, &str); 7] = [
        ("Host", "fe.example:8030"),
        ("Authorization", "Basic cm9vdDo="),
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("label", "load-2024-01-01_00:00:00"),
        ("column_separator", "\\t"),
        ("X-Doris-Custom", "a,  b ,c"),
        ("X-Doris-Custom", "second value"),
    ];
    let target = "/api/db1/tbl1/_echo?x=1";
    let request = build_request("POST", target, proxy.addr(), &sent_headers, &body);

    let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT).expect("request");
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.assert_body(&body, "body echoed by the FE");

    let seen = fe.requests_to("/api/db1/tbl1/_echo");
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, target);
    assert_eq!(seen.body, body, "the FE got a different body");
    for (name, value) in sent_headers {
        let values = seen.header_values(name);
        assert!(
            values.contains(&value),
            "header {name}: {value:?} did not reach the FE unchanged; it got {values:?}"
        );
    }
    assert_eq!(seen.header_values("x-doris-custom").len(), 2);

    // The head arrives byte for byte, in order and case, with the two forwarding headers
    // appended.
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the request has a head")
        + 2;
    let mut expected_head = request[..head_end].to_vec();
    expected_head.extend_from_slice(b"X-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&seen.head),
        String::from_utf8_lossy(&expected_head),
        "the request head changed on the way to the FE"
    );
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[test]
fn request_targets_reach_fe_byte_exact() {
    let fe = ScriptedFe::start("target-fe");
    let proxy = start_scripted_proxy(proxy_builder(), &fe);
    let targets = [
        "/api/x?a=%2F&b=+&c=%E4%B8%AD",
        "/api/x?a=%2f&b=%20&&c==d;e&a=2",
        "/api/db%2F1/tbl%201/_count?q=%25",
        "/api/x?",
        "/api/x?empty=&=novalue&plus=1+1",
        "/api/./x/../y?path=../../etc",
        "/api/x?json=%7B%22k%22%3A%5B1%2C2%5D%7D",
    ];

    for (index, target) in targets.iter().enumerate() {
        let marker = index.to_string();
        let request = build_request(
            "GET",
            target,
            proxy.addr(),
            &[("X-Target-Index", &marker)],
            b"",
        );
        let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(response.status, 200, "{target}: {}", response.body_text());

        let seen: Vec<String> = fe
            .requests()
            .into_iter()
            .filter(|r| r.header("x-target-index") == Some(marker.as_str()))
            .map(|r| r.target)
            .collect();
        assert_eq!(seen, vec![target.to_string()], "target changed on the way");
    }
}

/// Returns the offset of the first sampled byte of `block` (at `offset` in an `/image` body
/// of `total` bytes) that differs from the pattern. The sample is every byte of the first
/// and the last MiB and every 4099th byte in between. 4099 is a prime other than 251, so
/// the sample covers every phase of the pattern.
fn check_image_block(offset: u64, block: &[u8], total: u64) -> Option<u64> {
    const EDGE: u64 = 1024 * 1024;
    const STRIDE: u64 = 4099;
    for (i, byte) in block.iter().enumerate() {
        let position = offset + i as u64;
        let sampled =
            position < EDGE || position >= total - EDGE || position.is_multiple_of(STRIDE);
        if sampled && *byte != image_byte(position) {
            return Some(position);
        }
    }
    None
}

#[test]
fn gigabyte_download_streams_in_bounded_memory() {
    let fe = FakeFe::start("image-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let sampler = RssSampler::start(proxy.pid());

    let mut first_mismatch = None;
    let response = stream_get(
        proxy.addr(),
        &format!("/image?bytes={DOWNLOAD_BYTES}"),
        TRANSFER_TIMEOUT,
        |offset, block| {
            if first_mismatch.is_none() {
                first_mismatch = check_image_block(offset, block, DOWNLOAD_BYTES);
            }
            true
        },
    )
    .expect("the download through the proxy failed");
    let peak_rss = sampler.finish();

    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-length"),
        Some(DOWNLOAD_BYTES.to_string().as_str())
    );
    assert_eq!(response.body_bytes, DOWNLOAD_BYTES);
    assert_eq!(first_mismatch, None, "the body differs at this offset");
    assert!(
        peak_rss < RSS_BOUND_BYTES,
        "the proxy's peak VmRSS was {} MiB during a {} MiB download; bound {} MiB",
        peak_rss >> 20,
        DOWNLOAD_BYTES >> 20,
        RSS_BOUND_BYTES >> 20
    );
}

#[test]
fn large_uploads_stream_in_bounded_memory() {
    let fe = FakeFe::start("upload-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);

    for (method, chunked) in [("PUT", false), ("POST", true)] {
        let framing = if chunked { "chunked" } else { "Content-Length" };
        let sampler = RssSampler::start(proxy.pid());
        let response = stream_upload(
            proxy.addr(),
            method,
            "/upload",
            UPLOAD_BYTES,
            chunked,
            TRANSFER_TIMEOUT,
            image_byte,
        )
        .unwrap_or_else(|e| panic!("{method} {framing} upload failed: {e}"));
        let peak_rss = sampler.finish();

        assert_eq!(
            response.status,
            200,
            "{method} {framing}: {}",
            response.body_text()
        );
        assert_eq!(
            response.json()["received_bytes"].as_u64(),
            Some(UPLOAD_BYTES),
            "{method} {framing}: the FE received a different byte count"
        );
        assert!(
            peak_rss < RSS_BOUND_BYTES,
            "{method} {framing}: the proxy's peak VmRSS was {} MiB during a {} MiB upload; \
             bound {} MiB",
            peak_rss >> 20,
            UPLOAD_BYTES >> 20,
            RSS_BOUND_BYTES >> 20
        );
    }
}

#[test]
fn round_robin_follows_fe_health() {
    let mut fe_a = FakeFe::start("fe-a");
    let mut fe_b = FakeFe::start("fe-b");
    // No connect retries, so only the health check keeps requests away from a stopped FE.
    let proxy = proxy_builder()
        .backends(&[fe_a.addr(), fe_b.addr()])
        .set("fe.retries", "0")
        .set("fe.connect_timeout_ms", "1000")
        .start();
    assert!(proxy.wait_until_forwarding_to(&fe_a, FE_READY_TIMEOUT));
    assert!(proxy.wait_until_forwarding_to(&fe_b, FE_READY_TIMEOUT));

    let mut answered = Vec::new();
    for i in 0..20 {
        answered.push(answering_fe(&proxy, &format!("/api/rr/{i}")).expect("both FEs are up"));
    }
    let by_a = answered.iter().filter(|name| *name == "fe-a").count();
    let by_b = answered.iter().filter(|name| *name == "fe-b").count();
    assert!(
        by_a > 0 && by_b > 0,
        "requests did not alternate: {answered:?}"
    );
    assert_eq!(by_a + by_b, answered.len());

    let fe_b_unhealthy = format!("FE backend {} is unhealthy", fe_b.addr());
    assert!(
        wait_for_new_log_line(&proxy, &fe_b_unhealthy, || fe_b.stop()),
        "the health check did not take the stopped FE out within {HEALTH_CHANGE_TIMEOUT:?}"
    );
    for i in 0..50 {
        let answered = answering_fe(&proxy, &format!("/api/one-down/{i}"));
        assert_eq!(
            answered.as_deref(),
            Ok("fe-a"),
            "request {i} with one FE stopped"
        );
    }

    fe_a.stop();
    wait_for(
        HEALTH_CHANGE_TIMEOUT,
        "doris_fe_proxy_healthy_backends to drop to 0",
        || healthy_backends(&proxy) == Some(0.0),
    );
    let started = Instant::now();
    let response = proxy.get("/api/all-down");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 502, "{}", response.body_text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let error = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("no healthy FE"),
        "the 502 body does not say that no FE is healthy: {}",
        response.body_text()
    );
    assert!(
        elapsed < NO_HEALTHY_FE_502_BOUND,
        "the 502 took {elapsed:?} (hang check, bound {NO_HEALTHY_FE_502_BOUND:?})"
    );

    fe_b.restart();
    assert!(
        proxy.wait_until_forwarding_to(&fe_b, HEALTH_CHANGE_TIMEOUT),
        "the restarted FE did not come back into rotation"
    );
    for i in 0..20 {
        let answered = answering_fe(&proxy, &format!("/api/back/{i}"));
        assert_eq!(answered.as_deref(), Ok("fe-b"), "request {i} after restart");
    }
}

#[test]
fn fe_reporting_code_one_taken_out() {
    let fe_a = FakeFe::start("fe-a");
    let fe_b = FakeFe::start("fe-b");
    let proxy = proxy_builder()
        .backends(&[fe_a.addr(), fe_b.addr()])
        .set("fe.retries", "0")
        .start();
    assert!(proxy.wait_until_forwarding_to(&fe_a, FE_READY_TIMEOUT));
    assert!(proxy.wait_until_forwarding_to(&fe_b, FE_READY_TIMEOUT));

    let fe_a_unhealthy = format!("FE backend {} is unhealthy", fe_a.addr());
    let report_code_one = || fe_a.set_health(FeHealth::CodeOne);
    assert!(
        wait_for_new_log_line(&proxy, &fe_a_unhealthy, report_code_one),
        "an FE whose /api/health returns code 1 was not taken out within \
         {HEALTH_CHANGE_TIMEOUT:?}"
    );
    assert_eq!(healthy_backends(&proxy), Some(1.0));
    for i in 0..30 {
        let answered = answering_fe(&proxy, &format!("/api/code-one/{i}"));
        assert_eq!(answered.as_deref(), Ok("fe-b"), "request {i}");
    }

    fe_a.set_health(FeHealth::Ok);
    assert!(
        proxy.wait_until_forwarding_to(&fe_a, HEALTH_CHANGE_TIMEOUT),
        "the FE did not come back after its health returned code 0"
    );
}

#[test]
fn failed_connect_retried_on_other_fe() {
    let fe = FakeFe::start("live-fe");
    let dead = support::http::free_addr();
    // The first check at start fails once, below the threshold of 3, and the next one is
    // ten minutes away, so the dead backend stays in the rotation for the whole test.
    let proxy = proxy_builder()
        .backends(&[dead, fe.addr()])
        .set(
            "fe.health_check",
            "{ path: /api/health, interval_ms: 600000, timeout_ms: 5000, consecutive_failure: 3 }",
        )
        .set("fe.retries", "2")
        .start();
    assert!(proxy.wait_until_forwarding_to(&fe, FE_READY_TIMEOUT));
    assert_eq!(healthy_backends(&proxy), Some(2.0));
    let fds_before = open_fd_count(proxy.pid());

    let requests = 100;
    for i in 0..requests {
        // The POSTs go to `/upload`, which reads the body. hyper closes a connection whose
        // request body the handler left unread, and a POST is not retried on a pooled
        // connection that the FE closed.
        let (method, target, body) = if i % 2 == 0 {
            ("GET", format!("/api/retry/{i}"), &b""[..])
        } else {
            ("POST", format!("/upload?retry={i}"), &b"body"[..])
        };
        let request = build_request(method, &target, proxy.addr(), &[], body);
        let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert_eq!(
            response.status,
            200,
            "{method} {target}: {}",
            response.body_text()
        );
        assert_eq!(response.header(FAKE_FE_HEADER), Some("live-fe"));
    }
    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).expect("connect");
    for i in 0..requests {
        let response = connection.get(&format!("/api/retry-kept-alive/{i}"));
        assert_eq!(response.status, 200, "kept-alive request {i}");
    }
    drop(connection);

    let log = proxy.log_text();
    let retried = log
        .lines()
        .filter(|l| l.contains("Fail to proxy") && l.contains("retry: true"))
        .count();
    assert!(
        retried > 0,
        "round robin never picked the dead backend, so nothing was retried"
    );
    // Round robin alternates between the two backends, so about half of the requests go to
    // the dead one first. If a retry moved the round-robin position, every request would.
    let total = 2 * requests;
    assert!(
        retried <= total * 3 / 4,
        "{retried} of {total} requests went to the dead backend first"
    );
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("status: 502") || l.contains("panicked"))
        .collect();
    assert!(
        failed.is_empty(),
        "a retried request failed or the proxy logged an error:\n{}",
        failed.join("\n")
    );
    let access_to_dead = log
        .lines()
        .filter(|l| l.contains(" access] ") && l.contains(&dead.to_string()))
        .count();
    assert_eq!(
        access_to_dead, 0,
        "an access line names the dead backend as the upstream"
    );
    assert!(
        !log.contains(TEST_TOKEN),
        "the cluster token appears in the log"
    );
    // Failed connects must not leave sockets behind. A few pooled upstream connections and
    // client sockets that are still closing may remain.
    wait_for(
        Duration::from_secs(5),
        "the proxy's open file descriptors to return near their count before the retries",
        || open_fd_count(proxy.pid()) <= fds_before + 8,
    );
}

#[test]
fn upstream_connections_reused() {
    let fe = ScriptedFe::start("keep-alive-fe");
    let proxy = start_scripted_proxy(proxy_builder(), &fe);
    let before = fe.connections_used_by_proxied_requests();

    let requests = 200;
    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).expect("connect");
    for i in 0..requests {
        let target = format!("/api/keep-alive/{i}");
        let body = format!("body {i}");
        let request = if i % 2 == 0 {
            build_request("GET", &target, proxy.addr(), &[], b"")
        } else {
            build_request("POST", &target, proxy.addr(), &[], body.as_bytes())
        };
        let response = connection
            .send(&request)
            .unwrap_or_else(|e| panic!("request {i} on the kept-alive connection: {e}"));
        assert_eq!(
            response.status,
            200,
            "request {i}: {}",
            response.body_text()
        );
        assert!(
            !response.closes_connection(),
            "request {i} closed the connection"
        );
        if i % 2 == 1 {
            assert_eq!(response.body, body.as_bytes(), "request {i}");
        }
    }

    let seen = fe
        .requests()
        .iter()
        .filter(|r| r.path().starts_with("/api/keep-alive/"))
        .count();
    assert_eq!(seen, requests);
    let used = fe.connections_used_by_proxied_requests() - before;
    assert!(
        used <= requests / 10,
        "{requests} sequential requests used {used} upstream connections; the proxy does \
         not reuse them"
    );
}

#[test]
fn client_abort_mid_download_leaves_proxy_usable() {
    let fe = FakeFe::start("image-fe");
    let proxy = start_proxy(proxy_builder().fe(&fe), &fe);
    let fds_before = open_fd_count(proxy.pid());

    for round in 0..3 {
        let mut received = 0;
        let response = stream_get(
            proxy.addr(),
            &format!("/image?bytes={DOWNLOAD_BYTES}"),
            TRANSFER_TIMEOUT,
            |_, block| {
                received += block.len();
                received < 4 * 1024 * 1024
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: the download did not start: {e}"));
        assert_eq!(response.status, 200);
        // `stream_get` returned, so the client socket is closed here.

        for i in 0..10 {
            let answered = answering_fe(&proxy, &format!("/api/after-abort/{round}/{i}"));
            assert_eq!(
                answered.as_deref(),
                Ok("image-fe"),
                "round {round} request {i}"
            );
        }
        let small = proxy.get("/image?bytes=300000");
        assert_eq!(small.status, 200);
        small.assert_body(&image_bytes(300_000), "small download after an aborted one");
    }

    wait_for(
        Duration::from_secs(10),
        "the proxy to close the connections of the aborted downloads",
        || open_fd_count(proxy.pid()) <= fds_before + 4,
    );
}

#[test]
fn fe_closing_after_redirect_leaves_proxy_usable() {
    let fe = ScriptedFe::start("closing-fe");
    let location = "http://user:pass@127.0.0.1:8040/api/db1/tbl1/_stream_load";
    fe.reply_to(
        "/api/db1/tbl1/_stream_load",
        Reply::new(
            "HTTP/1.1 307 Temporary Redirect",
            &[("Location", location)],
            b"",
        )
        .without_reading_body()
        .then_close(),
    );
    fe.reply_to(
        "/api/redirect-then-close",
        Reply::new(
            "HTTP/1.1 307 Temporary Redirect",
            &[("Location", "http://127.0.0.1:8031/api/elsewhere")],
            b"",
        )
        .then_close(),
    );
    let proxy = start_scripted_proxy(proxy_builder(), &fe);
    let length = STREAM_LOAD_BYTES.to_string();
    let file = proxy.dir().join("rows.csv");
    write_pattern_file(&file, STREAM_LOAD_BYTES);

    for round in 0..5 {
        // A client that waits for 100 Continue and gets the 307 instead.
        let head = build_request(
            "PUT",
            "/api/db1/tbl1/_stream_load",
            proxy.addr(),
            &[("Expect", "100-continue"), ("Content-Length", &length)],
            b"",
        );
        let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).expect("connect");
        connection.write(&head).expect("send the head");
        let response = connection.read_response(false).expect("the 307");
        assert_eq!(response.status, 307, "round {round}");
        assert_eq!(response.header("location"), Some(location));
        drop(connection);

        // curl, which stops sending the file when the 307 arrives.
        let output = run_curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            "-T",
            file.to_str().expect("temporary paths are UTF-8"),
            "-H",
            "Expect: 100-continue",
            &format!("http://{}/api/db1/tbl1/_stream_load", proxy.addr()),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "307",
            "round {round}: curl: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        // A redirect without a body, after which the FE closes the connection.
        let response = proxy.get("/api/redirect-then-close");
        assert_eq!(response.status, 307, "round {round}");

        for i in 0..10 {
            let response = proxy.get(&format!("/api/after-close/{round}/{i}"));
            assert_eq!(
                response.status,
                200,
                "round {round} request {i}: {}",
                response.body_text()
            );
        }
    }
}
