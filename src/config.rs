//! The YAML configuration file: its shape, its defaults and its validation.
//!
//! Every key except `listen`, `fe.backends`, `small_file.token` and `small_file.store` has a
//! default, written next to the field. Unknown keys are rejected so that a typo cannot
//! silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use serde::Deserialize;

/// A configuration error. Each message names the key and the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config value for `{key}`: `{value}` {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pingora's own server settings, with the same keys as Pingora's YAML file.
    /// `threads` defaults to 2 and both grace periods to 5 seconds here, because Pingora's
    /// 300 s default outlives the stop timeout of systemd and of container runtimes.
    #[serde(default = "default_server_conf")]
    pub server: ServerConf,
    /// Address of the proxy listener, for example `0.0.0.0:8030`.
    #[serde(rename = "listen")]
    listen_text: String,
    /// `listen` parsed; set by validation.
    #[serde(skip, default = "unspecified_addr")]
    pub listen: SocketAddr,
    /// The FE nodes and how to reach them.
    pub fe: FeConfig,
    /// The small-file endpoint.
    pub small_file: SmallFileConfig,
    /// The Prometheus listener. Absent means no metrics listener.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Whether to write one access log line per request (target `access`, level info).
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Folder that relative paths in the file are resolved against: the config file's folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The FE backends and the upstream settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeConfig {
    /// FE HTTP addresses (`host:port`, the FE's `http_port`).
    pub backends: Vec<String>,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// Upstream TCP connect timeout. Default 1000 ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Upstream read timeout between two reads. Default 600000 ms, because `/image`
    /// downloads and slow FE actions must not be cut.
    #[serde(default = "default_io_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Upstream write timeout between two writes. Default 600000 ms.
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_ms: u64,
    /// How long an idle pooled upstream connection is kept. Default 60000 ms.
    #[serde(default = "default_upstream_idle_ms")]
    pub idle_timeout_ms: u64,
    /// How many times a failed connect is retried on another backend. Default 2.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// How long an idle downstream keep-alive connection is kept, in seconds. Default 60.
    #[serde(default = "default_downstream_keepalive_s")]
    pub downstream_keepalive_seconds: u64,
}

/// The HTTP health check of the FE backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path of the health endpoint. Default `/api/health`.
    pub path: String,
    /// Time between two checks of one backend. Default 1000 ms.
    pub interval_ms: u64,
    /// Connect and read timeout of one check. Default 1000 ms.
    pub timeout_ms: u64,
    /// Successful checks in a row that mark a backend healthy. Default 1.
    pub consecutive_success: usize,
    /// Failed checks in a row that mark a backend unhealthy. Default 1.
    pub consecutive_failure: usize,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/api/health".to_string(),
            interval_ms: 1000,
            timeout_ms: 1000,
            consecutive_success: 1,
            consecutive_failure: 1,
        }
    }
}

/// The small-file endpoint: token, store, cache and limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallFileConfig {
    /// `{ value: ... }`, `{ env: NAME }` or `{ version_file: path }`.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub token: TokenConfig,
    /// How often the token's VERSION file is checked for changes. Default 1000 ms.
    #[serde(default = "default_token_reload_ms")]
    pub token_reload_interval_ms: u64,
    /// Store URL: `file:///abs/path`, `file://relative/path` (relative to the config file),
    /// `s3://bucket/prefix` or `memory://`.
    pub store: String,
    /// S3 settings; every one can also come from the usual `AWS_*` variables.
    #[serde(default)]
    pub s3: S3Config,
    /// Timeout of one store operation. Default 2000 ms.
    #[serde(default = "default_backend_timeout_ms")]
    pub store_timeout_ms: u64,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Largest file that is served. Default 1 MiB, the FE's `max_small_file_size_bytes`.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Fetch a file from an FE when the store has none under its id. Default true.
    #[serde(default = "default_true")]
    pub fallback_to_fe: bool,
    /// Timeout of one FE fallback fetch. Default 2000 ms.
    #[serde(default = "default_backend_timeout_ms")]
    pub fe_timeout_ms: u64,
    #[serde(default)]
    pub error_status: ErrorStatus,
}

/// The source of the cluster token. Exactly one key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TokenConfig {
    /// The token itself.
    Value(String),
    /// The name of an environment variable that contains the token.
    Env(String),
    /// The FE's `image/VERSION` file; the token is its `token` property.
    VersionFile(PathBuf),
}

/// S3 settings. Each `None` falls back to the matching `AWS_*` environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow `http://` endpoints, as local S3-compatible servers use.
    pub allow_http: Option<bool>,
    /// Use `https://host/bucket/key` addressing. Default true, which every S3-compatible
    /// server accepts; AWS also accepts it.
    pub path_style: Option<bool>,
}

/// Cache limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound of the cached file bytes. Default 256 MiB.
    pub max_bytes: u64,
    /// How long a file stays cached. Default 600 s.
    pub ttl_seconds: u64,
    /// How long an id that has no file is remembered as missing. Default 5 s.
    pub negative_ttl_seconds: u64,
    /// How many missing ids are remembered at most. Default 10000.
    pub negative_max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            ttl_seconds: 600,
            negative_ttl_seconds: 5,
            negative_max_entries: 10_000,
        }
    }
}

/// The mapping of small-file errors to HTTP statuses.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStatus {
    /// Status 200 for every error, as the FE sends.
    #[default]
    Doris,
    /// 400 bad request, 403 invalid token, 404 not found, 503 store and FE unavailable.
    Http,
}

/// The Prometheus listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(rename = "listen")]
    listen_text: String,
    /// `listen` parsed; set by validation.
    #[serde(skip, default = "unspecified_addr")]
    pub listen: SocketAddr,
}

fn unspecified_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn parse_socket_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            text,
            "is not an ip:port socket address, for example `127.0.0.1:8030`",
        )
    })
}

fn default_server_conf() -> ServerConf {
    let mut conf = ServerConf {
        threads: 2,
        ..Default::default()
    };
    conf.grace_period_seconds = Some(5);
    conf.graceful_shutdown_timeout_seconds = Some(5);
    conf
}

/// Returns the keys of the document's `server` section, or `None` without one. A key that
/// Pingora's `ServerConf` does not have is an error: Pingora itself would ignore it.
fn server_keys(document: &serde_yaml::Value) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(section) = document.get("server") else {
        return Ok(None);
    };
    let Some(section) = section.as_mapping() else {
        // serde reports the wrong type with its position.
        return Ok(None);
    };
    let known = match serde_yaml::to_value(ServerConf::default()) {
        Ok(serde_yaml::Value::Mapping(known)) => known,
        _ => return Ok(None),
    };
    let mut keys = Vec::with_capacity(section.len());
    for key in section.keys() {
        let name = match key.as_str() {
            Some(name) => name.to_string(),
            None => serde_yaml::to_string(key)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if !known.contains_key(key) {
            return Err(ConfigError::invalid(
                "server",
                name,
                "is not a Pingora server setting",
            ));
        }
        keys.push(name);
    }
    Ok(Some(keys))
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_io_timeout_ms() -> u64 {
    600_000
}
fn default_upstream_idle_ms() -> u64 {
    60_000
}
fn default_retries() -> usize {
    2
}
fn default_downstream_keepalive_s() -> u64 {
    60
}
fn default_token_reload_ms() -> u64 {
    1000
}
fn default_backend_timeout_ms() -> u64 {
    2000
}
fn default_max_file_bytes() -> u64 {
    1024 * 1024
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &base_dir).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: serde_yaml::Error| ConfigError::Parse {
            path: base_dir.to_path_buf(),
            message: e.to_string(),
        };
        // Parsed from the text, not from a `Value`, so that serde's messages name the key
        // path and the line.
        let mut config: Config = serde_yaml::from_str(text).map_err(parse_error)?;
        let document: serde_yaml::Value = serde_yaml::from_str(text).map_err(parse_error)?;
        let server_keys = server_keys(&document)?;
        config.base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir.to_path_buf()
        };

        // Pingora fills a `server` section's missing keys with its own defaults, so the
        // defaults of this file apply only where the section leaves a key out.
        let defaults = default_server_conf();
        if server_keys.is_some_and(|keys| !keys.iter().any(|key| key == "threads")) {
            config.server.threads = defaults.threads;
        }
        let server = &mut config.server;
        server.grace_period_seconds = server
            .grace_period_seconds
            .or(defaults.grace_period_seconds);
        server.graceful_shutdown_timeout_seconds = server
            .graceful_shutdown_timeout_seconds
            .or(defaults.graceful_shutdown_timeout_seconds);

        config.listen = parse_socket_addr("listen", &config.listen_text)?;
        if let Some(metrics) = &mut config.metrics {
            metrics.listen = parse_socket_addr("metrics.listen", &metrics.listen_text)?;
        }
        if let TokenConfig::VersionFile(file) = &config.small_file.token {
            config.small_file.token = TokenConfig::VersionFile(config.resolve(file));
        }

        config.server.pid_file = config.resolve_text(&config.server.pid_file);
        config.server.upgrade_sock = config.resolve_text(&config.server.upgrade_sock);
        if let Some(error_log) = &config.server.error_log {
            config.server.error_log = Some(config.resolve_text(error_log));
        }

        config.validate()?;
        Ok(config)
    }

    /// Resolves a path given as text (a Pingora setting) against the config file's folder.
    fn resolve_text(&self, path: &str) -> String {
        self.resolve(Path::new(path)).to_string_lossy().into_owned()
    }

    /// Resolves a path from the file against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.threads == 0 {
            return Err(ConfigError::invalid(
                "server.threads",
                0,
                "must be at least 1",
            ));
        }
        if self.fe.backends.is_empty() {
            return Err(ConfigError::invalid(
                "fe.backends",
                "[]",
                "must list at least one FE address (host:port)",
            ));
        }
        for backend in &self.fe.backends {
            if !backend.contains(':') {
                return Err(ConfigError::invalid(
                    "fe.backends",
                    backend,
                    "is not host:port; add the FE's http_port, for example `10.0.0.1:8030`",
                ));
            }
        }
        let hc = &self.fe.health_check;
        if !hc.path.starts_with('/') {
            return Err(ConfigError::invalid(
                "fe.health_check.path",
                &hc.path,
                "must start with `/`",
            ));
        }
        positive("fe.health_check.interval_ms", hc.interval_ms)?;
        positive("fe.health_check.timeout_ms", hc.timeout_ms)?;
        positive(
            "fe.health_check.consecutive_success",
            hc.consecutive_success as u64,
        )?;
        positive(
            "fe.health_check.consecutive_failure",
            hc.consecutive_failure as u64,
        )?;
        positive("fe.connect_timeout_ms", self.fe.connect_timeout_ms)?;
        positive("fe.read_timeout_ms", self.fe.read_timeout_ms)?;
        positive("fe.write_timeout_ms", self.fe.write_timeout_ms)?;
        positive("fe.idle_timeout_ms", self.fe.idle_timeout_ms)?;
        positive(
            "fe.downstream_keepalive_seconds",
            self.fe.downstream_keepalive_seconds,
        )?;

        let small_file = &self.small_file;
        match &small_file.token {
            TokenConfig::Value(value) if value.is_empty() => {
                return Err(ConfigError::invalid(
                    "small_file.token.value",
                    "",
                    "is empty; an empty token would be treated as missing by every request",
                ));
            }
            TokenConfig::Env(name) if name.is_empty() => {
                return Err(ConfigError::invalid(
                    "small_file.token.env",
                    "",
                    "is empty; name the environment variable that holds the token",
                ));
            }
            _ => {}
        }
        crate::store::StoreUrl::parse(&small_file.store, &self.base_dir)?;
        positive(
            "small_file.token_reload_interval_ms",
            small_file.token_reload_interval_ms,
        )?;
        positive("small_file.store_timeout_ms", small_file.store_timeout_ms)?;
        positive("small_file.fe_timeout_ms", small_file.fe_timeout_ms)?;
        positive("small_file.max_file_bytes", small_file.max_file_bytes)?;
        positive("small_file.cache.max_bytes", small_file.cache.max_bytes)?;
        positive("small_file.cache.ttl_seconds", small_file.cache.ttl_seconds)?;
        positive(
            "small_file.cache.negative_max_entries",
            small_file.cache.negative_max_entries,
        )?;
        if small_file.cache.max_bytes < small_file.max_file_bytes {
            return Err(ConfigError::invalid(
                "small_file.cache.max_bytes",
                small_file.cache.max_bytes,
                format!(
                    "is smaller than small_file.max_file_bytes ({}); the largest file could never be cached",
                    small_file.max_file_bytes
                ),
            ));
        }
        if let Some(metrics) = &self.metrics
            && metrics.listen == self.listen
        {
            return Err(ConfigError::invalid(
                "metrics.listen",
                metrics.listen,
                "is the same address as `listen`; give the metrics listener its own port",
            ));
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.fe.connect_timeout_ms)
    }
}

fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, 0, "must be greater than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
listen: 127.0.0.1:8030
fe:
  backends: [\"127.0.0.1:8031\"]
small_file:
  token: { value: abc }
  store: file://files
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/doris-fe-proxy"))
    }

    fn error_text(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("config unexpectedly valid:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.threads, 2);
        assert_eq!(config.server.grace_period_seconds, Some(5));
        assert_eq!(config.small_file.max_file_bytes, 1024 * 1024);
        assert_eq!(config.small_file.cache.max_bytes, 256 * 1024 * 1024);
        assert!(config.small_file.fallback_to_fe);
        assert_eq!(config.small_file.error_status, ErrorStatus::Doris);
        assert_eq!(config.fe.health_check.path, "/api/health");
        assert_eq!(config.small_file.token, TokenConfig::Value("abc".into()));
    }

    #[test]
    fn version_file_resolved_against_config_folder() {
        let text = MINIMAL.replace("{ value: abc }", "{ version_file: meta/VERSION }");
        let config = parse(&text).unwrap();
        assert_eq!(
            config.small_file.token,
            TokenConfig::VersionFile(PathBuf::from("/etc/doris-fe-proxy/meta/VERSION"))
        );
    }

    #[test]
    fn server_keys_pass_through_to_pingora() {
        let text = format!("server:\n  threads: 4\n  grace_period_seconds: 1\n{MINIMAL}");
        let config = parse(&text).unwrap();
        assert_eq!(config.server.threads, 4);
        assert_eq!(config.server.grace_period_seconds, Some(1));
        assert_eq!(config.server.graceful_shutdown_timeout_seconds, Some(5));
    }

    #[test]
    fn server_section_without_threads_keeps_default() {
        let text = format!("server:\n  pid_file: run/proxy.pid\n{MINIMAL}");
        let config = parse(&text).unwrap();
        assert_eq!(config.server.threads, 2);
        assert_eq!(config.server.pid_file, "/etc/doris-fe-proxy/run/proxy.pid");
        assert_eq!(config.server.upgrade_sock, "/tmp/pingora_upgrade.sock");
    }

    #[test]
    fn unknown_server_key_named() {
        let text = format!("server:\n  thredas: 4\n{MINIMAL}");
        let message = error_text(&text);
        assert!(message.contains("`server`"), "{message}");
        assert!(message.contains("thredas"), "{message}");
    }

    #[test]
    fn unknown_key_named() {
        let text = MINIMAL.replace("store:", "stor: x\n  store:");
        let message = error_text(&text);
        assert!(message.contains("stor"), "{message}");
    }

    #[test]
    fn bad_listen_address_named() {
        let message = error_text(&MINIMAL.replace("127.0.0.1:8030", "localhost"));
        assert!(message.contains("listen"), "{message}");
        assert!(message.contains("localhost"), "{message}");
    }

    #[test]
    fn empty_backends_rejected() {
        let message = error_text(&MINIMAL.replace("[\"127.0.0.1:8031\"]", "[]"));
        assert!(message.contains("fe.backends"), "{message}");
    }

    #[test]
    fn backend_without_port_rejected() {
        let message = error_text(&MINIMAL.replace("127.0.0.1:8031", "fe1"));
        assert!(message.contains("fe.backends"), "{message}");
        assert!(message.contains("`fe1`"), "{message}");
    }

    #[test]
    fn unknown_store_scheme_named() {
        let message = error_text(&MINIMAL.replace("file://files", "s4://bucket"));
        assert!(message.contains("small_file.store"), "{message}");
        assert!(message.contains("s4://bucket"), "{message}");
    }

    #[test]
    fn zero_max_bytes_named() {
        let text = format!("{MINIMAL}  cache: {{ max_bytes: 0 }}\n");
        let message = error_text(&text);
        assert!(message.contains("small_file.cache.max_bytes"), "{message}");
    }

    #[test]
    fn bad_error_status_named() {
        let text = format!("{MINIMAL}  error_status: teapot\n");
        let message = error_text(&text);
        assert!(message.contains("error_status"), "{message}");
        assert!(message.contains("teapot"), "{message}");
    }

    #[test]
    fn empty_token_rejected() {
        let message = error_text(&MINIMAL.replace("{ value: abc }", "{ value: \"\" }"));
        assert!(message.contains("small_file.token.value"), "{message}");
    }

    #[test]
    fn two_token_sources_rejected() {
        let message = error_text(&MINIMAL.replace("{ value: abc }", "{ value: abc, env: X }"));
        assert!(message.contains("token"), "{message}");
    }

    #[test]
    fn metrics_on_proxy_port_rejected() {
        let text = format!("{MINIMAL}metrics:\n  listen: 127.0.0.1:8030\n");
        let message = error_text(&text);
        assert!(message.contains("metrics.listen"), "{message}");
    }
}
