//! The file store: small files kept in `object_store` as `<prefix>/<file_id>/<file_name>`.
//!
//! One object per id. The object's bytes are the file and its last path segment is the
//! name sent in `Content-Disposition`. Only the decimal id, never other request text,
//! becomes part of a key.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
};

use crate::config::{ConfigError, S3Config};
use crate::metrics::Metrics;

/// One small file: its name as created with `CREATE FILE` and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallFile {
    pub name: String,
    pub bytes: Bytes,
    /// Lowercase hex MD5 of `bytes`, the value a BE compares and the ETag.
    pub md5: String,
    /// `"<md5>"`, ready to send as the `ETag` header.
    pub etag: HeaderValue,
    /// `attachment;fileName=<name>` as the FE writes it, with control characters (CR and LF
    /// included) replaced by `_` so that the name cannot break the header.
    pub content_disposition: HeaderValue,
}

impl SmallFile {
    /// Builds a file, computes its MD5 and the header values it is served with.
    pub fn new(name: impl Into<String>, bytes: Bytes) -> SmallFile {
        let name = name.into();
        let md5 = md5_hex(&bytes);
        let etag = HeaderValue::from_str(&format!("\"{md5}\""))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let safe_name: String = name
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        // Every byte of `safe_name` is allowed in a header value: no control characters
        // remain, and bytes of non-ASCII characters are `obs-text`.
        let content_disposition =
            HeaderValue::from_bytes(format!("attachment;fileName={safe_name}").as_bytes())
                .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
        SmallFile {
            name,
            bytes,
            md5,
            etag,
            content_disposition,
        }
    }
}

/// Returns the lowercase hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut out = String::with_capacity(32);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// A store error. Messages name the file id. The source error may contain a local path or
/// bucket name, so these messages go to the log only, never to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {op} for file id {id} timed out after {timeout:?}")]
    Timeout {
        op: &'static str,
        id: i64,
        timeout: Duration,
    },
    #[error("store {op} for file id {id} failed: {source}")]
    Backend {
        op: &'static str,
        id: i64,
        source: object_store::Error,
    },
    #[error("file id {id} has {count} objects in the store ({names}); keep exactly one")]
    Ambiguous {
        id: i64,
        count: usize,
        names: String,
    },
    #[error("file id {id} is {size} bytes in the store, over max_file_bytes ({max})")]
    TooLarge { id: i64, size: u64, max: u64 },
}

/// A store URL from the config, before any store is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
    Memory,
}

impl StoreUrl {
    /// Parses `file://`, `s3://` or `memory://`; relative `file://` paths are resolved
    /// against `base_dir`.
    pub fn parse(url: &str, base_dir: &FsPath) -> Result<StoreUrl, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "small_file.store",
            value: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid(
                    "has no folder; use file:///abs/path or file://rel/path",
                ));
            }
            let path = FsPath::new(path);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            };
            return Ok(StoreUrl::Local(path));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("has no bucket; use s3://bucket/prefix"));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        Err(invalid(
            "has an unknown scheme; use file://, s3:// or memory://",
        ))
    }
}

/// The small-file store over any `object_store` backend, with a timeout on every call.
#[derive(Debug, Clone)]
pub struct FileStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    timeout: Duration,
    max_file_bytes: u64,
    metrics: Option<Arc<Metrics>>,
}

impl FileStore {
    /// Wraps an existing store; `prefix` is the key prefix in front of `<file_id>/`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        timeout: Duration,
        max_file_bytes: u64,
    ) -> FileStore {
        FileStore {
            store,
            prefix,
            timeout,
            max_file_bytes,
            metrics: None,
        }
    }

    /// Builds the store that `url` names. A local folder must exist.
    pub fn open(
        url: &StoreUrl,
        s3: &S3Config,
        timeout: Duration,
        max_file_bytes: u64,
    ) -> Result<FileStore, ConfigError> {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url {
            StoreUrl::Local(folder) => {
                let store =
                    LocalFileSystem::new_with_prefix(folder).map_err(|e| ConfigError::Invalid {
                        key: "small_file.store",
                        value: folder.display().to_string(),
                        reason: format!("cannot be opened as a folder: {e}"),
                    })?;
                (Arc::new(store), Path::default())
            }
            StoreUrl::S3 { bucket, prefix } => (
                Arc::new(build_s3(bucket, s3, timeout)?),
                Path::from(prefix.as_str()),
            ),
            StoreUrl::Memory => (Arc::new(InMemory::new()), Path::default()),
        };
        Ok(FileStore::new(store, prefix, timeout, max_file_bytes))
    }

    /// Counts store operations and their latency in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> FileStore {
        self.metrics = Some(metrics);
        self
    }

    fn id_folder(&self, id: i64) -> Path {
        self.prefix.clone().join(id.to_string())
    }

    /// Loads the one file under `id`. `Ok(None)` means the store has no object for it.
    pub async fn load(&self, id: i64) -> Result<Option<SmallFile>, StoreError> {
        let folder = self.id_folder(id);
        let listing = self
            .timed("list", id, self.store.list_with_delimiter(Some(&folder)))
            .await?;
        let objects = listing.objects;
        if objects.is_empty() {
            return Ok(None);
        }
        if objects.len() > 1 {
            let names: Vec<String> = objects.iter().map(|o| object_name(&o.location)).collect();
            return Err(StoreError::Ambiguous {
                id,
                count: objects.len(),
                names: names.join(", "),
            });
        }

        let meta = &objects[0];
        if meta.size > self.max_file_bytes {
            return Err(StoreError::TooLarge {
                id,
                size: meta.size,
                max: self.max_file_bytes,
            });
        }
        let get = async {
            let result = self.store.get(&meta.location).await?;
            result.bytes().await
        };
        let bytes = match self.timed("get", id, get).await {
            Ok(bytes) => bytes,
            // Removed between list and get: the same as never there.
            Err(StoreError::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 > self.max_file_bytes {
            return Err(StoreError::TooLarge {
                id,
                size: bytes.len() as u64,
                max: self.max_file_bytes,
            });
        }
        Ok(Some(SmallFile::new(object_name(&meta.location), bytes)))
    }

    /// Writes `file` as `<id>/<name>` unless that object exists. Returns whether it wrote.
    ///
    /// A name that cannot be a key segment (`.`, `..`, or empty) is stored percent-encoded
    /// by `object_store`, and decoded again by [`FileStore::load`].
    pub async fn put_if_absent(&self, id: i64, file: &SmallFile) -> Result<bool, StoreError> {
        let location = self.id_folder(id).join(PathPart::from(file.name.as_str()));
        let payload = PutPayload::from_bytes(file.bytes.clone());
        let put = self
            .store
            .put_opts(&location, payload, PutMode::Create.into());
        match self.timed("put", id, put).await {
            Ok(_) => Ok(true),
            Err(StoreError::Backend {
                source: object_store::Error::AlreadyExists { .. },
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        id: i64,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StoreError::Backend { op, id, source }),
            Err(_) => Err(StoreError::Timeout {
                op,
                id,
                timeout: self.timeout,
            }),
        };
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(StoreError::Backend {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => "not_found",
                Err(StoreError::Backend {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) => "exists",
                Err(StoreError::Timeout { .. }) => "timeout",
                Err(_) => "error",
            };
            metrics.observe_store(op, outcome, started.elapsed());
        }
        result
    }
}

/// Returns the file name: the object's last key segment, percent-decoded as `object_store`
/// encodes it.
fn object_name(location: &Path) -> String {
    let raw = location.filename().unwrap_or_default();
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn build_s3(
    bucket: &str,
    s3: &S3Config,
    timeout: Duration,
) -> Result<object_store::aws::AmazonS3, ConfigError> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token);
    }
    if let Some(allow_http) = s3.allow_http {
        builder = builder.with_allow_http(allow_http);
    }
    builder = builder.with_virtual_hosted_style_request(!s3.path_style.unwrap_or(true));

    // The whole request path has its own timeout, so object_store's defaults (30 s per
    // request, 10 retries) would only hide an outage. One quick retry covers a stale
    // pooled connection. `FileStore::timed` ends a slow call and counts it as a timeout, so
    // the client's own request timeout is only a backstop at twice that.
    // Set key by key: `with_client_options` would replace the client options, and with
    // them `allow_http` and what `from_env` read.
    let timeout_text = format!("{}ms", timeout.as_millis());
    let backstop_text = format!("{}ms", timeout.as_millis().saturating_mul(2));
    builder = builder
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            &backstop_text,
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            &timeout_text,
        );
    let retry = RetryConfig {
        max_retries: 1,
        retry_timeout: timeout,
        ..Default::default()
    };
    builder
        .with_retry(retry)
        .build()
        .map_err(|e| ConfigError::Invalid {
            key: "small_file.s3",
            value: format!("bucket {bucket}"),
            reason: format!("cannot build the S3 client: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_store(max: u64) -> FileStore {
        FileStore::new(
            Arc::new(InMemory::new()),
            Path::from("pre/fix"),
            Duration::from_secs(2),
            max,
        )
    }

    #[test]
    fn md5_of_empty_input() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn store_url_schemes() {
        let base = FsPath::new("/etc/proxy");
        assert_eq!(
            StoreUrl::parse("file://files", base).unwrap(),
            StoreUrl::Local(PathBuf::from("/etc/proxy/files"))
        );
        assert_eq!(
            StoreUrl::parse("file:///var/lib/x", base).unwrap(),
            StoreUrl::Local(PathBuf::from("/var/lib/x"))
        );
        assert_eq!(
            StoreUrl::parse("s3://bucket/a/b/", base).unwrap(),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("memory://", base).unwrap(),
            StoreUrl::Memory
        );
        assert!(StoreUrl::parse("s3://", base).is_err());
        assert!(StoreUrl::parse("http://x", base).is_err());
    }

    #[tokio::test]
    async fn put_then_load_round_trip() {
        let store = memory_store(1024);
        let file = SmallFile::new("client keystore.jks", Bytes::from_static(b"abc"));
        assert!(store.put_if_absent(7, &file).await.unwrap());
        assert!(!store.put_if_absent(7, &file).await.unwrap());
        assert_eq!(store.load(7).await.unwrap(), Some(file));
        assert_eq!(store.load(8).await.unwrap(), None);
    }

    #[tokio::test]
    async fn odd_names_round_trip() {
        let store = memory_store(1024);
        for (id, name) in [(1, "100%.pem"), (2, "a\nb"), (3, ".."), (4, "x/y")] {
            let file = SmallFile::new(name, Bytes::from_static(b"z"));
            store.put_if_absent(id, &file).await.unwrap();
            let loaded = store.load(id).await.unwrap().unwrap();
            assert_eq!(loaded.name, name, "name of id {id}");
        }
    }

    #[tokio::test]
    async fn two_objects_under_one_id_rejected() {
        let store = memory_store(1024);
        store
            .put_if_absent(5, &SmallFile::new("a.pem", Bytes::from_static(b"a")))
            .await
            .unwrap();
        store
            .put_if_absent(5, &SmallFile::new("b.pem", Bytes::from_static(b"b")))
            .await
            .unwrap();
        let error = store.load(5).await.unwrap_err();
        assert!(matches!(
            error,
            StoreError::Ambiguous {
                id: 5,
                count: 2,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn object_over_limit_rejected() {
        let store = memory_store(2);
        store
            .put_if_absent(5, &SmallFile::new("a.pem", Bytes::from_static(b"abc")))
            .await
            .unwrap();
        let error = store.load(5).await.unwrap_err();
        assert!(matches!(
            error,
            StoreError::TooLarge {
                id: 5,
                size: 3,
                max: 2
            }
        ));
    }
}
