//! An S3-protocol server on loopback: the `s3s-fs` binary (crate `s3s-fs` 0.14.1) serving a
//! temporary folder.
//!
//! `s3s-fs` maps a bucket to a folder under its root and an object key to a file path
//! under that folder (`<root>/<bucket>/<key>`), so tests can seed objects by writing files.
//! It checks request signatures against the one access key pair it is started with.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::http::{free_port, wait_until};

/// The access key id the server accepts.
pub const S3_ACCESS_KEY: &str = "doris-test-access-key";

/// The secret access key the server accepts.
pub const S3_SECRET_KEY: &str = "doris-test-secret-key";

/// The bucket created at start.
pub const S3_BUCKET: &str = "doris-small-files";

/// How long start and restart wait for the port: 10 seconds.
const S3_START_TIMEOUT: Duration = Duration::from_secs(10);

const INSTALL_HINT: &str =
    "install with: cargo install s3s-fs --version 0.14.1 --features binary --locked";

/// A running `s3s-fs`; killed (SIGKILL by pid) on drop.
pub struct S3Server {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts `s3s-fs` on `127.0.0.1:<free port>` with a fresh root folder that contains the
    /// bucket [`S3_BUCKET`], and waits until it accepts connections. Panics with the install
    /// command if `s3s-fs` is neither on `PATH` nor in `~/.cargo/bin`.
    pub fn start() -> S3Server {
        let binary = find_binary().unwrap_or_else(|| {
            panic!("the S3 test server `s3s-fs` is not on PATH nor in ~/.cargo/bin; {INSTALL_HINT}")
        });
        let dir = tempfile::Builder::new()
            .prefix("doris-fe-proxy-s3-")
            .tempdir()
            .expect("cannot create a temporary folder");
        // A bucket of s3s-fs is a folder under its root.
        std::fs::create_dir_all(dir.path().join("root").join(S3_BUCKET))
            .expect("cannot create the bucket folder");
        let mut server = S3Server {
            binary,
            dir,
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    /// Returns the endpoint URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Returns the bucket name.
    pub fn bucket(&self) -> &str {
        S3_BUCKET
    }

    /// Returns the access key id.
    pub fn access_key(&self) -> &str {
        S3_ACCESS_KEY
    }

    /// Returns the secret access key.
    pub fn secret_key(&self) -> &str {
        S3_SECRET_KEY
    }

    /// Returns the server's root folder; the bucket is the folder `<root>/<bucket>`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Returns the file that contains object `key` of the bucket.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root().join(S3_BUCKET).join(key)
    }

    /// Writes object `key` into the bucket (as a file, which `s3s-fs` serves as is).
    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        let path = self.object_path(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Returns the bytes of object `key`, `None` if it does not exist.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(key)).ok()
    }

    /// Returns everything the server wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Returns whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL by pid) and waits for it; the root folder stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again on the same port and root folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the s3s-fs log file");
        let log_for_stderr = log
            .try_clone()
            .expect("cannot duplicate the log file handle");
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; {INSTALL_HINT}",
                    self.binary.display()
                )
            });
        self.child = Some(child);

        let addr = self.addr();
        let mut exited = false;
        let ready = wait_until(S3_START_TIMEOUT, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                exited = true;
                return true;
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            !exited && ready,
            "s3s-fs did not listen on {addr} within {S3_START_TIMEOUT:?} (exited: {exited}); log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Looks for `s3s-fs` on `PATH`, then in `$CARGO_HOME/bin` and `~/.cargo/bin`.
fn find_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        candidates.push(Path::new(&cargo_home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo").join("bin"));
    }
    candidates
        .into_iter()
        .map(|folder| folder.join("s3s-fs"))
        .find(|path| path.is_file())
}
