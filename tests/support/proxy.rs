//! The real `doris-fe-proxy` binary as a child process, started from a YAML file that
//! [`ProxyBuilder`] writes into a temporary folder.
//!
//! Test defaults: free loopback ports for the proxy and the metrics listener,
//! `server.threads: 2` and 1 s grace periods. The pid file, the upgrade socket and an empty
//! local store are in the temporary folder. The FE health check runs every 200 ms, the
//! token is [`TEST_TOKEN`], and the one FE backend is a free port where nothing listens.
//! Any key can be changed with [`ProxyBuilder::set`].

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::{Mapping, Value};
use tempfile::TempDir;

use super::TEST_TOKEN;
use super::fake_fe::{FAKE_FE_HEADER, FakeFe};
use super::http::{
    DEFAULT_TIMEOUT, RawResponse, build_request, free_addr, raw_request, try_raw_request,
    wait_until,
};
use super::s3::S3Server;

/// The binary under test, built by cargo for the integration tests.
pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_doris-fe-proxy");

/// How long [`ProxyBuilder::start`] waits for the listeners: 10 seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of the proxy log printed when a test panics while the proxy runs.
const LOG_TAIL_LINES: usize = 60;

/// Builds the config file of a [`ProxyProcess`].
pub struct ProxyBuilder {
    dir: TempDir,
    config: Value,
    env: Vec<(String, String)>,
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        ProxyBuilder::new()
    }
}

impl ProxyBuilder {
    /// Creates the temporary folder and the default config (see the module documentation).
    pub fn new() -> ProxyBuilder {
        let dir = tempfile::Builder::new()
            .prefix("doris-fe-proxy-test-")
            .tempdir()
            .expect("cannot create a temporary folder");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("cannot create the default store folder");
        let dead_backend = free_addr();

        let text = format!(
            r#"
server:
  threads: 2
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  pid_file: {pid_file}
  upgrade_sock: {upgrade_sock}
listen: {listen}
fe:
  backends: ["{dead_backend}"]
  health_check: {{ path: /api/health, interval_ms: 200, timeout_ms: 1000 }}
small_file:
  token: {{ value: "{TEST_TOKEN}" }}
  store: "file://{store}"
metrics:
  listen: {metrics}
"#,
            pid_file = dir.path().join("proxy.pid").display(),
            upgrade_sock = dir.path().join("upgrade.sock").display(),
            listen = free_addr(),
            store = store.display(),
            metrics = free_addr(),
        );
        let config = serde_yaml::from_str(&text).expect("the default test config is valid YAML");
        ProxyBuilder {
            dir,
            config,
            env: Vec::new(),
        }
    }

    /// Returns the temporary folder with the config, the log, the pid file and the default
    /// store (`store/`). It lives as long as the builder or the process.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sets the key at the dotted path `key` (for example `small_file.error_status`) to
    /// `yaml`, parsed as YAML (`http`, `1024`, `{ value: x }`, `[a, b]`). Missing parent
    /// mappings are created. Panics if `yaml` is not valid YAML.
    pub fn set(mut self, key: &str, yaml: &str) -> Self {
        let value: Value = serde_yaml::from_str(yaml)
            .unwrap_or_else(|e| panic!("value for `{key}` is not valid YAML ({e}): {yaml}"));
        let (parent, last) = parent_mapping(&mut self.config, key);
        parent.insert(Value::from(last), value);
        self
    }

    /// Removes the key at the dotted path `key`, for example `metrics`.
    pub fn remove(mut self, key: &str) -> Self {
        let (parent, last) = parent_mapping(&mut self.config, key);
        parent.remove(Value::from(last));
        self
    }

    /// Sets `fe.backends` to these addresses.
    pub fn backends(self, addrs: &[SocketAddr]) -> Self {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        self.set("fe.backends", &format!("[{}]", list.join(", ")))
    }

    /// Sets `fe.backends` to the one fake FE.
    pub fn fe(self, fe: &FakeFe) -> Self {
        self.backends(&[fe.addr()])
    }

    /// Sets `small_file.store` to a `file://` URL of the absolute form of `folder`.
    pub fn store_dir(self, folder: &Path) -> Self {
        let folder = folder
            .canonicalize()
            .unwrap_or_else(|e| panic!("store folder {} is not usable: {e}", folder.display()));
        self.set(
            "small_file.store",
            &yaml_string(&format!("file://{}", folder.display())),
        )
    }

    /// Sets `small_file.store` to `s3://<bucket>/<prefix>` on `s3`, with its endpoint, keys
    /// and `allow_http`.
    pub fn s3_store(self, s3: &S3Server, prefix: &str) -> Self {
        let url = format!("s3://{}/{}", s3.bucket(), prefix.trim_matches('/'));
        let s3_yaml = format!(
            "{{ endpoint: {}, region: us-east-1, access_key_id: {}, secret_access_key: {}, allow_http: true }}",
            yaml_string(&s3.endpoint()),
            yaml_string(s3.access_key()),
            yaml_string(s3.secret_key()),
        );
        self.set("small_file.store", &yaml_string(&url))
            .set("small_file.s3", &s3_yaml)
    }

    /// Sets `small_file.token` to `{ value: token }`.
    pub fn token_value(self, token: &str) -> Self {
        self.set(
            "small_file.token",
            &format!("{{ value: {} }}", yaml_string(token)),
        )
    }

    /// Sets `small_file.token` to `{ version_file: path }`.
    pub fn token_version_file(self, path: &Path) -> Self {
        let path = yaml_string(&path.display().to_string());
        self.set("small_file.token", &format!("{{ version_file: {path} }}"))
    }

    /// Sets `small_file.token` to `{ env: name }` and the variable `name` to `token`.
    pub fn token_env(self, name: &str, token: &str) -> Self {
        self.env(name, token).set(
            "small_file.token",
            &format!("{{ env: {} }}", yaml_string(name)),
        )
    }

    /// Sets an environment variable of the process. Every `AWS_*` variable of the test
    /// environment is removed, so only the ones set here reach the proxy.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Returns the config file text as it will be written.
    pub fn config_text(&self) -> String {
        serde_yaml::to_string(&self.config).expect("the config serializes")
    }

    /// Runs `doris-fe-proxy -t -c <config>` and returns its exit status and output.
    pub fn check(self) -> Output {
        let config_path = self.write_config();
        self.command(&config_path)
            .arg("-t")
            .output()
            .expect("cannot run doris-fe-proxy -t")
    }

    /// Starts the proxy and waits until its listener (and the metrics listener, if set)
    /// accepts connections. Panics with the proxy log if the process exits or does not
    /// listen within [`START_TIMEOUT`].
    pub fn start(self) -> ProxyProcess {
        self.try_start()
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`ProxyBuilder::start`], but returns the reason and the log on failure, for
    /// tests of start-up errors.
    pub fn try_start(self) -> Result<ProxyProcess, String> {
        let addr = self.address_at("listen").expect("config has no `listen`");
        let metrics_addr = self.address_at("metrics.listen");
        let config_path = self.write_config();
        let log_path = self.dir.path().join("proxy.log");
        let child = LoggedChild::spawn(self.command(&config_path), log_path, "doris-fe-proxy");
        let mut process = ProxyProcess {
            child,
            dir: self.dir,
            addr,
            metrics_addr,
            config_path,
        };

        let mut exited = None;
        let listening = wait_until(START_TIMEOUT, || {
            if let Some(status) = process.child.exit_status() {
                exited = Some(status);
                return true;
            }
            accepts(addr) && metrics_addr.is_none_or(accepts)
        });
        if let Some(status) = exited {
            return Err(format!(
                "doris-fe-proxy exited during start-up with {status}; log:\n{}",
                process.log_text()
            ));
        }
        if !listening {
            return Err(format!(
                "doris-fe-proxy did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
                process.log_text()
            ));
        }
        Ok(process)
    }

    fn address_at(&self, key: &str) -> Option<SocketAddr> {
        let mut value = &self.config;
        for part in key.split('.') {
            value = value.get(part)?;
        }
        let text = value.as_str()?;
        Some(
            text.parse()
                .unwrap_or_else(|_| panic!("`{key}` is not an ip:port address: {text}")),
        )
    }

    fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("proxy.yaml");
        std::fs::write(&path, self.config_text()).expect("cannot write the proxy config");
        path
    }

    fn command(&self, config_path: &Path) -> Command {
        let mut command = proxy_command(config_path, self.dir.path());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }
}

/// Returns `doris-fe-proxy -c <config_path>` run in `dir` at log level info, without the
/// test environment's `AWS_*` variables, so that only the config sets the S3 client up.
pub fn proxy_command(config_path: &Path, dir: &Path) -> Command {
    let mut command = Command::new(PROXY_BIN);
    command
        .arg("-c")
        .arg(config_path)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
}

/// A child process whose stdout and stderr go to one log file. On drop it prints the log's
/// tail if the test panics, and kills the process (SIGKILL by pid) if it still runs.
pub struct LoggedChild {
    child: Child,
    log_path: PathBuf,
    /// Names the process in messages.
    name: &'static str,
}

impl LoggedChild {
    /// Starts `command` with stdout and stderr written to a new file at `log_path`.
    pub fn spawn(mut command: Command, log_path: PathBuf, name: &'static str) -> LoggedChild {
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .expect("cannot duplicate the log file handle");
        let child = command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        LoggedChild {
            child,
            log_path,
            name,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns everything the process wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Returns the exit status if the process has exited, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Returns whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("cannot wait for {} ({}): {e}", self.name, self.pid()),
            }
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- last {} lines of the {} log ({}) ---\n{}",
                tail.len(),
                self.name,
                self.log_path.display(),
                tail.join("\n")
            );
        }
        if self.is_running() {
            // `Child::kill` sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Returns the mapping that contains the last segment of the dotted `key`, creating missing
/// mappings on the way, and that last segment.
fn parent_mapping<'a>(config: &'a mut Value, key: &'a str) -> (&'a mut Mapping, &'a str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split returns at least one part");
    let mut value = config;
    for part in parts {
        let mapping = value
            .as_mapping_mut()
            .unwrap_or_else(|| panic!("`{key}`: a parent of `{part}` is not a mapping"));
        value = mapping
            .entry(Value::from(part))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    let mapping = value
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("`{key}`: the parent of `{last}` is not a mapping"));
    (mapping, last)
}

/// Quotes `text` as a YAML string.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A running `doris-fe-proxy`; killed (SIGKILL by pid) on drop if it still runs.
pub struct ProxyProcess {
    child: LoggedChild,
    dir: TempDir,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    config_path: PathBuf,
}

impl ProxyProcess {
    /// Returns the proxy listener address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the metrics listener address, `None` if the config has none.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Returns the temporary folder with the config, the log and the default store (`store/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Returns everything the process wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Waits up to `timeout` until the log contains `needle`; returns whether it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    /// Scrapes the metrics listener and returns the Prometheus text; panics if the config
    /// has no metrics listener or the scrape fails.
    pub fn metrics_text(&self) -> String {
        let addr = self
            .metrics_addr
            .expect("the proxy config has no metrics listener");
        let request = build_request("GET", "/metrics", addr, &[], b"");
        let response = raw_request(addr, &request, DEFAULT_TIMEOUT);
        assert_eq!(
            response.status,
            200,
            "metrics scrape failed: {}",
            response.body_text()
        );
        response.body_text()
    }

    /// Returns the value of the sample whose name and labels are exactly `series` (for
    /// example `doris_fe_proxy_small_file_requests_total{outcome="hit"}`), if present.
    pub fn metric_value(&self, series: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Waits up to `timeout` until a `GET /api/health` through the proxy comes back from
    /// `fe` (its `x-fake-fe` header), which shows the proxy counts `fe` as healthy.
    pub fn wait_until_forwarding_to(&self, fe: &FakeFe, timeout: Duration) -> bool {
        let request = build_request("GET", "/api/health", self.addr, &[], b"");
        wait_until(timeout, || {
            try_raw_request(self.addr, &request, DEFAULT_TIMEOUT)
                .is_ok_and(|response| response.header(FAKE_FE_HEADER) == Some(fe.name()))
        })
    }

    /// Sends `GET {target}` to the proxy, see [`super::http::get`].
    pub fn get(&self, target: &str) -> RawResponse {
        super::http::get(self.addr, target)
    }

    /// Sends a signal with the `kill` command: `TERM`, `QUIT`, `HUP`, `INT`, `KILL`
    /// (with or without the `SIG` prefix). Panics if `kill` fails.
    pub fn signal(&self, name: &str) {
        let name = name.strip_prefix("SIG").unwrap_or(name);
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("cannot run the kill command");
        assert!(
            status.success(),
            "kill -s {name} {} failed: {status}",
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_exit(timeout)
    }
}
