//! A fault-injecting TCP proxy on loopback, for tests and the demo.
//!
//! It forwards connections to one upstream address and can, on command:
//! add latency in each direction (keeping byte order and pipelining), refuse
//! new connections, cut every open connection, and cut a connection right
//! after PostgreSQL reports a COMMIT, so the client never sees the reply
//! although the server committed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// PostgreSQL's CommandComplete message for COMMIT: tag 'C', length 11,
/// "COMMIT\0".
const COMMIT_COMPLETE: &[u8] = b"C\x00\x00\x00\x0bCOMMIT\x00";

/// How long connecting to the upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// One-way delay added to every chunk, in microseconds.
    latency_us: AtomicU64,
    /// New connections are closed at once while set.
    refusing: AtomicBool,
    /// The next COMMIT reply from the server is swallowed and both sides
    /// are cut, while set.
    cut_after_commit: AtomicBool,
    /// How many COMMIT replies were swallowed.
    commits_cut: AtomicU64,
    /// How many connections were accepted and forwarded.
    accepted: AtomicU64,
    connections: Mutex<Vec<AbortHandle>>,
}

/// A running proxy; dropping it stops it and cuts its connections.
pub struct FaultProxy {
    address: SocketAddr,
    state: Arc<State>,
    listener: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), upstream).await
    }

    /// Starts a proxy on `listen` in front of `upstream`.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let listener = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if accept_state.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                let connection_state = accept_state.clone();
                let task = tokio::spawn(async move {
                    if let Err(error) = forward(client, upstream, connection_state).await {
                        tracing::debug!(%error, "proxied connection ended");
                    }
                });
                let mut connections = accept_state.connections.lock().expect("proxy lock");
                connections.retain(|c| !c.is_finished());
                connections.push(task.abort_handle());
            }
        });
        Ok(FaultProxy { address, state, listener })
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Adds `latency` to every chunk in each direction (a round trip gains
    /// twice this).
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_us.store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Closes new connections at once and cuts the open ones: the upstream
    /// looks unreachable.
    pub fn go_down(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        self.cut_all();
    }

    /// Forwards new connections again.
    pub fn come_up(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// Whether new connections are refused.
    pub fn is_down(&self) -> bool {
        self.state.refusing.load(Ordering::SeqCst)
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        for connection in self.state.connections.lock().expect("proxy lock").drain(..) {
            connection.abort();
        }
    }

    /// Arms a cut right after the next COMMIT: the server's reply is dropped
    /// and the connection closed, so the client cannot know it committed.
    pub fn cut_after_next_commit(&self) {
        self.state.cut_after_commit.store(true, Ordering::SeqCst);
    }

    /// How many COMMIT replies were swallowed so far.
    pub fn commits_cut(&self) -> u64 {
        self.state.commits_cut.load(Ordering::SeqCst)
    }

    /// How many connections were forwarded so far.
    pub fn connections_accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.cut_all();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, state: Arc<State>) -> std::io::Result<()> {
    let server = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream connect timed out"))??;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream_task = pump(client_read, server_write, state.clone(), false);
    let downstream_task = pump(server_read, client_write, state, true);
    tokio::select! {
        r = upstream_task => r,
        r = downstream_task => r,
    }
}

/// Copies one direction, delaying each chunk by the configured latency
/// without holding back the chunks behind it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    from_server: bool,
) -> std::io::Result<()> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer_state = state.clone();
    let writer = async move {
        while let Some((arrived, bytes)) = receiver.recv().await {
            let latency = Duration::from_micros(writer_state.latency_us.load(Ordering::SeqCst));
            tokio::time::sleep_until(arrived + latency).await;
            if from_server && writer_state.cut_after_commit.load(Ordering::SeqCst) && contains(&bytes, COMMIT_COMPLETE)
            {
                writer_state.cut_after_commit.store(false, Ordering::SeqCst);
                writer_state.commits_cut.fetch_add(1, Ordering::SeqCst);
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "cut after COMMIT"));
            }
            to.write_all(&bytes).await?;
        }
        to.shutdown().await
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if sender.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let (read_result, write_result) = tokio::join!(reader, writer);
    read_result.and(write_result)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn proxy_forwards_and_adds_latency() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_latency(Duration::from_millis(50));
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let started = std::time::Instant::now();
        socket.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        socket.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");
        assert!(started.elapsed() >= Duration::from_millis(100), "round trip took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn proxy_refuses_while_down() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.go_down();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let mut buffer = [0u8; 4];
        let _ = socket.write_all(b"ping").await;
        let read = socket.read(&mut buffer).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        proxy.come_up();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        socket.write_all(b"pong").await.unwrap();
        socket.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"pong");
    }

    #[tokio::test]
    async fn proxy_swallows_commit_reply_once() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.cut_after_next_commit();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        socket.write_all(COMMIT_COMPLETE).await.unwrap();
        let mut buffer = [0u8; 16];
        let read = socket.read(&mut buffer).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(proxy.commits_cut(), 1);
    }
}
