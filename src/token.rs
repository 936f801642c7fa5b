//! The cluster token: where it comes from, how it is compared, and how it is reloaded.
//!
//! The token is never written to a log line or an error message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use subtle::ConstantTimeEq;

use crate::config::TokenConfig;
use crate::metrics::Metrics;

/// A token source error. Messages name the file or variable, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("environment variable `{name}` is not set or not UTF-8; set it to the cluster token")]
    MissingEnv { name: String },
    #[error("cannot read token file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file `{path}` is not a valid Java properties file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "token file `{path}` has no non-empty `token` property; point small_file.token.version_file at the FE's image/VERSION"
    )]
    NoToken { path: PathBuf },
}

/// Reads the `token` property of an FE `image/VERSION` file, a Java properties file.
pub fn read_version_file(path: &Path) -> Result<String, TokenError> {
    let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_version_file(path, &bytes)
}

fn parse_version_file(path: &Path, bytes: &[u8]) -> Result<String, TokenError> {
    let properties = java_properties::read(bytes).map_err(|e| TokenError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    match properties.get("token") {
        Some(token) if !token.is_empty() => Ok(token.clone()),
        _ => Err(TokenError::NoToken {
            path: path.to_path_buf(),
        }),
    }
}

/// The current cluster token, shared by every request and replaced on reload.
pub struct ClusterToken {
    current: RwLock<Arc<[u8]>>,
    source: TokenConfig,
}

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterToken")
            .field("source", &self.source_description())
            .finish_non_exhaustive()
    }
}

impl ClusterToken {
    /// Reads the token from its configured source.
    pub fn load(source: &TokenConfig) -> Result<ClusterToken, TokenError> {
        let token = match source {
            TokenConfig::Value(value) => value.clone(),
            TokenConfig::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => value,
                _ => return Err(TokenError::MissingEnv { name: name.clone() }),
            },
            TokenConfig::VersionFile(path) => read_version_file(path)?,
        };
        Ok(ClusterToken {
            current: RwLock::new(Arc::from(token.into_bytes())),
            source: source.clone(),
        })
    }

    /// Builds a token from a literal value.
    pub fn fixed(token: &str) -> ClusterToken {
        ClusterToken {
            current: RwLock::new(Arc::from(token.as_bytes())),
            source: TokenConfig::Value(String::new()),
        }
    }

    /// Compares `candidate` with the current token in constant time for equal lengths.
    pub fn matches(&self, candidate: &str) -> bool {
        let current = self.snapshot();
        bool::from(current.as_ref().ct_eq(candidate.as_bytes()))
    }

    /// Returns the current token bytes, for the FE fallback request.
    pub fn snapshot(&self) -> Arc<[u8]> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Returns the file to watch for changes, if the token comes from one.
    pub fn version_file(&self) -> Option<&Path> {
        match &self.source {
            TokenConfig::VersionFile(path) => Some(path),
            _ => None,
        }
    }

    /// Describes the source for logs: the variable or file name, never the token.
    pub fn source_description(&self) -> String {
        match &self.source {
            TokenConfig::Value(_) => "a literal value in the config file".to_string(),
            TokenConfig::Env(name) => format!("environment variable `{name}`"),
            TokenConfig::VersionFile(path) => format!("file `{}`", path.display()),
        }
    }

    fn replace(&self, token: String) {
        let token: Arc<[u8]> = Arc::from(token.into_bytes());
        match self.current.write() {
            Ok(mut guard) => *guard = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }
}

/// Re-reads the VERSION file on an interval and swaps in a changed token.
///
/// A file that cannot be read or has no token keeps the last good token and logs one
/// warning per change of the file's content or error, not one per check.
pub struct TokenReloader {
    token: Arc<ClusterToken>,
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl TokenReloader {
    pub fn new(token: Arc<ClusterToken>, interval: Duration, metrics: Arc<Metrics>) -> Self {
        TokenReloader {
            token,
            interval,
            metrics,
        }
    }

    /// Checks the file once. `last_seen` is the file content (or error text) of the last
    /// check, so that an unchanged file costs one read and nothing else.
    fn check(&self, path: &Path, last_seen: &mut Option<Result<Vec<u8>, String>>) {
        let seen = std::fs::read(path).map_err(|e| e.to_string());
        if last_seen.as_ref() == Some(&seen) {
            return;
        }
        *last_seen = Some(seen.clone());

        let parsed = match seen {
            Ok(bytes) => parse_version_file(path, &bytes),
            Err(_) => read_version_file(path),
        };
        match parsed {
            Ok(token) => {
                if *self.token.snapshot() != *token.as_bytes() {
                    self.token.replace(token);
                    self.metrics.token_reloads.with_label_values(&["ok"]).inc();
                    log::info!("cluster token reloaded from `{}`", path.display());
                }
            }
            Err(e) => {
                self.metrics
                    .token_reloads
                    .with_label_values(&["error"])
                    .inc();
                log::warn!("keeping the last good cluster token: {e}");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for TokenReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(path) = self.token.version_file().map(Path::to_path_buf) else {
            return;
        };
        let mut last_seen = Some(std::fs::read(&path).map_err(|e| e.to_string()));
        let mut ticker = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => self.check(&path, &mut last_seen),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, TokenError> {
        parse_version_file(Path::new("VERSION"), text.as_bytes())
    }

    #[test]
    fn doris_version_file() {
        let text = "#Mon Nov 30 10:12:44 UTC 2026\nclusterId=1529384712\ntoken=5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60\n";
        assert_eq!(parse(text).unwrap(), "5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60");
    }

    #[test]
    fn shared_case_version_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases/version/VERSION");
        assert_eq!(
            read_version_file(&path).unwrap(),
            "5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60"
        );
    }

    #[test]
    fn token_before_cluster_id_and_bang_comments() {
        let text = "! comment\ntoken=abc\n# other\nclusterId=1\n";
        assert_eq!(parse(text).unwrap(), "abc");
    }

    #[test]
    fn colon_and_space_separators() {
        assert_eq!(parse("token:abc\n").unwrap(), "abc");
        assert_eq!(parse("token abc\n").unwrap(), "abc");
        assert_eq!(parse("  token = abc\n").unwrap(), "abc");
    }

    #[test]
    fn escapes_and_continuations() {
        assert_eq!(parse("token=ab\\\n    cd\n").unwrap(), "abcd");
        assert_eq!(parse("token=a\\u0062c\n").unwrap(), "abc");
        assert_eq!(parse("to\\ken=abc\n").unwrap(), "abc");
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(parse("clusterId=1\r\ntoken=abc\r\n").unwrap(), "abc");
    }

    #[test]
    fn missing_or_empty_token_rejected() {
        assert!(matches!(
            parse("clusterId=1\n"),
            Err(TokenError::NoToken { .. })
        ));
        assert!(matches!(parse("token=\n"), Err(TokenError::NoToken { .. })));
        assert!(matches!(parse(""), Err(TokenError::NoToken { .. })));
    }

    #[test]
    fn unreadable_file_names_path() {
        let error = read_version_file(Path::new("/nonexistent/VERSION")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/VERSION"));
    }

    #[test]
    fn token_compare_is_exact() {
        let token = ClusterToken::fixed("abc");
        assert!(token.matches("abc"));
        assert!(!token.matches("ABC"));
        assert!(!token.matches("abc "));
        assert!(!token.matches("ab"));
        assert!(!token.matches(""));
    }

    #[test]
    fn env_source() {
        // SAFETY: this test owns the variable name, and no other test reads or writes it.
        unsafe { std::env::set_var("DORIS_FE_PROXY_TEST_TOKEN_ENV", "xyz") };
        let token =
            ClusterToken::load(&TokenConfig::Env("DORIS_FE_PROXY_TEST_TOKEN_ENV".into())).unwrap();
        assert!(token.matches("xyz"));
        let missing = ClusterToken::load(&TokenConfig::Env("DORIS_FE_PROXY_TEST_UNSET".into()));
        assert!(matches!(missing, Err(TokenError::MissingEnv { .. })));
    }

    #[test]
    fn debug_output_hides_token() {
        let token = ClusterToken::fixed("secret-token-value");
        assert!(!format!("{token:?}").contains("secret-token-value"));
    }
}
