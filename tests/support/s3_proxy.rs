//! Setup shared by the tests of the S3 store: a proxy over a bucket of an [`S3Server`] with
//! the case token, generous timeouts and a lenient health check, plus small-file requests
//! and metric reads against it.

use std::time::Duration;

use super::cases::{self, CaseFile};
use super::checks::{check_file, small_file_target};
use super::fake_fe::FakeFe;
use super::http::{RawResponse, build_request, raw_request, wait_until};
use super::proxy::{ProxyBuilder, ProxyProcess};
use super::s3::S3Server;

/// Key prefix of the small files in the bucket.
pub const PREFIX: &str = "doris/small_files";

/// How long a test waits for the proxy to count a fake FE as healthy.
pub const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout of one client request: long enough that only a hang reaches it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Slack on top of the store and FE timeouts before a request counts as hung: scheduling,
/// one object_store retry, the debug build and a loaded machine all fit in it.
pub const HANG_MARGIN: Duration = Duration::from_secs(5);

pub const SMALL_FILE_PATH: &str = "/api/get_small_file";

/// Store and FE timeout of the tests that expect S3 and the fake FE to work, in
/// milliseconds: far above a loopback round trip, so that a loaded machine does not turn a
/// working S3 into a timeout.
pub const GENEROUS_TIMEOUT_MS: &str = "10000";

/// FE health check of every test proxy. A check that times out on a loaded machine would
/// mark a running fake FE down and leave the FE fallback without a backend, so the timeout
/// is long and one failed check is not enough.
pub const HEALTH_CHECK: &str =
    "{ path: /api/health, interval_ms: 200, timeout_ms: 10000, consecutive_failure: 3 }";

/// How long [`settled_metric`] waits for a sample to reach its expected value.
pub const METRIC_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns a proxy builder with the store `s3://<bucket>/PREFIX` on `s3`, the case token,
/// [`GENEROUS_TIMEOUT_MS`] and [`HEALTH_CHECK`].
pub fn s3_proxy_builder(s3: &S3Server) -> ProxyBuilder {
    ProxyBuilder::new()
        .s3_store(s3, PREFIX)
        .token_value(&cases::token())
        .set("small_file.store_timeout_ms", GENEROUS_TIMEOUT_MS)
        .set("small_file.fe_timeout_ms", GENEROUS_TIMEOUT_MS)
        .set("fe.health_check", HEALTH_CHECK)
}

/// Starts the proxy with `fe` as its one backend and waits until it forwards to it.
pub fn start_forwarding(builder: ProxyBuilder, fe: &FakeFe) -> ProxyProcess {
    let proxy = builder.fe(fe).start();
    assert!(
        proxy.wait_until_forwarding_to(fe, FE_READY_TIMEOUT),
        "the proxy did not forward GET /api/health to the fake FE within {FE_READY_TIMEOUT:?}"
    );
    proxy
}

/// Returns the small-file target of `id` with the case token.
pub fn target(id: i64) -> String {
    small_file_target(&cases::token(), &id.to_string())
}

/// Sends `GET` for file `id` on a new connection, bounded by [`CLIENT_TIMEOUT`].
pub fn get_file(proxy: &ProxyProcess, id: i64) -> RawResponse {
    let request = build_request("GET", &target(id), proxy.addr(), &[], b"");
    raw_request(proxy.addr(), &request, CLIENT_TIMEOUT)
}

/// Panics with `what` unless `response` is `file`, served by the proxy.
pub fn assert_file(response: &RawResponse, file: &CaseFile, what: &str) {
    if let Err(reason) = check_file(response, file) {
        panic!("{what}: {reason}");
    }
}

/// Returns a metric sample, 0 when the series has not been created yet.
pub fn metric(proxy: &ProxyProcess, series: &str) -> f64 {
    proxy.metric_value(series).unwrap_or(0.0)
}

/// Returns a metric sample once it equals `expected`, or the last sample read after
/// [`METRIC_SETTLE_TIMEOUT`]. The proxy counts a request after it has written the response
/// and counts a write-back after the object is stored, so a sample read right after the
/// response or object arrives can lag by one.
pub fn settled_metric(proxy: &ProxyProcess, series: &str, expected: f64) -> f64 {
    let mut value = metric(proxy, series);
    wait_until(METRIC_SETTLE_TIMEOUT, || {
        value = metric(proxy, series);
        value == expected
    });
    value
}
