//! A second `doris-fe-proxy` process started with `-u` on the config file of a running
//! [`ProxyProcess`], to take its listening sockets over (Pingora's graceful upgrade).
//!
//! The new process binds `server.upgrade_sock` and waits there, for about 6 seconds, for the
//! old process to send its listening sockets, which the old process does when it gets
//! SIGQUIT. [`SecondProxy::start`] returns once that socket file exists.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::wait_until;
use super::proxy::{PROXY_BIN, ProxyProcess};

/// Lines of the log printed when a test panics while the process runs.
const LOG_TAIL_LINES: usize = 60;

/// The process started with `-u`; killed (SIGKILL by pid) on drop if it still runs.
pub struct SecondProxy {
    child: Child,
    log_path: PathBuf,
}

impl SecondProxy {
    /// Starts `doris-fe-proxy -c <old's config> -u` in the old process's folder, with the
    /// log in `<folder>/proxy-upgraded.log`, and waits up to `timeout` until the upgrade
    /// socket `upgrade_sock` exists. Panics with the log if it does not.
    pub fn start(old: &ProxyProcess, upgrade_sock: &Path, timeout: Duration) -> SecondProxy {
        let log_path = old.dir().join("proxy-upgraded.log");
        let log = File::create(&log_path).expect("cannot create the second proxy's log");
        let log_for_stderr = log.try_clone().expect("cannot duplicate the log handle");
        let mut command = Command::new(PROXY_BIN);
        command
            .arg("-c")
            .arg(old.config_path())
            .arg("-u")
            .current_dir(old.dir())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROXY_BIN} -u: {e}"));
        let mut second = SecondProxy { child, log_path };
        let waiting = wait_until(timeout, || {
            upgrade_sock.exists() || !matches!(second.child.try_wait(), Ok(None))
        });
        assert!(
            waiting && upgrade_sock.exists(),
            "the -u process did not create {} within {timeout:?}; log:\n{}",
            upgrade_sock.display(),
            second.log_text()
        );
        second
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Returns whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("cannot wait for the -u process ({}): {e}", self.pid()),
            }
        }
    }
}

impl Drop for SecondProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- last {} lines of the -u process log ({}) ---\n{}",
                tail.len(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
        if let Ok(None) = self.child.try_wait() {
            // `Child::kill` sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
