//! Acceptance tests of `/api/get_small_file` against the real binary: every row of the
//! shared `requests.tsv`, conditional and HEAD requests, keep-alive after errors, unsafe
//! file names, bad store objects and the `error_status: http` mapping.

mod support;

use std::path::Path;
use std::time::Duration;

use support::cases;
use support::checks::{
    assert_internal_error, http_status_for, md5_hex, run_cases, small_file_target,
};
use support::http::{DEFAULT_TIMEOUT, build_request, try_raw_request};
use support::{FakeFe, ProxyBuilder, ProxyProcess, RawConnection, RawResponse};

/// How long a test waits for the proxy to count the fake FE as healthy.
const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a fake FE that accepts the case token but has no files, so an unknown id that the
/// proxy looks up on the FE stays unknown and nothing is written back to the case store.
fn start_case_fe() -> FakeFe {
    FakeFe::builder("case-fe").token(cases::token()).start()
}

/// Returns a proxy builder over the case store and the case VERSION file, forwarding to `fe`.
fn case_proxy_builder(fe: &FakeFe) -> ProxyBuilder {
    ProxyBuilder::new()
        .fe(fe)
        .store_dir(&cases::files_dir())
        .token_version_file(&cases::version_file())
}

fn start_forwarding(builder: ProxyBuilder, fe: &FakeFe) -> ProxyProcess {
    let proxy = builder.start();
    assert!(
        proxy.wait_until_forwarding_to(fe, FE_READY_TIMEOUT),
        "the proxy did not forward GET /api/health to the fake FE within {FE_READY_TIMEOUT:?}"
    );
    proxy
}

fn target_for(id: &str) -> String {
    small_file_target(&cases::token(), id)
}

#[test]
fn every_case_row_matches() {
    let fe = start_case_fe();
    let proxy = start_forwarding(case_proxy_builder(&fe), &fe);
    run_cases(&proxy, &fe, |case| case.status);
}

#[test]
fn http_error_status_maps_cases() {
    let fe = start_case_fe();
    let builder = case_proxy_builder(&fe).set("small_file.error_status", "http");
    let proxy = start_forwarding(builder, &fe);
    run_cases(&proxy, &fe, http_status_for);
}

#[test]
fn head_sends_get_headers_without_body() {
    let fe = start_case_fe();
    let proxy = start_forwarding(case_proxy_builder(&fe), &fe);
    let file = cases::case_file(11002);
    let target = target_for("11002");
    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).unwrap();

    let get = connection.get(&target);
    assert_eq!(get.status, 200, "GET body: {}", get.body_text());
    let head = connection.request("HEAD", &target, &[]);
    assert_eq!(head.status, 200);
    for name in [
        "Content-Length",
        "ETag",
        "Content-Type",
        "Content-Disposition",
    ] {
        assert_eq!(head.header(name), get.header(name), "HEAD header {name}");
    }
    assert_eq!(
        head.header("ETag"),
        Some(format!("\"{}\"", md5_hex(&file.bytes)).as_str())
    );
    assert_eq!(
        head.header("Content-Length"),
        Some(file.bytes.len().to_string().as_str())
    );

    // A body after the HEAD response would corrupt the next response on this connection.
    let again = connection.get(&target);
    assert_eq!(again.status, 200);
    again.assert_body(&file.bytes, "GET after HEAD");
}

#[test]
fn matching_etag_gives_304() {
    let fe = start_case_fe();
    let proxy = start_forwarding(case_proxy_builder(&fe), &fe);
    let file = cases::case_file(11004);
    let target = target_for("11004");
    let etag = format!("\"{}\"", md5_hex(&file.bytes));
    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).unwrap();

    let not_modified = connection.request("GET", &target, &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("ETag"), Some(etag.as_str()));
    assert!(not_modified.body.is_empty());

    let other = connection.request("GET", &target, &[("If-None-Match", "\"0000\"")]);
    assert_eq!(other.status, 200);
    other.assert_body(&file.bytes, "GET with another ETag");
}

#[test]
fn keep_alive_survives_error_envelope() {
    let fe = start_case_fe();
    let proxy = start_forwarding(case_proxy_builder(&fe), &fe);
    let file = cases::case_file(11002);
    let mut connection = RawConnection::open(proxy.addr(), DEFAULT_TIMEOUT).unwrap();

    let bad_token = connection.get("/api/get_small_file?token=wrong&file_id=11002");
    assert_eq!(
        bad_token.body_text(),
        r#"{"msg":"Error","code":1,"data":"Invalid token","count":0}"#
    );
    assert!(!bad_token.closes_connection(), "{:?}", bad_token.headers);

    let served = connection.get(&target_for("11002"));
    assert_eq!(served.status, 200);
    served.assert_body(&file.bytes, "GET after an invalid token");

    let missing = connection.get("/api/get_small_file");
    assert_eq!(missing.status, 200);
    assert!(!missing.closes_connection(), "{:?}", missing.headers);

    let served_again = connection.get(&target_for("11002"));
    served_again.assert_body(&file.bytes, "GET after a missing parameter");
}

/// Writes `<store>/<id>/<name>` with `bytes`.
fn put_store_file(store: &Path, id: i64, name: &str, bytes: &[u8]) {
    let folder = store.join(id.to_string());
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(name), bytes).unwrap();
}

/// Asserts that no status or header line of `response` carries a CR or LF of its own.
fn assert_header_lines_clean(response: &RawResponse, what: &str) {
    let head = response
        .head
        .strip_suffix(b"\r\n\r\n")
        .unwrap_or(&response.head);
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            !line.contains(&b'\r'),
            "{what}: a header line carries CR: {:?}",
            String::from_utf8_lossy(line)
        );
    }
    for (name, value) in &response.headers {
        assert!(
            !value.chars().any(char::is_control),
            "{what}: header {name} = {value:?} has a control character"
        );
    }
}

#[test]
fn control_characters_never_reach_header() {
    let fe = start_case_fe();
    let store = tempfile::tempdir().unwrap();
    // object_store percent-encodes control characters in key segments, so these on-disk
    // names are the keys of files named "a\rb.pem", "a\nb.pem" and "a\r\nb.pem".
    let encoded = [(31, "a%0Db.pem"), (32, "a%0Ab.pem"), (33, "a%0D%0Ab.pem")];
    // Raw control characters in a file name are not valid object_store keys.
    let raw = [(34, "a\rb.pem"), (35, "a\nb.pem")];
    for (id, name) in encoded.iter().chain(&raw) {
        put_store_file(store.path(), *id, name, b"certificate bytes");
    }
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .store_dir(store.path())
        .token_value(&cases::token());
    let proxy = start_forwarding(builder, &fe);

    for (id, name) in encoded.iter().chain(&raw) {
        let what = format!("id {id}, file {name:?}");
        let request = build_request("GET", &target_for(&id.to_string()), proxy.addr(), &[], b"");
        let response = try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: the response does not parse: {e}"));
        assert_header_lines_clean(&response, &what);
    }

    for (id, name) in encoded {
        let response = proxy.get(&target_for(&id.to_string()));
        assert_eq!(
            response.status,
            200,
            "file {name:?}: {}",
            response.body_text()
        );
        response.assert_body(b"certificate bytes", &format!("file {name:?}"));
        let disposition = response.header("Content-Disposition").unwrap_or_default();
        assert!(
            disposition.starts_with("attachment;fileName=a") && disposition.ends_with("b.pem"),
            "file {name:?}: Content-Disposition {disposition:?}"
        );
    }
}

/// Starts a proxy over `store` with `max_file_bytes: 1024`.
fn start_small_limit_proxy(fe: &FakeFe, store: &Path) -> ProxyProcess {
    let builder = ProxyBuilder::new()
        .fe(fe)
        .store_dir(store)
        .token_value(&cases::token())
        .set("small_file.max_file_bytes", "1024");
    start_forwarding(builder, fe)
}

#[test]
fn two_objects_under_one_id_is_internal_error() {
    let fe = start_case_fe();
    let store = tempfile::tempdir().unwrap();
    put_store_file(store.path(), 41, "a.pem", b"first");
    put_store_file(store.path(), 41, "b.pem", b"second");
    let proxy = start_small_limit_proxy(&fe, store.path());

    let response = proxy.get(&target_for("41"));
    assert_internal_error(&response, 200, "two objects under id 41");
    assert!(
        proxy.wait_for_log("file id 41", Duration::from_secs(5)),
        "no log line names file id 41; log:\n{}",
        proxy.log_text()
    );
}

#[test]
fn oversized_object_is_internal_error() {
    let fe = start_case_fe();
    let store = tempfile::tempdir().unwrap();
    put_store_file(store.path(), 42, "big.bin", &[7u8; 1025]);
    put_store_file(store.path(), 43, "limit.bin", &[9u8; 1024]);
    let proxy = start_small_limit_proxy(&fe, store.path());

    let response = proxy.get(&target_for("42"));
    assert_internal_error(&response, 200, "1025-byte object under id 42");
    assert!(
        proxy.wait_for_log("file id 42", Duration::from_secs(5)),
        "no log line names file id 42; log:\n{}",
        proxy.log_text()
    );

    let at_limit = proxy.get(&target_for("43"));
    assert_eq!(at_limit.status, 200, "{}", at_limit.body_text());
    at_limit.assert_body(&[9u8; 1024], "1024-byte object under id 43");
}
