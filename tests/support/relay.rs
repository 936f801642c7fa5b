//! A TCP relay on loopback that forwards every connection to one target and delays each
//! chunk of bytes in both directions, to play a slow network or a slow S3 server.
//!
//! The relay runs on its own thread with its own tokio runtime, like [`super::FakeFe`], so
//! blocking tests can use it. The delay can be changed while connections are open.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// Size of the read buffer of one direction of one connection: 16 KiB.
const CHUNK_BYTES: usize = 16 * 1024;

/// A running relay. Dropping it stops the relay and closes every relayed connection.
pub struct DelayRelay {
    addr: SocketAddr,
    target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl DelayRelay {
    /// Listens on `127.0.0.1:<free port>` and relays every accepted connection to `target`,
    /// writing each chunk `delay` after it was read. A connection whose target refuses it
    /// is closed.
    pub fn start(target: SocketAddr, delay: Duration) -> DelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("cannot make the relay listener non-blocking");

        let delay_ms = Arc::new(AtomicU64::new(millis(delay)));
        let connections = Arc::new(AtomicUsize::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let context = Context {
            target,
            delay_ms: Arc::clone(&delay_ms),
            connections: Arc::clone(&connections),
        };
        let thread = std::thread::Builder::new()
            .name(format!("delay-relay-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("cannot build the relay runtime");
                // Dropping the runtime after the accept loop returns cancels every
                // connection task, which closes both sockets of each connection.
                runtime.block_on(accept_loop(listener, shutdown_rx, context));
            })
            .expect("cannot spawn the relay thread");

        DelayRelay {
            addr,
            target,
            delay_ms,
            connections,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Returns the relay's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `http://<relay address>`, for use as an endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the address every connection is relayed to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets the delay of every chunk read from now on, in open connections too.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(millis(delay), Ordering::SeqCst);
    }

    /// Returns the number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and every relayed connection, and waits for the relay thread.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // A send error means the relay thread is gone already.
            let _ = shutdown.send(true);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("relay thread for {} panicked", self.addr);
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone)]
struct Context {
    target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
}

async fn accept_loop(listener: TcpListener, mut shutdown: watch::Receiver<bool>, context: Context) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("cannot hand the listener to tokio");
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(e) => {
                    eprintln!("relay to {}: accept failed: {e}", context.target);
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        context.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(relay_connection(client, context.clone()));
    }
}

/// Relays one connection in both directions until both sides have closed.
async fn relay_connection(client: TcpStream, context: Context) {
    let Ok(server) = TcpStream::connect(context.target).await else {
        // Dropping the client socket closes it, as a refused connection would look.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = copy_delayed(client_read, server_write, Arc::clone(&context.delay_ms));
    let downstream = copy_delayed(server_read, client_write, context.delay_ms);
    tokio::join!(upstream, downstream);
}

/// Copies `from` to `to`, sleeping the current delay before writing each chunk. An end of
/// stream is passed on as a write shutdown, and an error ends this direction.
async fn copy_delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay_ms: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
