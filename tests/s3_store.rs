//! The S3 store against a real S3-protocol server (`s3s-fs` on loopback). The tests cover
//! every row of the shared `requests.tsv`, single-flight loads under concurrency, and
//! serving from the cache when the store is gone. They also cover the FE fallback with its
//! write-back to the bucket, two proxies on one bucket, the envelope when neither the store
//! nor an FE responds, and ETag, 304 and HEAD.

mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::cases::{self, CaseFile};
use support::checks::{
    assert_internal_error, check_file, http_status_for, md5_hex, object_key, run_cases, seed_bucket,
};
use support::http::{build_request, wait_until};
use support::relay::DelayRelay;
use support::s3_proxy::{
    CLIENT_TIMEOUT, HANG_MARGIN, PREFIX, SMALL_FILE_PATH, assert_file, get_file, metric,
    s3_proxy_builder, settled_metric, start_forwarding, target,
};
use support::{FakeFe, ProxyBuilder, ProxyProcess, RawConnection, S3Server};

/// How long a test waits for a write-back to show up in the bucket.
const WRITE_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Store and FE timeouts of the outage tests, in milliseconds. They are small, so a request
/// that waits for both still finishes quickly.
const STORE_TIMEOUT_MS: u64 = 500;
const FE_TIMEOUT_MS: u64 = 500;

/// Starts a fake FE that accepts the case token and, with `files`, serves the case files.
fn start_case_fe(name: &str, files: bool) -> FakeFe {
    let builder = FakeFe::builder(name).token(cases::token());
    if files {
        builder.files(cases::files_dir()).start()
    } else {
        builder.start()
    }
}

/// Returns `builder` with the store and FE timeouts of the outage tests.
fn with_short_timeouts(builder: ProxyBuilder) -> ProxyBuilder {
    builder
        .set("small_file.store_timeout_ms", &STORE_TIMEOUT_MS.to_string())
        .set("small_file.fe_timeout_ms", &FE_TIMEOUT_MS.to_string())
}

/// Returns whether `fe` received a `GET /api/get_small_file` for `id`.
fn fe_fetched(fe: &FakeFe, id: i64) -> bool {
    let needle = format!("file_id={id}");
    fe.requests_to(SMALL_FILE_PATH)
        .iter()
        .any(|r| r.method == "GET" && r.target.split(['?', '&']).any(|part| part == needle))
}

/// Waits until the bucket contains `<PREFIX>/<id>/<name>` with exactly the file's bytes.
fn wait_for_object(s3: &S3Server, file: &CaseFile) {
    let key = object_key(PREFIX, file.id, &file.name);
    let written = wait_until(WRITE_BACK_TIMEOUT, || {
        s3.object(&key).as_deref() == Some(file.bytes.as_slice())
    });
    if !written {
        let found = s3
            .object(&key)
            .map(|bytes| format!("{} bytes, md5 {}", bytes.len(), md5_hex(&bytes)));
        panic!(
            "object {key} does not hold file {} ({} bytes, md5 {}) after {WRITE_BACK_TIMEOUT:?}; \
             found: {found:?}",
            file.id,
            file.bytes.len(),
            md5_hex(&file.bytes)
        );
    }
}

#[test]
fn every_case_row_from_s3() {
    let s3 = S3Server::start();
    let seeded = seed_bucket(&s3, PREFIX, &cases::files_dir());
    assert_eq!(seeded, [11002, 11003, 11004], "case files seeded");
    // No files on the FE: an unknown id stays unknown and nothing is written back.
    let fe = start_case_fe("case-fe", false);
    let builder = s3_proxy_builder(&s3).token_version_file(&cases::version_file());
    let proxy = start_forwarding(builder, &fe);

    run_cases(&proxy, &fe, |case| case.status);
}

#[test]
fn http_error_status_cases_from_s3() {
    let s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    let fe = start_case_fe("case-fe", false);
    let builder = s3_proxy_builder(&s3)
        .token_version_file(&cases::version_file())
        .set("small_file.error_status", "http");
    let proxy = start_forwarding(builder, &fe);

    run_cases(&proxy, &fe, http_status_for);
}

/// Number of concurrent connections that ask for one cold id.
const CONCURRENT_REQUESTS: usize = 200;

/// Delay of every chunk to and from S3 in the single-flight test: with a list and a get of
/// two chunks each, one load takes over a second, so every request arrives while it runs.
const SLOW_S3_DELAY: Duration = Duration::from_millis(300);

#[test]
fn concurrent_cold_requests_load_once() {
    let s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    let relay = DelayRelay::start(s3.addr(), SLOW_S3_DELAY);
    let fe = start_case_fe("fe", false);
    let builder = s3_proxy_builder(&s3).set(
        "small_file.s3.endpoint",
        &format!("\"{}\"", relay.endpoint()),
    );
    let proxy = start_forwarding(builder, &fe);
    let file = cases::case_file(11002);

    let request = Arc::new(build_request(
        "GET",
        &target(file.id),
        proxy.addr(),
        &[],
        b"",
    ));
    let barrier = Arc::new(Barrier::new(CONCURRENT_REQUESTS));
    let addr = proxy.addr();
    let workers: Vec<_> = (0..CONCURRENT_REQUESTS)
        .map(|_| {
            let request = Arc::clone(&request);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let connection = RawConnection::open(addr, CLIENT_TIMEOUT);
                // Every thread reaches the barrier, also after a failed connect, so none
                // waits forever. After it, all requests go out at once.
                barrier.wait();
                connection.and_then(|mut connection| connection.send(&request))
            })
        })
        .collect();

    let mut failures = Vec::new();
    for (index, worker) in workers.into_iter().enumerate() {
        let result = worker.join().expect("request thread panicked");
        let checked = result
            .map_err(|e| format!("transport error: {e}"))
            .and_then(|response| check_file(&response, &file));
        if let Err(reason) = checked {
            failures.push(format!("request {index}: {reason}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CONCURRENT_REQUESTS} concurrent requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let gets = settled_metric(
        &proxy,
        r#"doris_fe_proxy_store_operations_total{op="get",result="ok"}"#,
        1.0,
    );
    let lists = settled_metric(
        &proxy,
        r#"doris_fe_proxy_store_operations_total{op="list",result="ok"}"#,
        1.0,
    );
    assert_eq!(gets, 1.0, "store GETs for {CONCURRENT_REQUESTS} requests");
    assert_eq!(lists, 1.0, "store lists for {CONCURRENT_REQUESTS} requests");
    let misses = settled_metric(
        &proxy,
        r#"doris_fe_proxy_small_file_requests_total{outcome="miss_store"}"#,
        1.0,
    );
    let hits = settled_metric(
        &proxy,
        r#"doris_fe_proxy_small_file_requests_total{outcome="hit"}"#,
        (CONCURRENT_REQUESTS - 1) as f64,
    );
    assert_eq!(misses, 1.0, "requests that loaded the file");
    assert_eq!(
        hits,
        (CONCURRENT_REQUESTS - 1) as f64,
        "requests answered by the shared load"
    );
    assert_eq!(
        fe.count("GET", SMALL_FILE_PATH),
        0,
        "the file is in the store, so the FE is never asked"
    );

    // Each request that shared the load waited for the delayed S3, over 250 ms. A request
    // that arrived after the load ended would have been a quick cache hit.
    settled_metric(
        &proxy,
        "doris_fe_proxy_small_file_request_duration_seconds_count",
        CONCURRENT_REQUESTS as f64,
    );
    let quick = metric(
        &proxy,
        r#"doris_fe_proxy_small_file_request_duration_seconds_bucket{le="0.25"}"#,
    );
    assert!(
        quick < (CONCURRENT_REQUESTS / 2) as f64,
        "{quick} of {CONCURRENT_REQUESTS} requests took under 250 ms, so fewer than half of \
         them waited for the shared load and the test did not exercise concurrent misses"
    );
}

#[test]
fn cached_files_survive_store_outage() {
    let mut s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    let fe = start_case_fe("fe", true);
    let proxy = start_forwarding(s3_proxy_builder(&s3), &fe);
    let warmed = [cases::case_file(11002), cases::case_file(11003)];
    let uncached = cases::case_file(11004);

    for file in &warmed {
        assert_file(&get_file(&proxy, file.id), file, "warming from S3");
    }
    assert_eq!(
        settled_metric(
            &proxy,
            r#"doris_fe_proxy_small_file_requests_total{outcome="miss_store"}"#,
            2.0
        ),
        2.0,
        "both warmed files come from the store"
    );
    assert_eq!(
        fe.count("GET", SMALL_FILE_PATH),
        0,
        "FE fetches while S3 runs"
    );

    s3.kill();

    for round in 0..3 {
        for file in &warmed {
            let what = format!(
                "cached file {} in round {round} after S3 was killed",
                file.id
            );
            assert_file(&get_file(&proxy, file.id), file, &what);
        }
    }

    let response = get_file(&proxy, uncached.id);
    assert_file(&response, &uncached, "uncached file after S3 was killed");
    assert!(
        fe_fetched(&fe, uncached.id),
        "the FE recorded no GET {SMALL_FILE_PATH} for file id {}; it got: {:?}",
        uncached.id,
        fe.requests_to(SMALL_FILE_PATH)
    );
    assert_eq!(
        settled_metric(
            &proxy,
            r#"doris_fe_proxy_fe_fallback_fetches_total{result="ok"}"#,
            1.0
        ),
        1.0,
        "FE fallback fetches"
    );
    assert_eq!(
        fe.count("GET", SMALL_FILE_PATH),
        1,
        "only the uncached file is fetched from the FE"
    );
}

#[test]
fn fe_fallback_mirrors_to_bucket() {
    let s3 = S3Server::start();
    let fe = start_case_fe("fe", true);
    let proxy = start_forwarding(s3_proxy_builder(&s3), &fe);

    for id in [11002, 11003, 11004] {
        let file = cases::case_file(id);
        let response = get_file(&proxy, id);
        assert_file(&response, &file, "file from the FE into an empty bucket");
        assert_eq!(
            md5_hex(&response.body),
            md5_hex(&file.bytes),
            "MD5 of file {id}"
        );
        wait_for_object(&s3, &file);
    }
    assert_eq!(
        settled_metric(
            &proxy,
            r#"doris_fe_proxy_fe_fallback_fetches_total{result="ok"}"#,
            3.0
        ),
        3.0,
        "FE fallback fetches"
    );
    assert_eq!(
        settled_metric(
            &proxy,
            r#"doris_fe_proxy_store_operations_total{op="put",result="ok"}"#,
            3.0
        ),
        3.0,
        "write-backs to the bucket"
    );
}

#[test]
fn second_proxy_reads_mirrored_file() {
    let s3 = S3Server::start();
    let mut fe = start_case_fe("fe", true);
    let file = cases::case_file(11004);

    let first = start_forwarding(s3_proxy_builder(&s3), &fe);
    assert_file(&get_file(&first, file.id), &file, "proxy 1, from the FE");
    wait_for_object(&s3, &file);
    fe.stop();

    // Proxy 2 starts cold with the stopped FE as its only backend.
    let second = s3_proxy_builder(&s3).fe(&fe).start();
    assert_file(
        &get_file(&second, file.id),
        &file,
        "proxy 2, from the bucket",
    );
    assert_eq!(
        settled_metric(
            &second,
            r#"doris_fe_proxy_small_file_requests_total{outcome="miss_store"}"#,
            1.0
        ),
        1.0,
        "proxy 2 loads the file from the store"
    );
    assert_eq!(
        settled_metric(
            &second,
            r#"doris_fe_proxy_fe_fallback_fetches_total{result="ok"}"#,
            0.0
        ),
        0.0,
        "proxy 2 fetches nothing from an FE"
    );
    assert_eq!(
        fe.count("GET", SMALL_FILE_PATH),
        1,
        "only proxy 1 fetched from the FE"
    );
}

/// Requests sent while neither the store nor an FE responds.
const OUTAGE_REQUESTS: i64 = 20;

/// Returns the largest time one request may take while store and FE are both down.
fn outage_bound() -> Duration {
    Duration::from_millis(STORE_TIMEOUT_MS + FE_TIMEOUT_MS) + HANG_MARGIN
}

/// Sends [`OUTAGE_REQUESTS`] requests for distinct ids and checks that each one gets the
/// InternalError envelope with `status` and finishes within [`outage_bound`].
fn assert_outage_answers(proxy: &ProxyProcess, status: u16) {
    for id in 50_001..=50_000 + OUTAGE_REQUESTS {
        let started = Instant::now();
        let response = get_file(proxy, id);
        let elapsed = started.elapsed();
        assert_internal_error(&response, status, &format!("file id {id}"));
        assert!(
            elapsed < outage_bound(),
            "file id {id} took {elapsed:?}, over store_timeout_ms + fe_timeout_ms + \
             {HANG_MARGIN:?} = {:?}: the request waited for more than the two timeouts",
            outage_bound()
        );
    }
}

/// Starts a proxy whose S3 server is killed and whose only FE backend does not listen.
fn start_outage_proxy(s3: &mut S3Server, error_status: &str) -> ProxyProcess {
    let proxy = with_short_timeouts(s3_proxy_builder(s3))
        .set("small_file.error_status", error_status)
        .start();
    s3.kill();
    proxy
}

#[test]
fn store_and_fe_down_is_internal_error() {
    let mut s3 = S3Server::start();
    let proxy = start_outage_proxy(&mut s3, "doris");

    assert_outage_answers(&proxy, 200);

    let log = proxy.log_text();
    let store_lines = log
        .lines()
        .filter(|line| line.contains("similar store errors held back"))
        .count();
    assert!(
        (1..=3).contains(&store_lines),
        "{OUTAGE_REQUESTS} failed requests logged the store error {store_lines} times, \
         expected 1 to 3 (rate-limited); log:\n{log}"
    );
    let fe_lines = log
        .lines()
        .filter(|line| line.contains("similar FE fallback errors held back"))
        .count();
    assert!(
        fe_lines <= 3,
        "{OUTAGE_REQUESTS} failed requests logged the FE error {fe_lines} times, expected \
         at most 3 (rate-limited); log:\n{log}"
    );
}

#[test]
fn store_and_fe_down_http_503() {
    let mut s3 = S3Server::start();
    let proxy = start_outage_proxy(&mut s3, "http");

    assert_outage_answers(&proxy, 503);
}

#[test]
fn etag_304_and_head_from_s3() {
    let s3 = S3Server::start();
    seed_bucket(&s3, PREFIX, &cases::files_dir());
    let fe = start_case_fe("fe", false);
    let proxy = start_forwarding(s3_proxy_builder(&s3), &fe);
    let mut connection = RawConnection::open(proxy.addr(), CLIENT_TIMEOUT).unwrap();

    for id in [11002, 11003, 11004] {
        let file = cases::case_file(id);
        let etag = format!("\"{}\"", md5_hex(&file.bytes));
        let target = target(id);

        // HEAD first, so that the cold load from S3 happens under a HEAD.
        let head = connection.request("HEAD", &target, &[]);
        assert_eq!(head.status, 200, "HEAD of file {id}");
        let get = connection.get(&target);
        assert_file(&get, &file, &format!("GET of file {id} after HEAD"));
        assert_eq!(get.header("ETag"), Some(etag.as_str()), "ETag of file {id}");
        for name in [
            "Content-Length",
            "ETag",
            "Content-Type",
            "Content-Disposition",
        ] {
            assert_eq!(
                head.header(name),
                get.header(name),
                "HEAD header {name} of file {id}"
            );
        }

        let not_modified = connection.request("GET", &target, &[("If-None-Match", &etag)]);
        assert_eq!(not_modified.status, 304, "If-None-Match of file {id}");
        assert_eq!(not_modified.header("ETag"), Some(etag.as_str()));
        assert!(not_modified.body.is_empty());

        let other = connection.request("GET", &target, &[("If-None-Match", "\"0000\"")]);
        assert_file(
            &other,
            &file,
            &format!("GET of file {id} with another ETag"),
        );
    }

    // A body sent after a HEAD or 304 response would break the next response on this
    // connection, so one more GET shows that none was sent.
    let last = cases::case_file(11002);
    assert_file(
        &connection.get(&target(last.id)),
        &last,
        "last GET on the connection",
    );
}
