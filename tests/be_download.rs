//! Small-file downloads the way a Doris BE makes them (`small_file_mgr.cpp`): libcurl GET of
//! `/api/get_small_file?file_id=<id>&token=<token>` with `CURLOPT_FAILONERROR` and
//! redirects followed, the body streamed into `<id>.tmp`, its MD5 compared
//! case-insensitively with the MD5 from the FE, then a rename to `<id>.<md5>`.
//!
//! The `curl` command with `--fail --location` behaves as that libcurl setup does.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use md5::{Digest, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use support::cases;
use support::{FakeFe, ProxyBuilder, ProxyProcess, S3Server};

/// Upper bound of one download. The BE sets none, but a test must not hang.
const CURL_MAX_SECONDS: &str = "30";

/// How long a test waits for the proxy to count the fake FE as healthy.
const FE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The characters `curl_easy_escape` leaves as they are: RFC 3986 unreserved.
const CURL_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The rotating token header of newer BEs, which the endpoint ignores.
const BE_AUTH_TOKEN: &str = "be-rotating-auth-token";

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds the BE's URL: `file_id` first, values escaped as `curl_easy_escape` does.
fn be_url(proxy: &ProxyProcess, id: &str, token: &str) -> String {
    let escape = |value: &str| utf8_percent_encode(value, CURL_UNRESERVED).to_string();
    format!(
        "http://{}/api/get_small_file?file_id={}&token={}",
        proxy.addr(),
        escape(id),
        escape(token)
    )
}

/// The result of one `curl` run.
struct Download {
    /// curl's exit code; 22 is "HTTP status >= 400" under `--fail`.
    exit_code: Option<i32>,
    stderr: String,
    /// The downloaded `<id>.tmp` file.
    path: PathBuf,
}

/// Downloads `url` into `<folder>/<id>.tmp` as the BE does: the file is opened first, then
/// filled by curl, which fails on a status >= 400 and follows redirects.
fn be_download(url: &str, folder: &Path, id: &str) -> Download {
    let path = folder.join(format!("{id}.tmp"));
    std::fs::File::create(&path).unwrap();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--location"])
        .args(["--max-redirs", "20", "--max-time", CURL_MAX_SECONDS])
        .args(["--noproxy", "*"])
        .args(["--header", &format!("Auth-Token: {BE_AUTH_TOKEN}")])
        .arg("--output")
        .arg(&path)
        .arg(url)
        .output()
        .expect("cannot run curl; install the curl command");
    Download {
        exit_code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        path,
    }
}

/// The BE's check after a download: the MD5 of the file must equal, ignoring case, the MD5
/// the FE reported. On success the file is renamed to `<id>.<md5>`, which is returned.
fn be_accept(download: &Download, id: &str, expected_md5: &str) -> Result<PathBuf, String> {
    let bytes = std::fs::read(&download.path).unwrap();
    let actual = md5_hex(&bytes);
    if !actual.eq_ignore_ascii_case(expected_md5) {
        return Err(format!(
            "download with invalid md5: {actual} instead of {expected_md5} ({} bytes, starts with {:?})",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
        ));
    }
    let final_path = download.path.with_file_name(format!("{id}.{expected_md5}"));
    std::fs::rename(&download.path, &final_path).unwrap();
    Ok(final_path)
}

/// Asserts what the BE checks of a cached file at start-up: the name is `<id>.<md5>` and
/// the content has that MD5.
fn assert_cached_file_valid(path: &Path, id: &str) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (name_id, name_md5) = name
        .split_once('.')
        .unwrap_or_else(|| panic!("cached file name {name:?} is not <id>.<md5>"));
    assert_eq!(name_id, id, "id part of {name:?}");
    let content_md5 = md5_hex(&std::fs::read(path).unwrap());
    assert!(
        content_md5.eq_ignore_ascii_case(name_md5),
        "{name:?}: content md5 {content_md5}"
    );
}

fn start_proxy(builder: ProxyBuilder, fe: &FakeFe) -> ProxyProcess {
    let proxy = builder.start();
    assert!(
        proxy.wait_until_forwarding_to(fe, FE_READY_TIMEOUT),
        "the proxy did not forward GET /api/health to the fake FE within {FE_READY_TIMEOUT:?}"
    );
    proxy
}

/// Downloads the three case files through `proxy` and checks each as a BE would.
fn download_case_files(proxy: &ProxyProcess) {
    let folder = tempfile::tempdir().unwrap();
    for id in [11002, 11003, 11004] {
        let file = cases::case_file(id);
        let id = id.to_string();
        // The FE reports the MD5 in lowercase; the BE compares ignoring case.
        let expected_md5 = md5_hex(&file.bytes).to_uppercase();

        let download = be_download(&be_url(proxy, &id, &cases::token()), folder.path(), &id);
        assert_eq!(
            download.exit_code,
            Some(0),
            "curl failed for file id {id}: {}",
            download.stderr
        );
        let cached = be_accept(&download, &id, &expected_md5)
            .unwrap_or_else(|reason| panic!("file id {id}: {reason}"));
        assert_cached_file_valid(&cached, &id);
        assert_eq!(
            std::fs::read(&cached).unwrap().len(),
            file.bytes.len(),
            "file id {id} size"
        );
    }
}

#[test]
fn be_downloads_case_files() {
    let fe = FakeFe::builder("be-fe").token(cases::token()).start();
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .store_dir(&cases::files_dir())
        .token_version_file(&cases::version_file());
    let proxy = start_proxy(builder, &fe);

    download_case_files(&proxy);
}

#[test]
fn be_downloads_case_files_from_s3() {
    let s3 = S3Server::start();
    for id in [11002, 11003, 11004] {
        let file = cases::case_file(id);
        s3.put_object(&format!("small_files/{id}/{}", file.name), &file.bytes);
    }
    let fe = FakeFe::builder("be-fe").token(cases::token()).start();
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .s3_store(&s3, "small_files")
        .token_version_file(&cases::version_file());
    let proxy = start_proxy(builder, &fe);

    download_case_files(&proxy);
}

#[test]
fn be_rejects_error_envelope_by_md5() {
    let fe = FakeFe::builder("be-fe").token(cases::token()).start();
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .store_dir(&cases::files_dir())
        .token_value(&cases::token());
    let proxy = start_proxy(builder, &fe);
    let folder = tempfile::tempdir().unwrap();
    let expected_md5 = md5_hex(&cases::case_file(11002).bytes);

    // With FE-compatible statuses a wrong token is a 200 JSON body, so curl succeeds and
    // only the MD5 check catches it.
    let download = be_download(&be_url(&proxy, "11002", "wrong"), folder.path(), "11002");
    assert_eq!(download.exit_code, Some(0), "curl: {}", download.stderr);
    let verdict = be_accept(&download, "11002", &expected_md5);
    assert!(
        verdict.as_ref().is_err_and(|e| e.contains("invalid md5")),
        "the BE accepted an error envelope: {verdict:?}"
    );
}

#[test]
fn http_error_status_fails_curl() {
    let fe = FakeFe::builder("be-fe").token(cases::token()).start();
    let builder = ProxyBuilder::new()
        .fe(&fe)
        .store_dir(&cases::files_dir())
        .token_value(&cases::token())
        .set("small_file.error_status", "http");
    let proxy = start_proxy(builder, &fe);
    let folder = tempfile::tempdir().unwrap();

    for (id, token, status) in [
        ("99999", cases::token(), "404"),
        ("11002", "wrong".to_string(), "403"),
        ("abc", cases::token(), "400"),
    ] {
        let download = be_download(&be_url(&proxy, id, &token), folder.path(), id);
        assert_eq!(
            download.exit_code,
            Some(22),
            "curl --fail must fail for file id {id} with status {status}; stderr: {}",
            download.stderr
        );
        assert!(
            download.stderr.contains(status),
            "curl error for file id {id} does not name status {status}: {}",
            download.stderr
        );
    }

    // The same proxy still serves a valid request.
    let download = be_download(
        &be_url(&proxy, "11002", &cases::token()),
        folder.path(),
        "11002",
    );
    assert_eq!(download.exit_code, Some(0), "curl: {}", download.stderr);
    let expected_md5 = md5_hex(&cases::case_file(11002).bytes);
    be_accept(&download, "11002", &expected_md5).unwrap();
}
