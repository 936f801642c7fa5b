//! FE fallback: fetch a small file from an FE's own `/api/get_small_file` when the store
//! has none under its id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::RoundRobin;

use crate::store::SmallFile;
use crate::token::ClusterToken;

/// The FE's `data` text for an unknown id.
const FE_NOT_FOUND: &str = "File not found or is not content";

/// A fallback error. Messages name the FE address and the file id, never the token.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error("no healthy FE to fetch file id {id} from")]
    NoBackend { id: i64 },
    #[error("fetching file id {id} from FE {fe} failed: {source}")]
    Request {
        id: i64,
        fe: SocketAddr,
        source: reqwest::Error,
    },
    #[error("fetching file id {id} from the FEs timed out after {timeout:?}")]
    Timeout { id: i64, timeout: Duration },
    #[error("FE {fe} answered file id {id} with {detail}")]
    BadAnswer {
        id: i64,
        fe: SocketAddr,
        detail: String,
    },
    #[error("FE {fe} sent {size} bytes or more for file id {id}, over max_file_bytes ({max})")]
    TooLarge {
        id: i64,
        fe: SocketAddr,
        size: u64,
        max: u64,
    },
}

/// Fetches small files from healthy FEs with the cluster token.
pub struct FeFallback {
    client: reqwest::Client,
    backends: Arc<LoadBalancer<RoundRobin>>,
    token: Arc<ClusterToken>,
    timeout: Duration,
    max_file_bytes: u64,
}

impl FeFallback {
    /// `timeout` bounds one whole fetch, over every FE that is tried.
    pub fn new(
        backends: Arc<LoadBalancer<RoundRobin>>,
        token: Arc<ClusterToken>,
        timeout: Duration,
        max_file_bytes: u64,
    ) -> Result<FeFallback, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()?;
        Ok(FeFallback {
            client,
            backends,
            token,
            timeout,
            max_file_bytes,
        })
    }

    /// Fetches `id` from the healthy FEs in turn until one sends a definite response.
    /// `Ok(None)` is the FE's "File not found or is not content".
    pub async fn fetch(&self, id: i64) -> Result<Option<SmallFile>, FallbackError> {
        match tokio::time::timeout(self.timeout, self.fetch_from_any(id)).await {
            Ok(result) => result,
            Err(_) => Err(FallbackError::Timeout {
                id,
                timeout: self.timeout,
            }),
        }
    }

    async fn fetch_from_any(&self, id: i64) -> Result<Option<SmallFile>, FallbackError> {
        let mut candidates = self.healthy_backends();
        if candidates.is_empty() {
            // Every FE failed its last check. A check can fail on a loaded host while the
            // FE still serves, and this fetch has its own timeout, so try them all.
            candidates = self
                .backends
                .backends()
                .get_backend()
                .iter()
                .filter_map(|backend| backend.addr.as_inet().copied())
                .collect();
        }
        let mut last_error = FallbackError::NoBackend { id };
        for fe in candidates {
            match self.fetch_from(fe, id).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Lists every healthy backend once, starting at the round-robin position.
    fn healthy_backends(&self) -> Vec<SocketAddr> {
        let count = self.backends.backends().get_backend().len();
        let mut found: Vec<SocketAddr> = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(backend) = self.backends.select(b"", count) else {
                break;
            };
            if let Some(addr) = backend.addr.as_inet()
                && !found.contains(addr)
            {
                found.push(*addr);
            }
        }
        found
    }

    async fn fetch_from(
        &self,
        fe: SocketAddr,
        id: i64,
    ) -> Result<Option<SmallFile>, FallbackError> {
        let token = self.token.snapshot();
        let token = String::from_utf8_lossy(&token);
        // The BE's parameter order: file_id first.
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("file_id", &id.to_string())
            .append_pair("token", &token)
            .finish();
        let url = format!("http://{fe}/api/get_small_file?{query}");
        // reqwest puts the request URL, token included, into its error messages.
        let request_error = |source: reqwest::Error| FallbackError::Request {
            id,
            fe,
            source: source.without_url(),
        };
        let mut response = self.client.get(url).send().await.map_err(request_error)?;

        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(FallbackError::BadAnswer {
                id,
                fe,
                detail: format!("HTTP status {status}"),
            });
        }
        let disposition = response
            .headers()
            .get(http::header::CONTENT_DISPOSITION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());

        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > self.max_file_bytes {
                return Err(FallbackError::TooLarge {
                    id,
                    fe,
                    size: body.len() as u64,
                    max: self.max_file_bytes,
                });
            }
        }
        let body = body.freeze();

        match disposition {
            Some(disposition) => match file_name_from_disposition(&disposition) {
                Some(name) => Ok(Some(SmallFile::new(name, body))),
                None => Err(FallbackError::BadAnswer {
                    id,
                    fe,
                    detail: "a Content-Disposition without fileName".to_string(),
                }),
            },
            None => interpret_error_envelope(id, fe, &body),
        }
    }
}

/// Reads a 200 without `Content-Disposition`, which is the FE's JSON error envelope.
fn interpret_error_envelope(
    id: i64,
    fe: SocketAddr,
    body: &Bytes,
) -> Result<Option<SmallFile>, FallbackError> {
    let envelope: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let data = envelope
        .as_ref()
        .and_then(|value| value.get("data"))
        .and_then(|data| data.as_str());
    match data {
        Some(FE_NOT_FOUND) => Ok(None),
        Some(text) => Err(FallbackError::BadAnswer {
            id,
            fe,
            detail: format!("the error `{text}`"),
        }),
        None => Err(FallbackError::BadAnswer {
            id,
            fe,
            detail: "a 200 that is neither a file nor an error envelope".to_string(),
        }),
    }
}

/// Extracts the name from the FE's `attachment;fileName=<name>`. The FE does not quote the
/// name; a quoted one is unquoted for other servers.
fn file_name_from_disposition(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let start = lower.find("filename=")? + "filename=".len();
    let name = value.get(start..)?;
    let name = name
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names() {
        assert_eq!(
            file_name_from_disposition("attachment;fileName=ca.pem").as_deref(),
            Some("ca.pem")
        );
        assert_eq!(
            file_name_from_disposition("attachment;fileName=client keystore.jks").as_deref(),
            Some("client keystore.jks")
        );
        assert_eq!(
            file_name_from_disposition("attachment; filename=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(file_name_from_disposition("attachment"), None);
        assert_eq!(file_name_from_disposition("attachment;fileName="), None);
    }

    #[test]
    fn fe_envelopes() {
        let fe: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let not_found = Bytes::from_static(
            br#"{"msg":"Error","code":1,"data":"File not found or is not content","count":0}"#,
        );
        assert!(matches!(
            interpret_error_envelope(1, fe, &not_found),
            Ok(None)
        ));
        let bad_token =
            Bytes::from_static(br#"{"msg":"Error","code":1,"data":"Invalid token","count":0}"#);
        assert!(matches!(
            interpret_error_envelope(1, fe, &bad_token),
            Err(FallbackError::BadAnswer { .. })
        ));
        let garbage = Bytes::from_static(b"<html>");
        assert!(matches!(
            interpret_error_envelope(1, fe, &garbage),
            Err(FallbackError::BadAnswer { .. })
        ));
    }
}
