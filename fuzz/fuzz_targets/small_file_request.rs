//! Fuzzes `SmallFileHandler::respond` with a fuzzed query string and fuzzed header values,
//! over a real in-memory store, `StoreLoader` and `FileCache`, and checks every response
//! against the FE's wire contract.
//!
//! Input layout: byte 0 contains flags. The other bytes are split at `\n`, a byte that no
//! request-target or header value can contain, into the query string and up to three
//! header values: two `If-None-Match` and one `Auth-Token`. Flags:
//! - bit 0 appends `&token=<cluster token>` to the query, because the handler compares the
//!   token in constant time, so coverage feedback alone cannot find it;
//! - bit 1 appends `&file_id=<id>`, with the id chosen by bits 2 to 4 from [`FILES`];
//! - bit 5 adds `If-None-Match: "<MD5 of that file>"`;
//! - bit 6 uses the handler configured with `error_status: http` instead of the default.
//!
//! Fuzzed values come first in the query, so a fuzzed `token` or `file_id` takes precedence
//! over an appended one, as the first value of a repeated name does on the FE.

#![no_main]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use doris_fe_proxy::cache::{CacheLimits, FileCache, Loader};
use doris_fe_proxy::config::ErrorStatus;
use doris_fe_proxy::file_id::parse_file_id;
use doris_fe_proxy::loader::StoreLoader;
use doris_fe_proxy::metrics::{Metrics, Outcome};
use doris_fe_proxy::small_file::{SmallFileHandler, SmallFileResponse};
use doris_fe_proxy::store::{FileStore, SmallFile, md5_hex};
use doris_fe_proxy::token::ClusterToken;
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use object_store::memory::InMemory;
use object_store::path::Path;
use pingora::http::{RequestHeader, ResponseHeader};
use tokio::runtime::Runtime;

use common::{Envelope, parse_envelope};

const TOKEN: &str = "5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60";

/// One file written to the store before fuzzing starts.
#[derive(Debug)]
struct StoredFile {
    id: i64,
    name: &'static str,
    bytes: &'static [u8],
}

impl StoredFile {
    /// Whether the handler may serve the file. The FE returns "not found" for every
    /// negative id, so the proxy does too, even when the store contains one.
    fn is_served(&self) -> bool {
        self.id >= 0
    }
}

const FILES: [StoredFile; 5] = [
    StoredFile {
        id: 11002,
        name: "ca.pem",
        bytes: b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    },
    StoredFile {
        id: 11003,
        name: "empty.txt",
        bytes: b"",
    },
    StoredFile {
        id: 11004,
        name: "client keystore.jks",
        bytes: &[
            0xfe, 0xed, 0xfe, 0xed, 0x00, 0x00, 0x00, 0x02, b'\r', b'\n', 0xff,
        ],
    },
    // CR, LF, a tab and DEL must not reach the header; the quote, percent sign, slash and
    // non-ASCII letter must come back unchanged.
    StoredFile {
        id: i64::MAX,
        name: "a\r\nSet-Cookie: x=1\t\u{7f}\"100%\"/é.pem",
        bytes: b"odd name",
    },
    StoredFile {
        id: -7,
        name: "negative.pem",
        bytes: b"never served",
    },
];

/// The handlers under test and the runtime that drives them, built once per process.
struct Fixture {
    runtime: Runtime,
    doris_status: SmallFileHandler,
    http_status: SmallFileHandler,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let store = FileStore::new(
        Arc::new(InMemory::new()),
        Path::from("small_files"),
        Duration::from_secs(10),
        1 << 20,
    );
    runtime.block_on(async {
        for file in &FILES {
            let small_file = SmallFile::new(file.name, Bytes::from_static(file.bytes));
            assert!(store.put_if_absent(file.id, &small_file).await.unwrap());
        }
    });

    let metrics = Arc::new(Metrics::unregistered().unwrap());
    let loader: Arc<dyn Loader> = Arc::new(StoreLoader::new(store, None, Arc::clone(&metrics)));
    let limits = CacheLimits {
        max_bytes: 1 << 20,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(5),
        negative_max_entries: 10_000,
    };
    let cache = Arc::new(FileCache::new(limits, loader, Arc::clone(&metrics)));
    let token = Arc::new(ClusterToken::fixed(TOKEN));
    let handler = |error_status| {
        SmallFileHandler::new(
            Arc::clone(&token),
            Arc::clone(&cache),
            Arc::clone(&metrics),
            error_status,
        )
    };
    Fixture {
        doris_status: handler(ErrorStatus::Doris),
        http_status: handler(ErrorStatus::Http),
        runtime,
    }
}

/// The response the FE sends for a query, computed without the handler's code.
#[derive(Debug)]
enum Expected {
    MissingParameter,
    InvalidToken,
    InvalidFileId(String),
    NotFound,
    File(&'static StoredFile),
}

fn expected_answer(query: Option<&str>) -> Expected {
    // The first value of a name counts, and an empty one counts as missing.
    let first_value = |name: &str| {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.into_owned())
            .filter(|value| !value.is_empty())
    };
    let (Some(token), Some(raw_id)) = (first_value("token"), first_value("file_id")) else {
        return Expected::MissingParameter;
    };
    if token != TOKEN {
        return Expected::InvalidToken;
    }

    // For ASCII text, Java's `Long.valueOf` and Rust's `i64::from_str` accept the same
    // strings. Non-ASCII digits are checked against `i64::from_str` by the `file_id` target.
    let id = if raw_id.is_ascii() {
        raw_id.parse::<i64>().ok()
    } else {
        parse_file_id(&raw_id)
    };
    let Some(id) = id else {
        return Expected::InvalidFileId(raw_id);
    };
    match FILES.iter().find(|file| file.id == id && file.is_served()) {
        Some(file) => Expected::File(file),
        None => Expected::NotFound,
    }
}

struct Input<'a> {
    query: &'a [u8],
    header_values: Vec<&'a [u8]>,
    append_token: bool,
    appended_file: Option<&'static StoredFile>,
    etag_of: Option<&'static StoredFile>,
    http_status: bool,
}

fn split_input(data: &[u8]) -> Option<Input<'_>> {
    let (&flags, rest) = data.split_first()?;
    let mut parts = rest.split(|&byte| byte == b'\n');
    let query = parts.next().unwrap_or_default();
    let header_values = parts.take(3).collect();
    let chosen = &FILES[usize::from((flags >> 2) & 0b111) % FILES.len()];
    Some(Input {
        query,
        header_values,
        append_token: flags & 0x01 != 0,
        appended_file: (flags & 0x02 != 0).then_some(chosen),
        etag_of: (flags & 0x20 != 0).then_some(chosen),
        http_status: flags & 0x40 != 0,
    })
}

/// Builds the request as Pingora's HTTP/1 parser would, or `None` for a target that is
/// not a valid URI, which the parser rejects before any handler runs.
fn build_request(input: &Input<'_>) -> Option<RequestHeader> {
    let mut target = b"/api/get_small_file?".to_vec();
    target.extend_from_slice(input.query);
    if input.append_token {
        target.extend_from_slice(b"&token=");
        target.extend_from_slice(TOKEN.as_bytes());
    }
    if let Some(file) = input.appended_file {
        target.extend_from_slice(format!("&file_id={}", file.id).as_bytes());
    }
    let mut req = RequestHeader::build("GET", &target, None).ok()?;

    let names = [
        header::IF_NONE_MATCH,
        header::IF_NONE_MATCH,
        HeaderName::from_static("auth-token"),
    ];
    for (name, value) in names.into_iter().zip(&input.header_values) {
        // `HeaderValue` rejects the control bytes that the HTTP parser rejects (CR, LF, NUL
        // and the others except tab), so such a value never reaches the handler either.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            req.append_header(name, value).unwrap();
        }
    }
    if let Some(file) = input.etag_of {
        let etag = format!("\"{}\"", md5_hex(file.bytes));
        req.append_header(header::IF_NONE_MATCH, etag).unwrap();
    }
    Some(req)
}

fn header_str<'a>(header: &'a ResponseHeader, name: &HeaderName) -> Option<&'a str> {
    // A file name may be UTF-8, which `HeaderValue::to_str` rejects.
    header.headers.get(name).map(|value| {
        std::str::from_utf8(value.as_bytes())
            .unwrap_or_else(|_| panic!("{name} {value:?} is not UTF-8"))
    })
}

/// Serializes the response header as Pingora writes it to an HTTP/1.1 client and checks
/// that an HTTP parser reads it back whole.
fn check_wire_format(response: &SmallFileResponse) {
    let header = &response.header;
    let mut wire = Vec::new();
    wire.extend_from_slice(b"HTTP/1.1 ");
    wire.extend_from_slice(header.status.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(header.get_reason_phrase().unwrap_or("").as_bytes());
    wire.extend_from_slice(b"\r\n");
    header.header_to_h1_wire(&mut wire);
    wire.extend_from_slice(b"\r\n");

    let mut parsed_headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    let status = parsed.parse(&wire).unwrap_or_else(|e| {
        panic!(
            "response header {:?} does not parse: {e}",
            wire.escape_ascii().to_string()
        )
    });
    assert_eq!(status, httparse::Status::Complete(wire.len()));
    assert_eq!(parsed.code, Some(header.status.as_u16()));
    assert_eq!(parsed.headers.len(), header.headers.len());
}

fn check_file(
    req: &RequestHeader,
    response: &SmallFileResponse,
    file: &StoredFile,
    etag_sent: bool,
) {
    let header = &response.header;
    let etag = format!("\"{}\"", md5_hex(file.bytes));
    assert_eq!(header_str(header, &header::ETAG), Some(etag.as_str()));
    assert!(
        matches!(response.outcome, Outcome::Hit | Outcome::MissStore),
        "outcome {:?} for a served file",
        response.outcome
    );
    if etag_sent {
        assert_eq!(
            header.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match named the ETag"
        );
    }
    if header.status == StatusCode::NOT_MODIFIED {
        assert!(response.body.is_empty(), "304 with a body");
        assert!(
            req.headers.contains_key(header::IF_NONE_MATCH),
            "304 without If-None-Match"
        );
        return;
    }

    assert_eq!(header.status, StatusCode::OK);
    assert_eq!(
        response.body.as_ref(),
        file.bytes,
        "body of file id {}",
        file.id
    );
    assert_eq!(
        header_str(header, &header::CONTENT_TYPE),
        Some("application/octet-stream")
    );
    let disposition = header_str(header, &header::CONTENT_DISPOSITION)
        .unwrap_or_else(|| panic!("no Content-Disposition for file id {}", file.id));
    let sent_name = disposition
        .strip_prefix("attachment;fileName=")
        .unwrap_or_else(|| panic!("Content-Disposition {disposition:?} has the wrong form"));
    // Each control character of the name is replaced by one other character; every other
    // character is sent as it is.
    assert_eq!(
        sent_name.chars().count(),
        file.name.chars().count(),
        "{disposition:?}"
    );
    for (sent, original) in sent_name.chars().zip(file.name.chars()) {
        assert!(
            !sent.is_control(),
            "Content-Disposition {disposition:?} has a control character"
        );
        assert!(
            sent == original || original.is_control(),
            "{disposition:?} changed {original:?}"
        );
    }
}

fn check_error(response: &SmallFileResponse, expected: &Expected, http_status: bool) {
    let (msg, code, data, outcome, http_code) = match expected {
        Expected::MissingParameter => (
            "Bad Request",
            403,
            "Missing parameter. Need token and file id".to_owned(),
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
        ),
        Expected::InvalidToken => (
            "Error",
            1,
            "Invalid token".to_owned(),
            Outcome::InvalidToken,
            StatusCode::FORBIDDEN,
        ),
        Expected::InvalidFileId(raw) => (
            "Bad Request",
            403,
            format!("Invalid file id format: {raw}"),
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
        ),
        Expected::NotFound => (
            "Error",
            1,
            "File not found or is not content".to_owned(),
            Outcome::NotFound,
            StatusCode::NOT_FOUND,
        ),
        Expected::File(_) => unreachable!("a file is not an error"),
    };

    let header = &response.header;
    let status = if http_status {
        http_code
    } else {
        StatusCode::OK
    };
    assert_eq!(header.status, status, "status of {expected:?}");
    assert_eq!(response.outcome, outcome, "outcome of {expected:?}");
    assert_eq!(
        header_str(header, &header::CONTENT_TYPE),
        Some("application/json;charset=UTF-8")
    );
    assert!(!header.headers.contains_key(header::CONTENT_DISPOSITION));

    let envelope = parse_envelope(&response.body);
    let expected_envelope = Envelope {
        msg: msg.to_owned(),
        code,
        data,
        count: 0,
    };
    assert_eq!(envelope, expected_envelope);
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = split_input(data) else {
        return;
    };
    let Some(req) = build_request(&input) else {
        return;
    };
    let fixture = fixture();
    let handler = if input.http_status {
        &fixture.http_status
    } else {
        &fixture.doris_status
    };
    let response = fixture.runtime.block_on(handler.respond(&req));

    check_wire_format(&response);
    if response.header.status != StatusCode::NOT_MODIFIED {
        let length = header_str(&response.header, &header::CONTENT_LENGTH)
            .unwrap_or_else(|| panic!("no Content-Length on {}", response.header.status));
        assert_eq!(length, response.body.len().to_string());
    }

    let expected = expected_answer(req.uri.query());
    match &expected {
        Expected::File(file) => {
            let etag_sent = input.etag_of.is_some_and(|tagged| tagged.id == file.id);
            check_file(&req, &response, file, etag_sent);
        }
        _ => check_error(&response, &expected, input.http_status),
    }
});
