//! [`TestCluster`]: everything one test needs, private to that test.
//!
//! One private `redis-server`, one temp dir (password file, process logs),
//! `N` api replicas and `M` workers on that Redis, all with the same
//! [`ServiceOptions`]. Tests never share a Redis or a port, so the suite runs
//! in parallel. Dropping the cluster kills the processes first and the Redis
//! last (field order), also when the test panics; a panicking test prints
//! where the logs are so they can be read before the temp dir goes away
//! (set `MIGRATION_TESTS_KEEP_LOGS=1` to keep it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use migration_shared::keys::Keys;
use migration_shared::test_support::RedisServer;

use crate::client::{ApiClient, Auth};
use crate::options::ServiceOptions;
use crate::process::{ApiProcess, WorkerProcess};

/// The key prefix the harness uses unless a test sets another one.
pub const DEFAULT_TEST_PREFIX: &str = "mig";

/// Configures a [`TestCluster`] before it starts.
#[must_use]
pub struct TestClusterBuilder {
    apis: usize,
    workers: usize,
    password: Option<Vec<u8>>,
    password_file: Option<PathBuf>,
    migrations: Option<String>,
    configure: Vec<Box<dyn FnOnce(ServiceOptions) -> ServiceOptions>>,
}

impl TestClusterBuilder {
    /// Number of api replicas (default 1).
    pub fn apis(mut self, apis: usize) -> Self {
        self.apis = apis;
        self
    }

    /// Number of workers (default 0).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The content of the password file (default: a random password).
    /// Replaces an earlier [`TestClusterBuilder::password_file`].
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.password = Some(password.as_ref().to_vec());
        self.password_file = None;
        self
    }

    /// Uses an existing password file (e.g. the example
    /// `deploy/internal_auth_password`) as `INTERNAL_AUTH_PASSWORD_FILE`
    /// instead of writing one; the cluster's clients send its exact content,
    /// read at start. Replaces an earlier [`TestClusterBuilder::password`].
    pub fn password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.password_file = Some(path.into());
        self.password = None;
        self
    }

    /// Writes `json` to `migrations.json` in the cluster's temp dir and sets
    /// `MIGRATIONS_FILE` to it (SPEC section 6).
    pub fn migrations(mut self, json: impl Into<String>) -> Self {
        self.migrations = Some(json.into());
        self
    }

    /// Changes the options of every process (e.g. `|o| o.migration_wait_ms(0)`).
    /// Applied after the harness's defaults, so it can override or unset
    /// any of them.
    pub fn configure(
        mut self,
        change: impl FnOnce(ServiceOptions) -> ServiceOptions + 'static,
    ) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    /// Starts Redis, the apis (each answering `/health`) and the workers.
    pub fn start(self) -> TestCluster {
        let redis = RedisServer::start();
        let dir = tempfile::Builder::new()
            .prefix("migration-tests-")
            .tempdir()
            .expect("temp dir for the test cluster");
        let (password, password_file) = match self.password_file {
            Some(path) => {
                let password = std::fs::read(&path).unwrap_or_else(|err| {
                    panic!("cannot read the password file {}: {err}", path.display())
                });
                (password, path)
            }
            None => {
                let password = self
                    .password
                    .unwrap_or_else(|| random_password().into_bytes());
                let path = dir.path().join("internal_auth_password");
                std::fs::write(&path, &password).expect("write the password file");
                (password, path)
            }
        };
        let mut options = ServiceOptions::new(redis.url())
            .key_prefix(DEFAULT_TEST_PREFIX)
            .password_file(&password_file);
        if let Some(json) = &self.migrations {
            let path = dir.path().join("migrations.json");
            std::fs::write(&path, json).expect("write the migrations file");
            options = options.migrations_file(path);
        }
        for change in self.configure {
            options = change(options);
        }
        let mut cluster = TestCluster {
            apis: Vec::new(),
            workers: Vec::new(),
            options,
            password,
            dir,
            redis,
        };
        for _ in 0..self.apis {
            cluster.start_api();
        }
        for _ in 0..self.workers {
            cluster.start_worker();
        }
        cluster
    }
}

/// A private Redis with api replicas and workers on it. Field order is drop
/// order: processes die before their Redis and temp dir.
pub struct TestCluster {
    /// The api replicas, in start order.
    pub apis: Vec<ApiProcess>,
    /// The workers, in start order.
    pub workers: Vec<WorkerProcess>,
    options: ServiceOptions,
    password: Vec<u8>,
    dir: tempfile::TempDir,
    /// The private Redis (stop/restart it to test an unreachable Redis).
    pub redis: RedisServer,
}

impl TestCluster {
    /// A cluster to configure: one api, no workers, a random password.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            apis: 1,
            workers: 0,
            password: None,
            password_file: None,
            migrations: None,
            configure: Vec::new(),
        }
    }

    /// The common case: private Redis + one api, no workers.
    pub fn spawn_app() -> TestCluster {
        TestCluster::builder().start()
    }

    /// The options every process of this cluster is started with.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// The temp dir of this cluster (password file, logs; put a
    /// `MIGRATIONS_FILE` here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to a file in the cluster's temp dir; returns its path.
    pub fn write_file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write a file in the cluster's temp dir");
        path
    }

    /// The content of the password file.
    pub fn password(&self) -> &[u8] {
        &self.password
    }

    /// Starts one more api replica with the cluster's options.
    pub fn start_api(&mut self) -> &mut ApiProcess {
        let options = self.options.clone();
        self.start_api_with(options)
    }

    /// Starts one more api replica with other options (e.g.
    /// `cluster.options().clone().no_password()`).
    pub fn start_api_with(&mut self, options: ServiceOptions) -> &mut ApiProcess {
        let api = ApiProcess::start(options, self.dir.path());
        self.apis.push(api);
        self.apis.last_mut().expect("just pushed")
    }

    /// Starts one more worker with the cluster's options.
    pub fn start_worker(&mut self) -> &mut WorkerProcess {
        let options = self.options.clone();
        self.start_worker_with(options)
    }

    /// Starts one more worker with other options.
    pub fn start_worker_with(&mut self, options: ServiceOptions) -> &mut WorkerProcess {
        let worker = WorkerProcess::start(options, self.dir.path());
        self.workers.push(worker);
        self.workers.last_mut().expect("just pushed")
    }

    /// The first api.
    pub fn api(&self) -> &ApiProcess {
        self.apis.first().expect("the cluster has an api")
    }

    /// A client for the first api, with the cluster's password.
    pub fn client(&self) -> ApiClient {
        self.client_for(0)
    }

    /// A client for api replica `index`, with the cluster's password.
    pub fn client_for(&self, index: usize) -> ApiClient {
        ApiClient::new(
            self.apis[index].base_url(),
            Auth::Password(self.password.clone()),
        )
    }

    /// The key names under this cluster's prefix.
    pub fn keys(&self) -> Keys {
        Keys::new(
            self.options
                .get("REDIS_KEY_PREFIX")
                .unwrap_or(DEFAULT_TEST_PREFIX),
        )
    }

    /// A synchronous connection to the private Redis.
    pub fn redis_connection(&self) -> redis::Connection {
        self.redis.connection()
    }

    /// An async connection to the private Redis.
    pub async fn redis_async(&self) -> migration_shared::redis_client::RedisConnection {
        self.redis.connection_manager().await
    }

    /// The pid of the private `redis-server` (from `INFO server`).
    pub fn redis_pid(&self) -> u32 {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.redis_connection())
            .expect("INFO server");
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("no process_id in INFO server: {info}"))
    }

    /// Freezes the private Redis (SIGSTOP): connections stay open but
    /// nothing answers, as with a network partition or a stalled server.
    /// Dropping the cluster still kills it.
    pub fn pause_redis(&self) -> u32 {
        let pid = self.redis_pid();
        signal_pid(pid, "STOP");
        pid
    }

    /// Resumes a Redis frozen by [`TestCluster::pause_redis`] (its pid).
    pub fn resume_redis(&self, pid: u32) {
        signal_pid(pid, "CONT");
    }

    /// Waits until the first api's health route counts `workers` live
    /// workers; panics with the workers' log tails after `timeout`.
    pub async fn wait_for_workers(&self, workers: u64, timeout: Duration) {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = client.health().await;
            if body["workers"].as_u64() == Some(workers) {
                return;
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .workers
                    .iter()
                    .map(|worker| worker.log_tail())
                    .collect();
                panic!(
                    "health never reported {workers} workers within {timeout:?}; last: {body}\n{}",
                    tails.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tails of every process log (for a failure message).
    pub fn log_tails(&self) -> String {
        let apis = self.apis.iter().map(|api| api.log_tail());
        let workers = self.workers.iter().map(|worker| worker.log_tail());
        apis.chain(workers).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; process logs:\n{}", self.log_tails());
            if std::env::var_os("MIGRATION_TESTS_KEEP_LOGS").is_some() {
                let path =
                    std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
                eprintln!("logs kept in {}", path.display());
            }
        }
    }
}

fn signal_pid(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run the `kill` command");
    assert!(status.success(), "kill -s {signal} {pid} failed: {status}");
}

/// A password nobody guesses; not cryptographic, only distinct per test.
fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    format!("test-password-{:016x}", hasher.finish())
}
