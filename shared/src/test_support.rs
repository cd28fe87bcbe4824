//! A private `redis-server` for tests (feature `test-support`).
//!
//! Every test gets its own server on a free loopback port, in its own temp
//! dir, with automatic persistence off (the data survives only the restarts
//! and restores a test asks for: [`RedisServer::restart_keeping_data`],
//! [`RedisServer::snapshot`] and [`RedisServer::restore`]); it is killed when the [`RedisServer`] is
//! dropped, even when the test panics. The machine's own Redis on port 6379
//! is never touched.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port; panics with a clear message when
    /// `redis-server` is not installed.
    pub fn start() -> RedisServer {
        for _ in 0..20 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis-server"),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 20 tries");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it with apt-get)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false; // exited: most likely the port was taken
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
            .is_ok()
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (to test an unreachable Redis). Data is lost.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kills the server and starts it again on the same port: everything not
    /// saved is lost (it comes back empty unless the test saved a snapshot).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Saves the data set now (`SAVE`) and keeps a copy of it, to
    /// [`RedisServer::restore`] later: the way an operator's older backup,
    /// or a replica that had not yet received the last writes, looks.
    pub fn snapshot(&self) -> RedisSnapshot {
        let mut conn = self.connection();
        let _: () = redis::cmd("SAVE")
            .query(&mut conn)
            .expect("SAVE on the private redis-server");
        let copy = tempfile::NamedTempFile::new_in(self.dir.path()).expect("snapshot file");
        std::fs::copy(self.dump_file(), copy.path()).expect("copy dump.rdb");
        RedisSnapshot { file: copy }
    }

    /// Kills the server (`SIGKILL`: every write since `snapshot` is lost,
    /// acknowledged or not) and starts it again on the same port with the
    /// data of `snapshot`.
    pub fn restore(&mut self, snapshot: &RedisSnapshot) {
        self.kill();
        std::fs::copy(snapshot.file.path(), self.dump_file()).expect("restore dump.rdb");
        self.start_again();
    }

    /// Stops the server the way an orderly restart does (`SHUTDOWN SAVE`:
    /// nothing acknowledged is lost); [`RedisServer::start_again`] brings it
    /// back with the same data.
    pub fn stop_keeping_data(&mut self) {
        let mut conn = self.connection();
        // The server exits instead of answering.
        let _ = redis::cmd("SHUTDOWN").arg("SAVE").query::<()>(&mut conn);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again on the same port, with what it saved.
    pub fn start_again(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// An orderly restart that keeps every acknowledged write
    /// ([`RedisServer::stop_keeping_data`]), `down` without a server, then
    /// the server again on the same port with its data.
    pub fn restart_keeping_data(&mut self, down: Duration) {
        self.stop_keeping_data();
        std::thread::sleep(down);
        self.start_again();
    }

    /// `SIGSTOP`: the server hangs (connections stay open, nothing is
    /// answered) until [`RedisServer::thaw`]. Its clock, and so key expiry,
    /// goes on.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// `SIGCONT` after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the redis-server is running");
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .expect("run the `kill` command");
        assert!(status.success(), "kill -s {signal} redis-server: {status}");
    }

    fn dump_file(&self) -> std::path::PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// A synchronous connection (for test set-up and assertions).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to the private redis-server")
    }

    /// An async connection manager (what the binaries use).
    pub async fn connection_manager(&self) -> crate::redis_client::RedisConnection {
        let mut conn =
            crate::redis_client::connection_manager(&self.url()).expect("the server's url");
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .expect("connect to the private redis-server");
        conn
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of a server's data set, taken by [`RedisServer::snapshot`].
pub struct RedisSnapshot {
    file: tempfile::NamedTempFile,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
}
