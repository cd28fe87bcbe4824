//! The real binaries on any `REDIS_URL` (a [`crate::topology`] deployment),
//! and the route flow of SPEC 8 that each deployment must pass: write,
//! `migrate`, `finalize`, read.
//!
//! [`crate::TestCluster`] owns its single private `redis-server`; a
//! Sentinel or Cluster topology is bigger than one test's datastore (several
//! prefixes share it), so [`Deployment`] takes the URL and a prefix and
//! owns only the processes. The flow's expected result is computed from the
//! seed itself ([`expected_models`]), so a deployment that loses or doubles
//! an event fails, whatever another run did.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::client::{ApiClient, Auth};
pub use crate::migration_jobs::{seed, MIGRATIONS};
use crate::options::ServiceOptions;
use crate::process::{ApiProcess, WorkerProcess};

/// The target migration index of [`MIGRATIONS`].
pub const FLOW_TARGET_MI: u64 = 4;

/// `MIGRATION_WAIT_MS` of a [`Deployment`] unless a test sets another: long
/// enough that a command of the route flow answers with its final result,
/// which the api learns through `XREAD BLOCK` on a [`BlockingConnection`]
/// (so the flow exercises blocking reads on every deployment).
///
/// [`BlockingConnection`]: migration_shared::redis_client::BlockingConnection
pub const COMMAND_WAIT_MS: u64 = 10_000;

/// Api replicas and workers of one datastore (one `REDIS_KEY_PREFIX`) on a
/// given Redis deployment. Field order is drop order: processes first.
pub struct Deployment {
    /// The api replicas.
    pub apis: Vec<ApiProcess>,
    /// The workers.
    pub workers: Vec<WorkerProcess>,
    options: ServiceOptions,
    password: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Deployment {
    /// One api and `workers` workers on `redis_url` under `prefix`, with
    /// [`MIGRATIONS`]; `configure` changes the options of every
    /// process (lease, throttle, `SSL_CERT_FILE`...).
    pub fn start(
        redis_url: &str,
        prefix: &str,
        workers: usize,
        configure: impl FnOnce(ServiceOptions) -> ServiceOptions,
    ) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix(&format!("deployment-{prefix}-"))
            .tempdir()
            .expect("temp dir");
        let password = format!("password-{prefix}").into_bytes();
        let password_file = dir.path().join("internal_auth_password");
        std::fs::write(&password_file, &password).expect("write the password file");
        let migrations_file = dir.path().join("migrations.json");
        std::fs::write(&migrations_file, MIGRATIONS).expect("write the migrations file");
        let options = configure(
            ServiceOptions::new(redis_url)
                .key_prefix(prefix)
                .password_file(&password_file)
                .migrations_file(&migrations_file)
                .migration_wait_ms(COMMAND_WAIT_MS),
        );
        let mut deployment = Deployment {
            apis: Vec::new(),
            workers: Vec::new(),
            options,
            password,
            dir,
        };
        deployment.start_api();
        for _ in 0..workers {
            deployment.start_worker();
        }
        deployment
    }

    /// Starts one more api replica.
    pub fn start_api(&mut self) -> &mut ApiProcess {
        let api = ApiProcess::start(self.options.clone(), self.dir.path());
        self.apis.push(api);
        self.apis.last_mut().expect("just pushed")
    }

    /// Starts one more worker.
    pub fn start_worker(&mut self) -> &mut WorkerProcess {
        let worker = WorkerProcess::start(self.options.clone(), self.dir.path());
        self.workers.push(worker);
        self.workers.last_mut().expect("just pushed")
    }

    /// The options of every process.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// The dir holding the password file and the process logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for the first api.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(
            self.apis[0].base_url(),
            Auth::Password(self.password.clone()),
        )
    }

    /// Waits until health counts `workers` live workers (and Redis is ok).
    pub async fn wait_for_workers(&self, workers: u64, timeout: Duration) {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = client.health().await;
            if status == 200 && body["workers"].as_u64() == Some(workers) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health never reported {workers} workers within {timeout:?}; last: {status} {body}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every process's log tail (for a failure message).
    pub fn log_tails(&self) -> String {
        let apis = self.apis.iter().map(|api| api.log_tail());
        let workers = self.workers.iter().map(|worker| worker.log_tail());
        apis.chain(workers).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; process logs:\n{}", self.log_tails());
        }
    }
}

/// Whether position `p` of [`seed`] updates `motion/{p-1}` (every third
/// from 6 on) instead of creating `motion/p`.
fn updates_previous(p: u64) -> bool {
    p % 3 == 0 && p > 3
}

/// `get_all motion` after [`seed`] of `positions`, before (`migrated:
/// false`) or after a finalized migration to [`FLOW_TARGET_MI`].
pub fn expected_models(positions: u64, migrated: bool) -> Value {
    let mut models = Map::new();
    for p in (1..=positions).filter(|p| !updates_previous(*p)) {
        let updated_at = Some(p + 1).filter(|next| *next <= positions && updates_previous(*next));
        let title = match updated_at {
            Some(next) => format!("T{next}"),
            None => format!("M{p}"),
        };
        let mut model = Map::new();
        if migrated {
            model.insert("name".into(), json!(title));
            model.insert("weight".into(), json!(0));
        } else {
            model.insert("title".into(), json!(title));
            if updated_at.is_none() {
                model.insert("legacy".into(), json!(p));
            }
        }
        model.insert("meta_position".into(), json!(updated_at.unwrap_or(p)));
        models.insert(p.to_string(), Value::Object(model));
    }
    Value::Object(models)
}

/// The live models of `motion`.
pub async fn motions(client: &ApiClient) -> Value {
    let (status, body) = client.get_all("motion").await;
    assert_eq!(status, 200, "get_all failed: {body}");
    body["models"].clone()
}

/// Posts `cmd` and polls `progress` until it has finished; returns the
/// final answer. Panics on a request error or after `timeout`.
pub async fn run_command(client: &ApiClient, cmd: &str, timeout: Duration) -> Value {
    let (status, body) = client.post_migration(cmd).await;
    assert_eq!(status, 200, "{cmd} was not accepted: {body}");
    if body["status"] != "migration_running" {
        return body;
    }
    client.wait_until_finished(timeout).await
}

/// Posts `cmd` and expects its final result in the answer itself: the api
/// waited for the job (up to [`COMMAND_WAIT_MS`]) with a blocking read.
async fn answer_after_waiting(client: &ApiClient, cmd: &str) -> Value {
    let (status, body) = client.post_migration(cmd).await;
    assert_eq!(status, 200, "{cmd} was not accepted: {body}");
    assert_ne!(
        body["status"], "migration_running",
        "the api's blocking wait for the {cmd} job did not see it finish: {body}"
    );
    body
}

/// What the route flow observed; two runs of the same seed must be equal.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowResult {
    /// `stats` after `migrate`.
    pub stats_after_migrate: Value,
    /// `get_all motion` after `migrate` (still the live, unmigrated data).
    pub models_after_migrate: Value,
    /// `stats` after `finalize`.
    pub stats_after_finalize: Value,
    /// `get_all motion` after `finalize`.
    pub models_after_finalize: Value,
}

/// Asserts the states and reads of SPEC 6.1 at every step and returns them.
pub fn assert_flow(result: &FlowResult, positions: u64) {
    // An update position stores an update and a deletefields (`legacy`)
    // event; the migration removes `legacy`, so that deletefields becomes
    // empty and is dropped.
    let updates = (1..=positions).filter(|p| updates_previous(*p)).count() as u64;
    assert_eq!(
        result.stats_after_migrate,
        json!({"status": "finalization_required", "current_migration_index": 1,
               "target_migration_index": FLOW_TARGET_MI, "positions": positions,
               "events": positions + updates, "partially_migrated_positions": 0,
               "fully_migrated_positions": positions}),
    );
    assert_eq!(
        result.models_after_migrate,
        expected_models(positions, false),
        "migrate changed what readers see"
    );
    assert_eq!(
        result.stats_after_finalize,
        json!({"status": "no_migration_required",
               "current_migration_index": FLOW_TARGET_MI,
               "target_migration_index": FLOW_TARGET_MI, "positions": positions,
               "events": positions, "partially_migrated_positions": 0,
               // finalize removed the migration data
               "fully_migrated_positions": 0}),
    );
    assert_eq!(
        result.models_after_finalize,
        expected_models(positions, true)
    );
}

/// The route flow: seed `positions`, `migrate`, read, `finalize`, read.
/// Checks that each command answers its final result (the deployment's
/// `MIGRATION_WAIT_MS` must be long, as [`COMMAND_WAIT_MS`]) without
/// exception, then the states and reads ([`assert_flow`]).
pub async fn route_flow(client: &ApiClient, positions: u64) -> FlowResult {
    seed(client, positions).await;
    assert_eq!(motions(client).await, expected_models(positions, false));
    let stats = client.stats().await;
    assert_eq!(stats["status"], "migration_required", "{stats}");
    let answer = answer_after_waiting(client, "migrate").await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    assert!(answer.get("exception").is_none(), "{answer}");
    let stats_after_migrate = client.stats().await;
    let models_after_migrate = motions(client).await;
    let answer = answer_after_waiting(client, "finalize").await;
    assert_eq!(answer["status"], "no_migration_required", "{answer}");
    assert!(answer.get("exception").is_none(), "{answer}");
    let result = FlowResult {
        stats_after_migrate,
        models_after_migrate,
        stats_after_finalize: client.stats().await,
        models_after_finalize: motions(client).await,
    };
    assert_flow(&result, positions);
    result
}

/// The number of output lines in a `progress` answer.
fn output_lines(body: &Value) -> usize {
    body["output"]
        .as_str()
        .map_or(0, |output| output.lines().count())
}

/// The highest `<done>` of the output's `Migrated <done> of ...` lines.
fn migrated_so_far(body: &Value) -> u64 {
    body["output"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            line.strip_prefix("Migrated ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// A command run with a fault in the middle.
#[derive(Debug)]
pub struct Disturbed {
    /// The command's final `progress` answer.
    pub answer: Value,
    /// From the fault to the job's next output line (what an operator
    /// polling `progress` waits): the failover time the tests report.
    pub fault_to_next_line: Duration,
    /// `progress` polls after the fault that did not answer `200`.
    pub failed_polls: usize,
}

/// Posts `cmd`, waits until a progress line of its output counts at least
/// `fault_at` migrated positions (the job is in the middle of its work), calls
/// `fault` (e.g. `kill -9` of the Redis primary), then polls `progress`
/// until the job has finished. Polls that fail while Redis fails over are
/// counted, not fatal: the answer that counts is the final one.
pub async fn run_with_fault(
    client: &ApiClient,
    cmd: &str,
    fault_at: u64,
    fault: impl FnOnce(),
) -> Disturbed {
    let (status, body) = client.post_migration(cmd).await;
    assert_eq!(status, 200, "{cmd} was not accepted: {body}");
    // Only `progress` is allowed while the job runs: its progress lines
    // (`Migrated <done> of <total> positions ...`) say how far it is.
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (status, body) = client.progress().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["status"], "migration_running",
            "{cmd} ended before the fault: {body}"
        );
        if migrated_so_far(&body) >= fault_at {
            break body;
        }
        assert!(Instant::now() < deadline, "{cmd} made no progress: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines_at_fault = output_lines(&body);
    fault();
    let faulted = Instant::now();
    let mut fault_to_next_line = None;
    let mut failed_polls = 0;
    let deadline = faulted + Duration::from_secs(180);
    loop {
        let (status, body) = client.progress().await;
        if status == 200 {
            if fault_to_next_line.is_none() && output_lines(&body) > lines_at_fault {
                fault_to_next_line = Some(faulted.elapsed());
            }
            if body["status"] != "migration_running" {
                return Disturbed {
                    answer: body,
                    fault_to_next_line: fault_to_next_line.unwrap_or_else(|| faulted.elapsed()),
                    failed_polls,
                };
            }
            assert!(
                Instant::now() < deadline,
                "{cmd} still running 180 s after the fault: {body}"
            );
        } else {
            failed_polls += 1;
            assert!(
                Instant::now() < deadline,
                "progress still failing 180 s after the fault: {status} {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
