//! A second `doris-fe-proxy` process started with `-u` on the config file of a running
//! [`ProxyProcess`], to take its listening sockets over (Pingora's graceful upgrade).
//!
//! The new process binds `server.upgrade_sock` and waits there, for about 6 seconds, for the
//! old process to send its listening sockets, which the old process does when it gets
//! SIGQUIT. [`SecondProxy::start`] returns once that socket file exists.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::http::wait_until;
use super::proxy::{LoggedChild, ProxyProcess, proxy_command};

/// The process started with `-u`; killed (SIGKILL by pid) on drop if it still runs.
pub struct SecondProxy {
    child: LoggedChild,
}

impl SecondProxy {
    /// Starts `doris-fe-proxy -c <old's config> -u` in the old process's folder, with the
    /// log in `<folder>/proxy-upgraded.log`, and waits up to `timeout` until the upgrade
    /// socket `upgrade_sock` exists. Panics with the log if it does not.
    pub fn start(old: &ProxyProcess, upgrade_sock: &Path, timeout: Duration) -> SecondProxy {
        let mut command = proxy_command(old.config_path(), old.dir());
        command.arg("-u");
        let log_path = old.dir().join("proxy-upgraded.log");
        let mut second = SecondProxy {
            child: LoggedChild::spawn(command, log_path, "doris-fe-proxy -u"),
        };
        let waiting = wait_until(timeout, || {
            upgrade_sock.exists() || !second.child.is_running()
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
        self.child.pid()
    }

    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Returns whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_exit(timeout)
    }
}
