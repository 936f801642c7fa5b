//! Response checks shared by the small-file tests: one `requests.tsv` row against a proxy,
//! exact files, error envelopes, and seeding an S3 bucket from a store folder.

use std::path::Path;

use md5::{Digest, Md5};

use super::cases::{self, CaseFile, Expect, RequestCase};
use super::fake_fe::{FAKE_FE_HEADER, FakeFe};
use super::http::{DEFAULT_TIMEOUT, RawResponse, build_request, try_raw_request};
use super::proxy::ProxyProcess;
use super::s3::S3Server;

/// The body of the InternalError envelope up to its `data` text.
pub const INTERNAL_ERROR_PREFIX: &str = r#"{"msg":"Internal Error","code":500,"data":""#;

/// The FE's envelope for an id that has no file.
pub const NOT_FOUND_BODY: &str =
    r#"{"msg":"Error","code":1,"data":"File not found or is not content","count":0}"#;

/// Returns the lowercase hex MD5 of `bytes`, the form a BE compares and the proxy's ETag.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Returns `/api/get_small_file?token=<token>&file_id=<id>`.
pub fn small_file_target(token: &str, id: &str) -> String {
    format!("/api/get_small_file?token={token}&file_id={id}")
}

/// Returns the S3 key of a file in the `<prefix>/<id>/<name>` layout.
pub fn object_key(prefix: &str, id: i64, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{id}/{name}")
    } else {
        format!("{prefix}/{id}/{name}")
    }
}

/// Copies every `<id>/<name>` file of the store folder `folder` into the bucket of `s3`
/// under `prefix`, and returns the ids copied.
pub fn seed_bucket(s3: &S3Server, prefix: &str, folder: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    let entries = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
    for entry in entries {
        let entry = entry.expect("unreadable folder entry");
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i64>().ok())
        else {
            continue;
        };
        let file = cases::read_store_file(folder, id);
        s3.put_object(&object_key(prefix, id, &file.name), &file.bytes);
        ids.push(id);
    }
    ids.sort_unstable();
    ids
}

/// Sends one case as written, with an `X-Test-Row` header that lets the fake FE's record be
/// matched to the row.
pub fn send_case(proxy: &ProxyProcess, case: &RequestCase) -> Result<RawResponse, String> {
    let row = case.line.to_string();
    let request = build_request(
        &case.method,
        &case.target,
        proxy.addr(),
        &[("X-Test-Row", &row)],
        b"",
    );
    try_raw_request(proxy.addr(), &request, DEFAULT_TIMEOUT)
        .map_err(|e| format!("request failed: {e}"))
}

/// Checks one response against its case, with `status` as the expected status.
pub fn check_case(
    fe: &FakeFe,
    case: &RequestCase,
    status: Option<u16>,
    response: &RawResponse,
) -> Result<(), String> {
    if let Some(status) = status
        && response.status != status
    {
        return Err(format!(
            "status {} instead of {status}, body {:?}",
            response.status,
            response.body_text()
        ));
    }

    match &case.expect {
        Expect::File(id) => check_file(response, &cases::case_file(*id)),
        Expect::Json(body) => check_json(response, body),
        Expect::Fe => check_forwarded(fe, case, response),
    }
}

/// Checks a 200 with the exact bytes of `file` and its headers, sent by the proxy itself.
pub fn check_file(response: &RawResponse, file: &CaseFile) -> Result<(), String> {
    if response.status != 200 {
        return Err(format!(
            "status {} instead of 200, body {:?}",
            response.status,
            response.body_text()
        ));
    }
    let disposition = format!("attachment;fileName={}", file.name);
    let length = file.bytes.len().to_string();
    let etag = format!("\"{}\"", md5_hex(&file.bytes));
    let expected_headers = [
        ("Content-Disposition", disposition.as_str()),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", length.as_str()),
        ("ETag", etag.as_str()),
    ];
    for (name, value) in expected_headers {
        if response.header(name) != Some(value) {
            let body = response.body_text();
            return Err(format!(
                "{name} is {:?} instead of {value:?}; body starts with {:?}",
                response.header(name),
                body.chars().take(120).collect::<String>()
            ));
        }
    }
    if response.body != file.bytes {
        return Err(format!(
            "body of {} bytes (md5 {}) is not file {} ({} bytes, md5 {})",
            response.body.len(),
            md5_hex(&response.body),
            file.id,
            file.bytes.len(),
            md5_hex(&file.bytes)
        ));
    }
    if response.header(FAKE_FE_HEADER).is_some() {
        return Err("the answer came from the fake FE instead of the proxy".to_string());
    }
    Ok(())
}

/// Checks an error envelope: this exact body, its content type and length, from the proxy.
pub fn check_json(response: &RawResponse, body: &str) -> Result<(), String> {
    if response.body_text() != body {
        return Err(format!(
            "body {:?} instead of {body:?}",
            response.body_text()
        ));
    }
    let content_type = response.header("Content-Type");
    if content_type != Some("application/json;charset=UTF-8") {
        return Err(format!(
            "Content-Type {content_type:?} instead of application/json;charset=UTF-8"
        ));
    }
    let length = body.len().to_string();
    if response.header("Content-Length") != Some(length.as_str()) {
        return Err(format!(
            "Content-Length {:?} instead of {length}",
            response.header("Content-Length")
        ));
    }
    if response.header(FAKE_FE_HEADER).is_some() {
        return Err("the answer came from the fake FE instead of the proxy".to_string());
    }
    Ok(())
}

/// Checks that `fe` sent the response and received the case's request unchanged.
pub fn check_forwarded(
    fe: &FakeFe,
    case: &RequestCase,
    response: &RawResponse,
) -> Result<(), String> {
    if response.header(FAKE_FE_HEADER) != Some(fe.name()) {
        return Err(format!(
            "no {FAKE_FE_HEADER}: {} header, so the FE did not answer; status {}, body {:?}",
            fe.name(),
            response.status,
            response.body_text()
        ));
    }
    let row = case.line.to_string();
    let recorded = fe
        .requests()
        .into_iter()
        .find(|r| r.header("x-test-row") == Some(row.as_str()));
    match recorded {
        None => Err("the fake FE recorded no request for this row".to_string()),
        Some(r) if r.method != case.method || r.target != case.target => Err(format!(
            "the FE got `{} {}` instead of `{} {}`",
            r.method, r.target, case.method, case.target
        )),
        Some(_) => Ok(()),
    }
}

/// Runs every case of `requests.tsv` with `status_for` giving the expected status, and fails
/// once with all failing rows.
pub fn run_cases(
    proxy: &ProxyProcess,
    fe: &FakeFe,
    status_for: impl Fn(&RequestCase) -> Option<u16>,
) {
    let mut failures = Vec::new();
    let all = cases::request_cases();
    for case in &all {
        let result = send_case(proxy, case)
            .and_then(|response| check_case(fe, case, status_for(case), &response));
        if let Err(reason) = result {
            failures.push(format!(
                "line {} ({}): {} {}: {reason}",
                case.line, case.why, case.method, case.target
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Returns the status that `small_file.error_status: http` sends for a case: 400 for a
/// missing parameter or a bad id, 403 for a bad token, 404 for an unknown id, else the
/// case's own status.
pub fn http_status_for(case: &RequestCase) -> Option<u16> {
    let Expect::Json(body) = &case.expect else {
        return case.status;
    };
    let data = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["data"].as_str().map(str::to_string))
        .unwrap_or_default();
    if data.starts_with("Missing parameter") || data.starts_with("Invalid file id format") {
        Some(400)
    } else if data == "Invalid token" {
        Some(403)
    } else if data.starts_with("File not found") {
        Some(404)
    } else {
        panic!(
            "line {}: no HTTP status known for error {data:?}",
            case.line
        )
    }
}

/// Asserts the InternalError envelope with `status` and its JSON content type.
pub fn assert_internal_error(response: &RawResponse, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body_text());
    assert!(
        response.body_text().starts_with(INTERNAL_ERROR_PREFIX),
        "{what}: body {}",
        response.body_text()
    );
    let json = response.json();
    assert_eq!(json["count"], 0, "{what}: body {}", response.body_text());
    assert_eq!(
        response.header("Content-Type"),
        Some("application/json;charset=UTF-8"),
        "{what}"
    );
    assert!(
        response.header(FAKE_FE_HEADER).is_none(),
        "{what}: the answer came from the fake FE instead of the proxy"
    );
}
