//! One real `migration-api` or `migration-worker` process.
//!
//! Invariants:
//! - a spawned process is killed (SIGKILL) and reaped when its handle is
//!   dropped, also when the test panics, so no test leaves a process behind;
//! - stdout and stderr go to one log file in the cluster's temp dir; every
//!   failure the harness reports (start timeout, early exit, no exit after
//!   SIGTERM) prints the log's tail;
//! - signals are sent with the `kill` command (no extra crate) and only while
//!   the child is not yet reaped, so a recycled pid is never signalled.
//!
//! [`ApiProcess::start`] returns once `GET /health` answers (`200` or `503`:
//! the process is serving, whether or not Redis is up). A worker has no port;
//! readiness of workers is observed through the api's health route (see
//! [`crate::TestCluster::wait_for_workers`]).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use migration_shared::test_support::free_port;

use crate::binaries::{binary_path, Binary};
use crate::options::ServiceOptions;

/// How long a binary may take to answer `/health` after spawning. Generous:
/// the suite runs in parallel on small CI machines.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the log printed when something goes wrong.
const LOG_TAIL_LINES: usize = 40;

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A spawned binary: signals, exit status, log. Killed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl ServiceProcess {
    /// Spawns `binary` with `options`, logging to a new file in `log_dir`.
    pub fn spawn(binary: Binary, options: &ServiceOptions, log_dir: &Path) -> ServiceProcess {
        let mut command = Command::new(binary_path(binary));
        options.apply(&mut command);
        ServiceProcess::spawn_command(binary.name(), command, log_dir)
    }

    /// Spawns any prepared command the same way (the harness's self-test
    /// uses it on a plain `sleep`).
    pub fn spawn_command(name: &str, mut command: Command, log_dir: &Path) -> ServiceProcess {
        let number = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir.join(format!("{name}-{number}.log"));
        let log = File::create(&log_path).expect("create the process log file");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot spawn {name}: {err}"));
        ServiceProcess {
            name: name.to_string(),
            child,
            log_path,
            exit: None,
        }
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "--- last {} lines of {} ({}) ---\n{}\n--- end of log ---",
            lines.len() - start,
            self.name,
            self.log_path.display(),
            lines[start..].join("\n")
        )
    }

    /// The exit status if the process has exited (without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on a child");
        }
        self.exit
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, `CONT`, `KILL`) with
    /// the `kill` command; does nothing once the process has been reaped.
    pub fn signal(&mut self, signal: &str) {
        if self.exit_status().is_some() {
            return;
        }
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run the `kill` command");
        assert!(
            status.success() || self.exit_status().is_some(),
            "kill -s {signal} {} failed: {status}",
            self.pid()
        );
    }

    /// SIGKILL (a crash: no clean-up runs) and reap; returns the status.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_for_exit(SHUTDOWN_TIMEOUT)
            .unwrap_or_else(|| panic!("{} did not die on SIGKILL", self.name))
    }

    /// SIGTERM, then waits for the exit (panics with the log tail when the
    /// process is still running after [`SHUTDOWN_TIMEOUT`]).
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_after_signal("SIGTERM")
    }

    /// SIGINT, then waits for the exit like [`ServiceProcess::sigterm`].
    pub fn sigint(&mut self) -> ExitStatus {
        self.signal("INT");
        self.wait_after_signal("SIGINT")
    }

    /// SIGSTOP: the process freezes (a paused or partitioned node).
    pub fn sigstop(&mut self) {
        self.signal("STOP");
    }

    /// SIGCONT: a stopped process resumes.
    pub fn sigcont(&mut self) {
        self.signal("CONT");
    }

    fn wait_after_signal(&mut self, signal: &str) -> ExitStatus {
        match self.wait_for_exit(SHUTDOWN_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "{} still running {:?} after {signal}\n{}",
                self.name,
                SHUTDOWN_TIMEOUT,
                self.log_tail()
            ),
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // SIGKILL works on a stopped process too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `migration-api` on a free loopback port.
#[derive(Debug)]
pub struct ApiProcess {
    process: ServiceProcess,
    addr: SocketAddr,
    options: ServiceOptions,
    log_dir: PathBuf,
}

impl ApiProcess {
    /// Starts the api and waits until `GET /health` answers. Unless the
    /// options set `API_ADDR`, it listens on a free port of 127.0.0.1.
    /// Panics with the log tail when the api exits or does not answer in
    /// time.
    pub fn start(options: ServiceOptions, log_dir: &Path) -> ApiProcess {
        // A free port can be taken between our check and the api's bind; try
        // another one then.
        let chosen_by_harness = options.get("API_ADDR").is_none();
        let attempts = if chosen_by_harness { 3 } else { 1 };
        let mut last_error = String::new();
        for _ in 0..attempts {
            let options = if chosen_by_harness {
                options
                    .clone()
                    .api_addr(format!("127.0.0.1:{}", free_port()))
            } else {
                options.clone()
            };
            match ApiProcess::try_start(options, log_dir) {
                Ok(api) => return api,
                Err(error) => last_error = error,
            }
        }
        panic!("{last_error}");
    }

    /// One attempt of [`ApiProcess::start`] with `API_ADDR` as given.
    pub fn try_start(options: ServiceOptions, log_dir: &Path) -> Result<ApiProcess, String> {
        let addr: SocketAddr = options
            .get("API_ADDR")
            .expect("API_ADDR is set")
            .parse()
            .expect("API_ADDR is a socket address");
        let mut process = ServiceProcess::spawn(Binary::Api, &options, log_dir);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = process.exit_status() {
                return Err(format!(
                    "migration-api exited during start with {status}\n{}",
                    process.log_tail()
                ));
            }
            if let Some(200 | 503) = health_status(addr) {
                return Ok(ApiProcess {
                    process,
                    addr,
                    options,
                    log_dir: log_dir.to_path_buf(),
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "migration-api did not answer GET /health on {addr} within {START_TIMEOUT:?}\n{}",
                    process.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The options it was started with (including the chosen `API_ADDR`).
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// Kills the process (SIGKILL) and starts it again with the same
    /// options, on the same address.
    pub fn restart(&mut self) {
        self.process.kill9();
        *self = ApiProcess::start(self.options.clone(), &self.log_dir.clone());
    }
}

impl Deref for ApiProcess {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
}

impl DerefMut for ApiProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// A running `migration-worker`. It has no port; it is "ready" once the api's
/// health route counts it.
#[derive(Debug)]
pub struct WorkerProcess {
    process: ServiceProcess,
    options: ServiceOptions,
    log_dir: PathBuf,
}

impl WorkerProcess {
    /// Spawns a worker (does not wait for it to register).
    pub fn start(options: ServiceOptions, log_dir: &Path) -> WorkerProcess {
        WorkerProcess {
            process: ServiceProcess::spawn(Binary::Worker, &options, log_dir),
            options,
            log_dir: log_dir.to_path_buf(),
        }
    }

    /// The options it was started with.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// Kills the process (SIGKILL) and starts a new one with the same
    /// options (a new process: a new worker identity).
    pub fn restart(&mut self) {
        self.process.kill9();
        *self = WorkerProcess::start(self.options.clone(), &self.log_dir.clone());
    }
}

impl Deref for WorkerProcess {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
}

impl DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// Runs `binary` with `options` and `args` until it exits (for start-up
/// errors and `--help`); kills it and panics after `timeout`.
pub fn run_to_exit(
    binary: Binary,
    options: &ServiceOptions,
    args: &[&str],
    timeout: Duration,
) -> Output {
    let mut command = Command::new(binary_path(binary));
    options.apply(&mut command);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot spawn {}: {err}", binary.name()));
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "{} {args:?} still running after {timeout:?}; stderr:\n{}",
                binary.name(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect output")
}

/// The status code of `GET /health`, or `None` when nothing answers. A
/// minimal blocking HTTP/1.1 request, so that starting a process works in
/// sync and async tests alike without a runtime.
pub fn health_status(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    // "HTTP/1.1 200 OK"
    let text = std::str::from_utf8(&head[..read]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}
