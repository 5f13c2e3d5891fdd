//! A TCP proxy on loopback that breaks the network between a client and
//! its broker on command: cut every connection, refuse new ones, stall the
//! bytes, add latency, or drop the connections in the middle of a frame.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let proxy = mq_testkit::FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await?;
//! let url = format!("redis://{}/0", proxy.addr());
//! // ... connect a client to `url`, then:
//! proxy.set_down(true); // the broker "goes away": connections cut, new ones refused
//! proxy.set_down(false); // and comes back
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Bytes moved per read; small enough that a cut lands mid-frame.
const CHUNK: usize = 16 * 1024;

#[derive(Default)]
struct State {
    /// Bumped by every cut: a connection opened in an older generation ends.
    generation: AtomicU64,
    down: AtomicBool,
    stalled: AtomicBool,
    latency_micros: AtomicU64,
    /// Bytes still allowed through before every connection is cut; negative
    /// when unlimited.
    budget: AtomicI64,
    open: AtomicUsize,
    accepted: AtomicUsize,
    changed: Notify,
}

impl State {
    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// A running fault proxy. Dropping it stops it and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            budget: AtomicI64::new(-1),
            ..State::default()
        });
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (state, connections) = (state.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    state.accepted.fetch_add(1, Ordering::AcqRel);
                    if state.down.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(serve(client, upstream, state.clone()));
                    let mut connections = connections.lock();
                    connections.retain(|t| !t.is_finished());
                    connections.push(task);
                }
            })
        };
        Ok(FaultProxy {
            addr,
            state,
            acceptor,
            connections,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection now; new ones are accepted.
    pub fn cut(&self) {
        self.state.cut();
    }

    /// While down, open connections are cut and new ones closed at once,
    /// as when the broker's host is unreachable and its port closed.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Release);
        if down {
            self.state.cut();
        }
    }

    /// While stalled, connections stay open but no byte moves, as on a
    /// network that silently drops packets.
    pub fn set_stalled(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::Release);
        self.state.changed.notify_waiters();
    }

    /// Delays every chunk of bytes by `latency`, both ways.
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_micros.store(micros, Ordering::Release);
    }

    /// Lets `bytes` more bytes through (both ways together), then cuts
    /// every connection, most likely in the middle of a frame.
    pub fn cut_after(&self, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.state.budget.store(bytes, Ordering::Release);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::Acquire)
    }

    /// Connections accepted since the start, refused ones included.
    pub fn accepted_connections(&self) -> usize {
        self.state.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for task in self.connections.lock().drain(..) {
            task.abort();
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let generation = state.generation.load(Ordering::Acquire);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    state.open.fetch_add(1, Ordering::AcqRel);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, &state) => {}
        _ = pump(server_read, client_write, &state) => {}
        _ = cut_since(&state, generation) => {}
    }
    state.open.fetch_sub(1, Ordering::AcqRel);
}

/// Resolves once a cut happened after `generation`.
async fn cut_since(state: &State, generation: u64) {
    loop {
        let changed = state.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if state.generation.load(Ordering::Acquire) != generation {
            return;
        }
        changed.await;
    }
}

/// Copies one direction until either side closes, obeying the faults.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while state.stalled.load(Ordering::Acquire) {
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !state.stalled.load(Ordering::Acquire) {
                break;
            }
            changed.await;
        }
        let latency = state.latency_micros.load(Ordering::Acquire);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let allowed = take_budget(state, n);
        if to.write_all(&buffer[..allowed]).await.is_err() {
            return;
        }
        if allowed < n {
            state.cut();
            return;
        }
    }
}

/// How many of `n` bytes the budget lets through.
fn take_budget(state: &State, n: usize) -> usize {
    let wanted = i64::try_from(n).unwrap_or(i64::MAX);
    let mut current = state.budget.load(Ordering::Acquire);
    loop {
        if current < 0 {
            return n;
        }
        let granted = current.min(wanted);
        match state.budget.compare_exchange(
            current,
            if granted == current && granted < wanted {
                -1
            } else {
                current - granted
            },
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return usize::try_from(granted).unwrap_or(0),
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut back = vec![0u8; text.len()];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut back))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(back)
    }

    #[tokio::test]
    async fn forwards_cuts_refuses_and_stalls() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");

        proxy.cut();
        assert!(
            round_trip(&mut a, b"again").await.is_err(),
            "a cut connection still works"
        );

        proxy.set_down(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused, b"x").await.is_err());
        proxy.set_down(false);

        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_stalled(true);
        assert!(
            round_trip(&mut b, b"stuck").await.is_err(),
            "bytes moved while stalled"
        );
        proxy.set_stalled(false);
        let mut rest = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), b.read_exact(&mut rest))
            .await
            .expect("the stalled bytes arrive once it flows again")
            .unwrap();
        assert_eq!(&rest, b"stuck");
    }

    #[tokio::test]
    async fn cuts_in_the_middle_of_a_frame() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.cut_after(3);
        a.write_all(b"abcdef").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), a.read_to_end(&mut got)).await;
        assert!(got.len() < 6, "the whole frame went through: {got:?}");
        // The budget is used up and lifted: new connections work again.
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut b, b"ok").await.unwrap(), b"ok");
    }
}
