//! [`RedisProxy`]: a TCP relay between one api and the private Redis that
//! can act at an exact moment of the traffic.
//!
//! A fault test often needs "Redis stops *after* the commit was sent" or
//! "this commit is held while another replica asks": timing a `SIGSTOP`
//! from outside cannot hit that window reliably. The proxy watches the
//! bytes the api sends; a trap armed with [`RedisProxy::trap`] fires once,
//! when a chunk contains the pattern (e.g. the commit script's SHA-1 in its
//! `EVALSHA`), and runs its action *before* forwarding that chunk: the
//! action can freeze Redis (the commit then waits in Redis's socket, sent
//! but unanswered) or hold the chunk until the test releases it. A trap
//! armed with [`RedisProxy::hold_replies`] instead forwards the chunk at
//! once and holds what Redis answers on that connection until its action
//! has completed: the command has run, but the api has not seen its answer
//! (a read that is "in flight" while the test changes what it read).
//!
//! The relay runs on a thread of its own with its own runtime, so it keeps
//! relaying while a test blocks (`ApiProcess::start` polls health
//! synchronously). Only bytes are relayed: RESP is not parsed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a trap does when it fires, before the matching chunk is forwarded.
pub type TrapAction = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Trap {
    pattern: Vec<u8>,
    action: TrapAction,
    /// Forward the chunk at once and hold the replies instead.
    hold_replies: bool,
}

/// Held by the client -> server side while a [`RedisProxy::hold_replies`]
/// trap's action runs; the server -> client side takes it before every
/// chunk it forwards.
type ReplyGate = Arc<tokio::sync::Mutex<()>>;

/// A running relay to `127.0.0.1:<upstream port>`; stops when dropped.
pub struct RedisProxy {
    port: u16,
    trap: Arc<Mutex<Option<Trap>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RedisProxy {
    /// Starts relaying connections to `upstream_port` on loopback.
    pub fn start(upstream_port: u16) -> RedisProxy {
        let trap: Arc<Mutex<Option<Trap>>> = Arc::new(Mutex::new(None));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = trap.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
                port_tx
                    .send(listener.local_addr().expect("proxy addr").port())
                    .expect("send proxy port");
                tokio::select! {
                    _ = stopped => {}
                    _ = accept_loop(listener, upstream_port, shared) => {}
                }
            });
            // Dropping the runtime closes every relayed connection.
        });
        let port = port_rx.recv().expect("the proxy reports its port");
        RedisProxy {
            port,
            trap,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:<proxy port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Arms a one-shot trap: the next chunk a client sends that contains
    /// `pattern` is forwarded only after `action` has completed.
    pub fn trap<F>(&self, pattern: impl Into<Vec<u8>>, action: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.arm(pattern.into(), Box::new(move || Box::pin(action())), false);
    }

    /// Arms a one-shot trap: the next chunk a client sends that contains
    /// `pattern` is forwarded at once, and the replies on that connection
    /// (its answer and any later ones) are held until `action` has
    /// completed.
    pub fn hold_replies<F>(
        &self,
        pattern: impl Into<Vec<u8>>,
        action: impl FnOnce() -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        self.arm(pattern.into(), Box::new(move || Box::pin(action())), true);
    }

    fn arm(&self, pattern: Vec<u8>, action: TrapAction, hold_replies: bool) {
        *self.trap.lock().expect("trap lock") = Some(Trap {
            pattern,
            action,
            hold_replies,
        });
    }

    /// True once the armed trap has fired (or when none is armed).
    pub fn trap_fired(&self) -> bool {
        self.trap.lock().expect("trap lock").is_none()
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream_port: u16, trap: Arc<Mutex<Option<Trap>>>) {
    while let Ok((client, _)) = listener.accept().await {
        let trap = trap.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let gate = ReplyGate::default();
            tokio::select! {
                _ = relay_watching(client_read, server_write, trap, gate.clone()) => {}
                _ = relay(server_read, client_write, gate) => {}
            }
        });
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: ReplyGate,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let _open = gate.lock().await;
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Client -> server, looking for the trap's pattern (also across chunk
/// boundaries: the tail of the previous chunk is kept).
async fn relay_watching(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    trap: Arc<Mutex<Option<Trap>>>,
    gate: ReplyGate,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        let fired = {
            let mut slot = trap.lock().expect("trap lock");
            let matches = slot.as_ref().is_some_and(|armed| {
                let mut window = tail.clone();
                window.extend_from_slice(chunk);
                window
                    .windows(armed.pattern.len())
                    .any(|candidate| candidate == armed.pattern.as_slice())
            });
            if matches {
                slot.take()
            } else {
                None
            }
        };
        match fired {
            Some(fired) if fired.hold_replies => {
                // Closed before the chunk goes, so that its answer is held.
                let closed = gate.clone().lock_owned().await;
                tokio::spawn(async move {
                    (fired.action)().await;
                    drop(closed);
                });
            }
            Some(fired) => (fired.action)().await,
            None => {}
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        let keep = chunk.len().min(256);
        tail = chunk[chunk.len() - keep..].to_vec();
    }
}
