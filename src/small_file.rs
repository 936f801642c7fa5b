//! The `/api/get_small_file` handler, serving in place of the FE.
//!
//! The steps run in the FE's order: parse the query, check the token, parse the file id,
//! look the file up, respond. Any `ProxyHttp::request_filter` can call
//! [`SmallFileHandler::handle`]; it returns `false` for every request that is not this
//! endpoint, which then goes to the FE.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::cache::{FileCache, LoadError, Lookup};
use crate::config::ErrorStatus;
use crate::envelope::{ErrorKind, error_body};
use crate::file_id::parse_file_id;
use crate::metrics::{Metrics, Outcome};
use crate::store::SmallFile;
use crate::token::ClusterToken;

/// The endpoint's exact path; the FE matches it case-sensitively and without a trailing slash.
pub const SMALL_FILE_PATH: &str = "/api/get_small_file";

const MISSING_PARAMETER: &str = "Missing parameter. Need token and file id";
const INVALID_TOKEN: &str = "Invalid token";
const NOT_FOUND: &str = "File not found or is not content";
const INTERNAL_ERROR: &str = "Failed to get small file, please retry later";

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json;charset=UTF-8");

/// Returns whether a request is for this endpoint: GET or HEAD on exactly [`SMALL_FILE_PATH`].
pub fn is_small_file_request(req: &RequestHeader) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD) && req.uri.path() == SMALL_FILE_PATH
}

/// The `token` and `file_id` parameters, decoded as `application/x-www-form-urlencoded`.
/// A repeated name keeps its first value; an empty value counts as missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SmallFileQuery {
    pub token: Option<String>,
    pub file_id: Option<String>,
}

impl SmallFileQuery {
    pub fn parse(query: Option<&str>) -> SmallFileQuery {
        let mut token: Option<Option<String>> = None;
        let mut file_id: Option<Option<String>> = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match name.as_ref() {
                "token" => &mut token,
                "file_id" => &mut file_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(Some(value.into_owned()).filter(|v| !v.is_empty()));
            }
        }
        SmallFileQuery {
            token: token.flatten(),
            file_id: file_id.flatten(),
        }
    }
}

/// A complete response: header (with `Content-Length`), body and metrics outcome.
#[derive(Debug)]
pub struct SmallFileResponse {
    pub header: ResponseHeader,
    pub body: Bytes,
    pub outcome: Outcome,
}

/// Serves `/api/get_small_file` from a [`FileCache`].
pub struct SmallFileHandler {
    token: Arc<ClusterToken>,
    cache: Arc<FileCache>,
    metrics: Arc<Metrics>,
    error_status: ErrorStatus,
}

impl SmallFileHandler {
    pub fn new(
        token: Arc<ClusterToken>,
        cache: Arc<FileCache>,
        metrics: Arc<Metrics>,
        error_status: ErrorStatus,
    ) -> SmallFileHandler {
        SmallFileHandler {
            token,
            cache,
            metrics,
            error_status,
        }
    }

    /// Responds to the request if it is for this endpoint and returns `true`; returns `false`
    /// without touching the session otherwise. The response keeps the connection alive.
    pub async fn handle(&self, session: &mut Session) -> pingora::Result<bool> {
        if !is_small_file_request(session.req_header()) {
            return Ok(false);
        }
        let started = Instant::now();
        let response = self.respond(session.req_header()).await;
        let is_head = session.req_header().method == Method::HEAD;
        let body_len = if is_head { 0 } else { response.body.len() };

        let header = Box::new(response.header);
        if body_len == 0 {
            session.write_response_header(header, true).await?;
        } else {
            session.write_response_header(header, false).await?;
            session
                .write_response_body(Some(response.body), true)
                .await?;
        }
        self.metrics
            .observe_small_file(response.outcome, started.elapsed(), body_len);
        Ok(true)
    }

    /// Builds the response for a request to this endpoint, without any I/O to the client.
    pub async fn respond(&self, req: &RequestHeader) -> SmallFileResponse {
        let query = SmallFileQuery::parse(req.uri.query());
        let (Some(token), Some(file_id)) = (query.token, query.file_id) else {
            return self.error(
                ErrorKind::BadRequest,
                MISSING_PARAMETER,
                Outcome::BadRequest,
            );
        };

        // The FE checks the token before it parses the id.
        if !self.token.matches(&token) {
            return self.error(ErrorKind::CommonError, INVALID_TOKEN, Outcome::InvalidToken);
        }

        let Some(id) = parse_file_id(&file_id) else {
            let text = format!("Invalid file id format: {file_id}");
            return self.error(ErrorKind::BadRequest, &text, Outcome::BadRequest);
        };

        match self.cache.get(id).await {
            Ok(lookup) => {
                let outcome = match &lookup {
                    Lookup::Hit(_) => Outcome::Hit,
                    Lookup::Miss(loaded) => match loaded.origin {
                        crate::cache::Origin::Store => Outcome::MissStore,
                        crate::cache::Origin::Fe => Outcome::MissFe,
                    },
                };
                file_response(lookup.file(), req, outcome)
            }
            Err(LoadError::NotFound) => {
                self.error(ErrorKind::CommonError, NOT_FOUND, Outcome::NotFound)
            }
            Err(LoadError::Invalid(_) | LoadError::Unavailable(_)) => {
                self.error(ErrorKind::InternalError, INTERNAL_ERROR, Outcome::Error)
            }
        }
    }

    fn error(&self, kind: ErrorKind, text: &str, outcome: Outcome) -> SmallFileResponse {
        let status = match self.error_status {
            ErrorStatus::Doris => StatusCode::OK,
            ErrorStatus::Http => match outcome {
                Outcome::BadRequest => StatusCode::BAD_REQUEST,
                Outcome::InvalidToken => StatusCode::FORBIDDEN,
                Outcome::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
        };
        let body = Bytes::from(error_body(kind, text));
        let mut header = new_header(status);
        insert(&mut header, header::CONTENT_TYPE, JSON_UTF8);
        set_length(&mut header, body.len());
        SmallFileResponse {
            header,
            body,
            outcome,
        }
    }
}

/// Builds the 200 response with the file, or a 304 when `If-None-Match` names its ETag.
fn file_response(file: &SmallFile, req: &RequestHeader, outcome: Outcome) -> SmallFileResponse {
    let not_modified = req
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|value| etag_matches(value.as_bytes(), &file.md5));

    if not_modified {
        let mut header = new_header(StatusCode::NOT_MODIFIED);
        insert(&mut header, header::ETAG, file.etag.clone());
        return SmallFileResponse {
            header,
            body: Bytes::new(),
            outcome,
        };
    }

    let mut header = new_header(StatusCode::OK);
    insert(&mut header, header::CONTENT_TYPE, OCTET_STREAM);
    insert(
        &mut header,
        header::CONTENT_DISPOSITION,
        file.content_disposition.clone(),
    );
    insert(&mut header, header::ETAG, file.etag.clone());
    set_length(&mut header, file.bytes.len());
    SmallFileResponse {
        header,
        body: file.bytes.clone(),
        outcome,
    }
}

/// Returns whether an `If-None-Match` value (`*`, or a list of strong or weak ETags) names
/// the file's MD5. Comparison is weak, as RFC 9110 prescribes for `If-None-Match`.
fn etag_matches(value: &[u8], md5: &str) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) == Some(md5)
    })
}

fn new_header(status: StatusCode) -> ResponseHeader {
    // Built from `http` parts because that conversion cannot fail, unlike `build`.
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    ResponseHeader::from(parts)
}

fn insert(header: &mut ResponseHeader, name: header::HeaderName, value: HeaderValue) {
    // Inserting a valid name and value into a response header does not fail.
    let _ = header.insert_header(name, value);
}

fn set_length(header: &mut ResponseHeader, len: usize) {
    let _ = header.set_content_length(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_first_value_wins() {
        let q = SmallFileQuery::parse(Some("token=a&token=b&file_id=1&file_id=2"));
        assert_eq!(q.token.as_deref(), Some("a"));
        assert_eq!(q.file_id.as_deref(), Some("1"));
    }

    #[test]
    fn query_empty_first_value_is_missing() {
        let q = SmallFileQuery::parse(Some("token=&token=b&file_id=1"));
        assert_eq!(q.token, None);
    }

    #[test]
    fn query_decoding() {
        let q = SmallFileQuery::parse(Some("token=a+b%20c&file_id=%2B1"));
        assert_eq!(q.token.as_deref(), Some("a b c"));
        assert_eq!(q.file_id.as_deref(), Some("+1"));
    }

    #[test]
    fn query_names_case_sensitive() {
        let q = SmallFileQuery::parse(Some("Token=a&FILE_ID=1"));
        assert_eq!(q, SmallFileQuery::default());
        assert_eq!(SmallFileQuery::parse(None), SmallFileQuery::default());
    }

    #[test]
    fn query_invalid_utf8_replaced() {
        let q = SmallFileQuery::parse(Some("token=t&file_id=%FF1"));
        assert_eq!(q.file_id.as_deref(), Some("\u{FFFD}1"));
    }

    #[test]
    fn etag_forms() {
        let md5 = "95cdc27cb783f8c91800e6b5d6109fb2";
        assert!(etag_matches(b"\"95cdc27cb783f8c91800e6b5d6109fb2\"", md5));
        assert!(etag_matches(b"W/\"95cdc27cb783f8c91800e6b5d6109fb2\"", md5));
        assert!(etag_matches(
            b"\"x\", \"95cdc27cb783f8c91800e6b5d6109fb2\"",
            md5
        ));
        assert!(etag_matches(b"*", md5));
        assert!(!etag_matches(b"\"x\"", md5));
        assert!(!etag_matches(b"95cdc27cb783f8c91800e6b5d6109fb2", md5));
    }

    #[test]
    fn names_lose_control_characters() {
        let file = SmallFile::new("a\r\nb\tc\u{7f}", Bytes::new());
        assert_eq!(file.content_disposition, "attachment;fileName=a__b_c_");
        let file = SmallFile::new("client keystore.jks", Bytes::new());
        assert_eq!(
            file.content_disposition,
            "attachment;fileName=client keystore.jks"
        );
        let file = SmallFile::new("证书.pem", Bytes::new());
        assert_eq!(
            file.content_disposition.as_bytes(),
            "attachment;fileName=证书.pem".as_bytes()
        );
    }

    #[test]
    fn route_matching() {
        let get = RequestHeader::build("GET", b"/api/get_small_file?token=x", None).unwrap();
        assert!(is_small_file_request(&get));
        let head = RequestHeader::build("HEAD", b"/api/get_small_file", None).unwrap();
        assert!(is_small_file_request(&head));
        for (method, path) in [
            ("POST", "/api/get_small_file"),
            ("OPTIONS", "/api/get_small_file"),
            ("GET", "/api/get_small_file/"),
            ("GET", "/API/get_small_file"),
            ("GET", "/api/health"),
        ] {
            let req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
            assert!(!is_small_file_request(&req), "{method} {path}");
        }
    }
}
